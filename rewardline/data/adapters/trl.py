r"""TRL preference datasets (the shapes ``trl.RewardTrainer`` / ``DPOTrainer`` read) -> one K=2 ranking per row.

The four shapes (TRL docs, "Dataset formats": preference type, standard or conversational,
explicit or implicit prompt), with an optional ``margin`` column (RewardTrainer adds it to
the Bradley-Terry logit)::

    standard, explicit         {"prompt": str, "chosen": str, "rejected": str}
    standard, implicit         {"chosen": str, "rejected": str}             (prompt inside both)
    conversational, explicit   {"prompt": [{role, content}...], "chosen": [{"role": "assistant", ...}],
                                "rejected": [{"role": "assistant", ...}]}
    conversational, implicit   {"chosen": [messages...], "rejected": [messages...]}

Chosen -> rank 1, rejected -> rank 2. Prompt of an implicit row:

* conversational: the messages before the last assistant turn, which must be equal in both;
  the responses are those last assistant turns (as in the ``pairwise`` adapter);
* standard, both texts hh-style transcripts sharing the prefix through the last
  ``\n\nAssistant:``: that prefix (as in the ``hh-rlhf`` adapter);
* standard otherwise: TRL's ``extract_prompt`` rule, the longest common prefix of the two
  texts, cut back to the last whitespace inside it so that no word is split between the
  prompt and the responses.

An explicit conversational completion must be one assistant message. A string prompt that is
an hh-style transcript (``\n\nHuman: ... \n\nAssistant:``) gets its turns as prompt_messages.
``margin`` m becomes score(chosen) = m, score(rejected) = 0, so ``pairs.margin: score`` gives
the pair the margin |m|. Optional ``category``, ``annotator_id`` and ``prompt_id`` columns are kept (a given
``prompt_id``, a string or an integer, names the prompt as the native format's does: ``export-pairs`` writes
it, so that a re-ingested export keeps its prompts' ids and thus their splits).

A TRL row is one judgement by an unnamed rater, so each row is its own ranking: without an
``annotator_id`` the row's annotator is ``trl:<file name>:<origin_line>``. Rows that repeat
a prompt (one chosen against several rejected, or the export of a K-way ranking) then stay
separate comparisons and aggregate as votes in the pairs stage, instead of merging into a
ranking nobody made.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data import schema as S
from rewardline.data.adapters.hh_rlhf import ASSISTANT, parse_turns, split_last_turn
from rewardline.data.adapters.jsonl import Records
from rewardline.data.adapters.native import MESSAGES, Shape, check_messages, combined, prompt_columns
from rewardline.data.adapters.pairwise import split_conversation

SIDES = ("chosen", "rejected")
FLEXIBLE = ("annotator_id", "prompt_id")


def schema_for(prompt_is_list: bool, responses_are_lists: bool) -> pa.Schema:
    """Input schema of a file whose first record has a message-list prompt / message-list responses."""
    response = MESSAGES if responses_are_lists else pa.string()
    return pa.schema(
        [
            ("prompt", MESSAGES if prompt_is_list else pa.string()),
            ("chosen", response),
            ("rejected", response),
            ("margin", pa.float64()),
            ("category", pa.string()),
            ("annotator_id", pa.string()),
            ("prompt_id", pa.string()),
        ]
    )


def shape(list_fields: dict[str, bool]) -> Shape:
    """The Shape for a file whose fields ``prompt`` / ``chosen`` are (True) or are not message lists."""
    return Shape(schema_for(list_fields.get("prompt", False), list_fields.get("chosen", False)), FLEXIBLE, to_ranked)


def common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search over C-speed slice comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def split_shared_prefix(chosen: list[str], rejected: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(prompt, chosen response, rejected response) by TRL's common-prefix rule, cut at a word boundary.

    k = common prefix length; when the texts differ at k and c[k-1] is not whitespace, k moves back
    to just after the last whitespace in c[:k] (0 if none). Python per row: only rows without an
    hh-style ``\\n\\nAssistant:`` turn take this path.
    """
    prompts, responses_c, responses_r = [], [], []
    for c, r in zip(chosen, rejected, strict=True):
        k = common_prefix_length(c, r)
        if 0 < k < min(len(c), len(r)) and not c[k - 1].isspace():
            k = max(c.rfind(ws, 0, k) for ws in (" ", "\n", "\t")) + 1
        prompts.append(c[:k])
        responses_c.append(c[k:])
        responses_r.append(r[k:])
    return prompts, responses_c, responses_r


