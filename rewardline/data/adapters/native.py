"""The native ``rankings`` format, in its nested and long shapes, plus shared helpers.

Nested (JSONL/Parquet), one record = one ranking::

    {prompt_id?, prompt | messages: [{role, content}], category?, annotator_id, batch_id?,
     responses: [{response_id?, text, source?, rank, score?}]}

Long (CSV, also JSONL/Parquet), one record = one ranked response; records with the same
(prompt_id or prompt, annotator_id) form one ranking::

    prompt_id?, prompt, category?, annotator_id, response_id?, response, source?, rank, score?

Rank 1 = best; tied responses share a rank. Missing ids stay null (the canonical step
derives them from hashes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data import schema as S
from rewardline.data.adapters.jsonl import Records
from rewardline.data.messages import MESSAGE_ROLES, ROLE_LABELS

INT32_MAX = 2**31 - 1

# ------------------------------------------------------------------ shared helpers


def combined(table: pa.Table, name: str) -> pa.Array:
    """Column ``name`` as one contiguous array."""
    col = table.column(name)
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def require(records: Records, names: list[str]) -> Records:
    """Quarantine records where any of ``names`` is null or missing."""
    for name in names:
        records = records.reject(pc.is_null(combined(records.table, name)), name, f"missing required field '{name}'")
    return records


def offsets_of(lists: pa.Array) -> np.ndarray:
    """Fresh 0-based int32 offsets of a list array (null lists count as empty)."""
    lengths = np.asarray(pc.fill_null(pc.list_value_length(lists), 0), dtype=np.int64)
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


def list_from_parents(values: pa.Array, parents: np.ndarray, n: int, null_mask: np.ndarray | None = None) -> pa.Array:
    """List array of length n whose list i holds the ``values`` with parent i (parents sorted)."""
    counts = np.bincount(parents, minlength=n) if len(parents) else np.zeros(n, np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    mask = None if null_mask is None else pa.array(null_mask)
    return pa.ListArray.from_arrays(offsets, values, type=pa.list_(values.type), mask=mask)


def items_fault(lists: pa.Array, item_mask: pa.Array | np.ndarray) -> np.ndarray:
    """Per-list mask: some item of the list has ``item_mask`` set."""
    parents = np.asarray(pc.list_parent_indices(lists))
    item_mask = np.asarray(pc.fill_null(item_mask, True) if isinstance(item_mask, pa.Array) else item_mask)
    out = np.zeros(len(lists), bool)
    out[parents[item_mask]] = True
    return out


#: The message roles that chat templates know; the adapters compare roles case-blind ("Assistant" is one).
ROLES = MESSAGE_ROLES


def render(messages: pa.Array) -> pa.Array:
    r"""Transcript of each message list, hh-rlhf style, ending with the turn to answer (one list in plain Python:
    :func:`rewardline.data.messages.render_one`).

    ``[{user, a}, {assistant, b}, {user, c}]`` -> ``"\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:"``
    """
    flat = pc.list_flatten(messages)
    roles = pc.utf8_lower(flat.field("role"))
    keys = pa.array(list(ROLE_LABELS))
    labels = pc.take(pa.array(list(ROLE_LABELS.values())), pc.index_in(roles, value_set=keys))
    labels = pc.if_else(pc.is_null(labels), pc.utf8_capitalize(roles), labels)
    pieces = pc.binary_join_element_wise("\n\n", labels, ": ", flat.field("content"), "")
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets_of(messages)), pieces), "")
    return pc.binary_join_element_wise(joined, "\n\nAssistant:", "")


def prompt_columns(prompt: pa.Array, messages: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(prompt text, prompt_messages): text defaults to the rendered messages, or to the only
    user message of a single-turn prompt; prompt_messages is null for single-turn prompts."""
    length = pc.fill_null(pc.list_value_length(messages), 0)
    first = pc.list_element(pc.if_else(pc.greater(length, 0), messages, pa.scalar(None, messages.type)), 0)
    single = pc.and_(pc.equal(length, 1), pc.equal(pc.utf8_lower(first.field("role")), "user"))
    single = pc.fill_null(single, False)
    text = pc.if_else(single, first.field("content"), render(messages))
    text = pc.if_else(pc.greater(length, 0), text, pa.scalar(None, pa.string()))
    prompt = pc.coalesce(prompt, text)
    kept = pc.if_else(pc.or_(single, pc.equal(length, 0)), pa.scalar(None, messages.type), lower_roles(messages))
    return prompt, kept


