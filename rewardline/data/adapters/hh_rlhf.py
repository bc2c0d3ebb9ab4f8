r"""Anthropic hh-rlhf: ``{"chosen": dialogue, "rejected": dialogue}`` -> a K=2 ranking.

Both dialogues are whole transcripts (``\n\nHuman: ... \n\nAssistant: ...``) that differ
only in the last Assistant turn. prompt = the shared prefix through the last
``\n\nAssistant:``; the two final turns are the responses: chosen -> rank 1,
rejected -> rank 2. prompt_messages = the Human/Assistant turns of the prompt
(roles user/assistant; null for a single Human turn).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data.adapters.jsonl import Records
from rewardline.data.adapters.native import combined, list_from_parents
from rewardline.data.schema import MESSAGE

ASSISTANT = "\n\nAssistant:"
ANNOTATOR = "hh-rlhf-crowdworker"
SEP = "\x1e"  # ASCII record separator: marks turn boundaries before splitting

SCHEMA = pa.schema(
    [
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("annotator_id", pa.string()),
        ("category", pa.string()),
    ]
)
FLEXIBLE = ("annotator_id",)


def split_last_turn(dialogue: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(prefix before the last ``\\n\\nAssistant:``, the final turn's text, has-such-a-turn mask)."""
    parts = pc.split_pattern(dialogue, ASSISTANT, max_splits=1, reverse=True)
    found = pc.fill_null(pc.equal(pc.list_value_length(parts), 2), False)
    padded = pc.if_else(found, parts, pa.scalar(["", ""], parts.type))
    return pc.list_element(padded, 0), pc.utf8_trim_whitespace(pc.list_element(padded, 1)), found


def parse_turns(prefix: pa.Array) -> pa.Array:
    """Message lists from ``\\n\\nHuman: ...\\n\\nAssistant: ...`` transcripts (null if a single turn)."""
    marked = pc.replace_substring(prefix, "\n\nHuman:", SEP + "Human:")
    marked = pc.replace_substring(marked, ASSISTANT, SEP + "Assistant:")
    turns = pc.split_pattern(marked, SEP)
    parents = np.asarray(pc.list_parent_indices(turns))
    flat = pc.list_flatten(turns)
    keep = np.asarray(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(flat)), 0))
    flat, parents = flat.filter(pa.array(keep)), parents[keep]
    role = pc.if_else(pc.starts_with(flat, "Assistant:"), "assistant", "user")
    content = pc.utf8_trim_whitespace(pc.replace_substring_regex(flat, r"^(Human|Assistant):", "", max_replacements=1))
    messages = pa.StructArray.from_arrays([role, content], fields=list(MESSAGE))
    single = np.bincount(parents, minlength=len(prefix)) <= 1
    return list_from_parents(messages, parents, len(prefix), null_mask=single)


def to_ranked(records: Records) -> tuple[pa.Table, Records]:
    """Two ranked rows (chosen rank 1, rejected rank 2) per well-formed record."""
    t = records.table
    chosen, rejected = combined(t, "chosen"), combined(t, "rejected")
    prefix_c, _, found_c = split_last_turn(chosen)
    prefix_r, _, found_r = split_last_turn(rejected)
    records = records.reject_many(
        [
            (pc.is_null(chosen), "chosen", "missing required field 'chosen'"),
            (pc.is_null(rejected), "rejected", "missing required field 'rejected'"),
            (pc.invert(found_c), "chosen", "chosen: no '\\n\\nAssistant:' turn to take the response from"),
            (pc.invert(found_r), "rejected", "rejected: no '\\n\\nAssistant:' turn to take the response from"),
            (
                pc.not_equal(prefix_c, prefix_r),
                "rejected",
                "chosen and rejected do not share a prompt through the last '\\n\\nAssistant:'",
            ),
        ]
    )
    t = records.table
    prefix, response_c, _ = split_last_turn(combined(t, "chosen"))
    _, response_r, _ = split_last_turn(combined(t, "rejected"))
    n = t.num_rows
    rec = np.repeat(np.arange(n), 2)  # record of each output row: chosen, rejected, chosen, ...
    pick = np.arange(2 * n) % 2 * n + rec  # index into concat([chosen, rejected])
    annotator = pc.coalesce(combined(t, "annotator_id"), ANNOTATOR)
    ranked = pa.table(
        {
            "prompt": pc.take(pc.binary_join_element_wise(prefix, ASSISTANT, ""), rec),
            "prompt_messages": pc.take(parse_turns(prefix), rec),
            "category": pc.take(combined(t, "category"), rec),
            "annotator_id": pc.take(annotator, rec),
            "response": pc.take(pa.concat_arrays([response_c, response_r]), pick),
            "rank": pa.array(np.tile(np.array([1, 2], np.int32), n)),
            "origin_line": pa.array(records.line[rec]),
        }
    )
    return ranked, records