def _standard(t: pa.Table) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """(prompt text, prompt_messages, chosen response, rejected response) of string rows (all valid)."""
    chosen, rejected, given = combined(t, "chosen"), combined(t, "rejected"), combined(t, "prompt")
    prefix_c, response_c, found_c = split_last_turn(chosen)
    prefix_r, response_r, found_r = split_last_turn(rejected)
    hh = np.asarray(pc.fill_null(pc.and_(pc.and_(found_c, found_r), pc.equal(prefix_c, prefix_r)), False))
    hh &= np.asarray(pc.is_null(given))
    split = pa.array(hh, pa.bool_())
    prompt = pc.coalesce(given, pc.if_else(split, pc.binary_join_element_wise(prefix_c, ASSISTANT, ""),
                                           pa.scalar(None, pa.string())))
    response_c = pc.if_else(split, response_c, chosen)
    response_r = pc.if_else(split, response_r, rejected)
    implicit = np.flatnonzero(np.asarray(pc.is_null(given)) & ~hh)
    if implicit.size:  # TRL's common-prefix rule for the rest of the implicit rows
        rows = pa.array(implicit)
        p, c, r = split_shared_prefix(chosen.take(rows).to_pylist(), rejected.take(rows).to_pylist())
        prompt, response_c, response_r = (
            _put(column, implicit, values) for column, values in ((prompt, p), (response_c, c), (response_r, r))
        )
    # A transcript prompt "\n\nHuman: ...\n\nAssistant:" carries its turns (null for a single turn).
    transcript = pc.fill_null(pc.and_(pc.starts_with(prompt, "\n\nHuman:"), pc.ends_with(prompt, ASSISTANT)), False)
    body = pc.utf8_slice_codeunits(prompt, 0, -len(ASSISTANT))
    messages = parse_turns(pc.if_else(transcript, body, ""))
    messages = pc.if_else(transcript, messages, pa.scalar(None, messages.type))
    return prompt, messages, response_c, response_r


def _put(column: pa.Array, rows: np.ndarray, values: list[str]) -> pa.Array:
    """``column`` with ``values`` at ``rows``."""
    out = np.asarray(column.to_pylist(), dtype=object)
    out[rows] = values
    return pa.array(out.tolist(), pa.string())


def _conversational_checks(records: Records) -> Records:
    """Null items/roles/contents; explicit completions must be one assistant message; implicit rows
    need an assistant turn in each side and the same messages before it."""
    for name in SIDES:
        records = check_messages(records, name)
    if pa.types.is_list(records.table.schema.field("prompt").type):
        records = check_messages(records, "prompt")
    t = records.table
    explicit = np.asarray(pc.is_valid(combined(t, "prompt")))
    checks = []
    for name in SIDES:
        side = combined(t, name)
        length = np.asarray(pc.fill_null(pc.list_value_length(side), 0))
        first = pc.list_element(pc.if_else(pa.array(length > 0, pa.bool_()), side, pa.scalar(None, side.type)), 0)
        single_assistant = (length == 1) & np.asarray(pc.fill_null(
            pc.equal(pc.utf8_lower(first.field("role")), "assistant"), False))
        checks.append((explicit & ~single_assistant, name,
                       f"{name}: expected one assistant message when a prompt is given (multi-message "
                       "completions are not supported)"))
    msgs_c, _, found_c = split_conversation(combined(t, "chosen"))
    msgs_r, _, found_r = split_conversation(combined(t, "rejected"))
    prompt_c, _ = prompt_columns(pa.nulls(len(t), pa.string()), msgs_c)
    prompt_r, _ = prompt_columns(pa.nulls(len(t), pa.string()), msgs_r)
    checks += [
        (~explicit & ~found_c, "chosen", "chosen: no assistant turn"),
        (~explicit & ~found_r, "rejected", "rejected: no assistant turn"),
        (~explicit & np.asarray(pc.fill_null(pc.not_equal(prompt_c, prompt_r), True)), "rejected",
         "chosen and rejected do not share the messages before the last assistant turn"),
    ]
    return records.reject_many(checks)