def lower_roles(messages: pa.Array) -> pa.Array:
    """``messages`` with each role in lower case: roles are read case-blind, chat templates compare them exactly
    (``message['role'] == 'user'``)."""
    flat = pc.list_flatten(messages)
    if not len(flat):
        return messages
    parts = [pc.utf8_lower(flat.field(f.name)) if f.name == "role" else flat.field(f.name) for f in flat.type]
    lowered = pa.StructArray.from_arrays(parts, fields=list(flat.type))
    return pa.ListArray.from_arrays(pa.array(offsets_of(messages)), lowered, type=messages.type,
                                    mask=pc.is_null(messages))


def unknown_roles(messages: pa.Array, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(mask of message lists holding a role outside :data:`ROLES`, the reason per list, naming its first such
    message: ``"messages[2].role: expected one of assistant, system, user, got 'robot'"``). Null roles pass."""
    flat = pc.list_flatten(messages)
    known = pc.is_in(pc.utf8_lower(flat.field("role")), value_set=pa.array(ROLES))
    bad = np.flatnonzero(~np.asarray(pc.fill_null(known, True), dtype=bool))
    mask, reasons = np.zeros(len(messages), bool), np.full(len(messages), None, dtype=object)
    if not len(bad):
        return mask, reasons
    parents = np.asarray(pc.list_parent_indices(messages))[bad]
    lists, first = np.unique(parents, return_index=True)  # each list's first message with an unknown role
    items = bad[first]
    roles = flat.field("role").take(pa.array(items)).to_pylist()
    positions = items - offsets_of(messages)[lists]
    mask[lists] = True
    reasons[lists] = [f"{name}[{i}].role: expected one of {', '.join(ROLES)}, got {role[:60]!r}"
                      for i, role in zip(positions, roles, strict=True)]
    return mask, reasons


def check_messages(records: Records, name: str = "messages") -> Records:
    """Quarantine records whose message list has a null item, role or content, or a role that is not one of
    :data:`ROLES`."""
    msgs = combined(records.table, name)
    flat = pc.list_flatten(msgs)
    for part in ("role", "content"):
        bad_items = pc.or_(pc.is_null(flat), pc.is_null(flat.field(part)))
        records = records.reject(items_fault(msgs, bad_items), f"{name}.{part}", f"missing '{part}' in {name}")
        msgs = combined(records.table, name)
        flat = pc.list_flatten(msgs)
    unknown, reasons = unknown_roles(msgs, name)
    return records.reject(unknown, f"{name}.role", reasons)


# ------------------------------------------------------------------ the two shapes

MESSAGES = pa.list_(S.MESSAGE)
RESPONSE = pa.struct(
    [
        ("response_id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("rank", pa.int64()),
        ("score", pa.float64()),
    ]
)
_COMMON = [
    ("prompt_id", pa.string()),
    ("prompt", pa.string()),
    ("messages", MESSAGES),
    ("category", pa.string()),
    ("annotator_id", pa.string()),
    ("batch_id", pa.string()),
]
NESTED_SCHEMA = pa.schema([*_COMMON, ("responses", pa.list_(RESPONSE))])
LONG_SCHEMA = pa.schema(
    [
        *_COMMON,
        ("response_id", pa.string()),
        ("response", pa.string()),
        ("source", pa.string()),
        ("rank", pa.int64()),
        ("score", pa.float64()),
    ]
)


def _ends_with_assistant(messages: pa.Array) -> np.ndarray:
    """Mask of message lists whose last turn is the assistant's (no user turn left for the responses to answer)."""
    ends = np.asarray(messages.offsets)[1:] - 1
    has = np.asarray(pc.fill_null(pc.greater(pc.list_value_length(messages), 0), False), dtype=bool)
    if not has.any():
        return has
    roles = pc.utf8_lower(messages.values.field("role")).take(pa.array(np.where(has, ends, 0)))
    return has & np.asarray(pc.fill_null(pc.equal(roles, "assistant"), False), dtype=bool)


def _prompt_checks(records: Records) -> Records:
    records = require(records, ["annotator_id"])
    t = records.table
    n_messages = pc.fill_null(pc.list_value_length(combined(t, "messages")), 0)
    no_prompt = pc.and_(pc.is_null(combined(t, "prompt")), pc.equal(n_messages, 0))
    records = records.reject(no_prompt, "prompt", "missing required field 'prompt' (or a non-empty 'messages')")
    records = check_messages(records)
    return records.reject(_ends_with_assistant(combined(records.table, "messages")), "messages",
                          "messages: the last turn is the assistant's; expected the user's turn that the responses "
                          "answer")


def nested_to_ranked(records: Records) -> tuple[pa.Table, Records]:
    """One record = one ranking: explode ``responses`` into ranked rows."""
    records = _prompt_checks(records)
    responses = combined(records.table, "responses")
    records = records.reject(pc.is_null(responses), "responses", "missing required field 'responses'")
    empty = pc.equal(pc.list_value_length(combined(records.table, "responses")), 0)
    records = records.reject(empty, "responses", "responses: expected a non-empty list")
    for part in ("text", "rank"):
        responses = combined(records.table, "responses")
        flat = pc.list_flatten(responses)
        bad = pc.or_(pc.is_null(flat), pc.is_null(flat.field(part)))
        records = records.reject(items_fault(responses, bad), f"responses.{part}", f"missing '{part}' in responses")
    responses = combined(records.table, "responses")
    too_big = pc.fill_null(pc.greater(pc.abs(pc.list_flatten(responses).field("rank")), INT32_MAX), False)
    records = records.reject(
        items_fault(responses, too_big), "responses.rank", "responses.rank: expected an integer within int32 range"
    )
    responses = combined(records.table, "responses")
    bad_score = S.bad_scores(pc.list_flatten(responses).field("score"))
    records = records.reject(
        items_fault(responses, bad_score), "responses.score", f"responses.score: {S.SCORE_EXPECTED}"
    )

    t = records.table
    responses = combined(t, "responses")
    parents = pc.list_parent_indices(responses)
    flat = pc.list_flatten(responses)
    prompt, messages = prompt_columns(combined(t, "prompt"), combined(t, "messages"))
    ranked = pa.table(
        {
            "prompt_id": pc.take(combined(t, "prompt_id"), parents),
            "prompt": pc.take(prompt, parents),
            "prompt_messages": pc.take(messages, parents),
            "category": pc.take(combined(t, "category"), parents),
            "annotator_id": pc.take(combined(t, "annotator_id"), parents),
            "response_id": flat.field("response_id"),
            "response": flat.field("text"),
            "source": flat.field("source"),
            "rank": flat.field("rank").cast(pa.int32()),
            "score": flat.field("score"),
            "batch_id": pc.take(combined(t, "batch_id"), parents),
            "origin_line": pa.array(records.line[np.asarray(parents)]),
        }
    )
    return ranked, records


def long_to_ranked(records: Records) -> tuple[pa.Table, Records]:
    """One record = one ranked response; rankings form by (prompt, annotator) downstream."""
    records = _prompt_checks(records)
    records = require(records, ["response", "rank"])
    rank = combined(records.table, "rank")
    records = records.reject(
        pc.fill_null(pc.greater(pc.abs(rank), INT32_MAX), False), "rank", "rank: expected an integer within int32 range"
    )
    records = records.reject(S.bad_scores(combined(records.table, "score")), "score", f"score: {S.SCORE_EXPECTED}")
    t = records.table
    prompt, messages = prompt_columns(combined(t, "prompt"), combined(t, "messages"))
    ranked = t.drop_columns(["prompt", "messages"]).append_column("prompt", prompt)
    ranked = ranked.append_column("prompt_messages", messages).append_column("origin_line", pa.array(records.line))
    ranked = ranked.set_column(ranked.schema.get_field_index("rank"), "rank", ranked.column("rank").cast(pa.int32()))
    return ranked, records


class Shape(NamedTuple):
    """An input shape: its input schema, its id fields (dotted paths; a string or an integer in any record, read
    as the string: :mod:`rewardline.data.adapters.ids`), and its adapter."""

    SCHEMA: pa.Schema
    FLEXIBLE: tuple[str, ...]
    to_ranked: Callable[[Records], tuple[pa.Table, Records]]


NESTED = Shape(NESTED_SCHEMA, ("prompt_id", "annotator_id", "batch_id", "responses.response_id"), nested_to_ranked)
LONG = Shape(LONG_SCHEMA, ("prompt_id", "annotator_id", "batch_id", "response_id"), long_to_ranked)