def _conversational(t: pa.Table) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """(prompt text, prompt_messages, chosen response, rejected response) of message-list rows."""
    msgs_c, response_c, _ = split_conversation(combined(t, "chosen"))
    _, response_r, _ = split_conversation(combined(t, "rejected"))
    given = combined(t, "prompt")
    if pa.types.is_list(given.type):  # explicit rows: the prompt's messages; implicit: those before the turn
        messages = pc.if_else(pc.is_valid(given), given, msgs_c)
        prompt, messages = prompt_columns(pa.nulls(len(t), pa.string()), messages)
    else:  # a string prompt with message-list completions
        prompt, messages = prompt_columns(given, msgs_c)
        messages = pc.if_else(pc.is_valid(given), pa.scalar(None, messages.type), messages)
    return prompt, messages, response_c, response_r


def to_ranked(records: Records) -> tuple[pa.Table, Records]:
    """Two ranked rows (chosen rank 1, rejected rank 2) per well-formed row."""
    t = records.table
    records = records.reject_many(
        [(pc.is_null(combined(t, name)), name, f"missing required field '{name}'") for name in SIDES]
        + [(S.bad_scores(combined(t, "margin")), "margin", f"margin: {S.SCORE_EXPECTED}")]
    )
    conversational = pa.types.is_list(records.table.schema.field("chosen").type)
    if conversational:
        records = _conversational_checks(records)
    t = records.table
    prompt, messages, response_c, response_r = (_conversational if conversational else _standard)(t)
    checks = [(np.asarray(pc.fill_null(pc.equal(response_c, response_r), False)), "rejected",
               "rejected: the same response as chosen; expected two different responses")]
    checks += [(S.blank(response), side, f"{side}: empty response text; expected a non-empty string")
               for side, response in (("chosen", response_c), ("rejected", response_r))]
    if any(mask.any() for mask, _, _ in checks):  # failure path: say which side, and split the rest again
        records = records.reject_many(checks)
        t = records.table
        prompt, messages, response_c, response_r = (_conversational if conversational else _standard)(t)
    n = t.num_rows
    rec = np.repeat(np.arange(n), 2)  # record of each output row: chosen, rejected, chosen, ...
    pick = np.arange(2 * n) % 2 * n + rec  # index into concat([chosen side, rejected side])
    margin = combined(t, "margin")
    zero = pc.if_else(pc.is_valid(margin), pa.scalar(0.0), pa.scalar(None, pa.float64()))
    name = records.origin_file.rstrip("/").rsplit("/", 1)[-1]
    default_annotator = pc.binary_join_element_wise(f"trl:{name}", pa.array(records.line.astype(str)), ":")
    annotator = pc.coalesce(combined(t, "annotator_id"), default_annotator)
    ranked = pa.table(
        {
            "prompt_id": pc.take(combined(t, "prompt_id"), rec),
            "prompt": pc.take(prompt, rec),
            "prompt_messages": pc.take(messages, rec),
            "category": pc.take(combined(t, "category"), rec),
            "annotator_id": pc.take(annotator, rec),
            "response": pc.take(pa.concat_arrays([_plain(response_c), _plain(response_r)]), pick),
            "rank": pa.array(np.tile(np.array([1, 2], np.int32), n)),
            "score": pc.take(pa.concat_arrays([_plain(margin), _plain(zero)]), pick),
            "origin_line": pa.array(records.line[rec]),
        }
    )
    return ranked, records


def _plain(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
