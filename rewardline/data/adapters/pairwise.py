"""Arena-style pairwise judgements -> one K=2 ranking per record.

Fields: ``model_a``, ``model_b``, ``winner`` in {model_a, model_b, tie, tie (bothbad)},
and either ``prompt`` + ``response_a`` + ``response_b`` or lmsys-arena
``conversation_a`` / ``conversation_b`` message lists (prompt = the messages before the
last assistant turn, response = that turn). ``question_id`` -> prompt_id,
``annotator_id`` or ``judge`` -> annotator_id. The winner gets rank 1, the loser rank 2;
a tie ranks both 1. Response source = model name.

A pairwise judgement is not a ranking of everything the judge saw for the prompt: each record is
its own K = 2 ranking, ``ranking_key`` = an order-free hash of its two response texts (ranking id
``<prompt>|<judge>|pair-<hash>``), so several battles of one (prompt, judge) over different pairs
are kept, and only a repeat of the same pair by the same judge is a duplicate.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data.adapters.jsonl import Records
from rewardline.data.adapters.native import (
    MESSAGES,
    combined,
    items_fault,
    list_from_parents,
    prompt_columns,
    unknown_roles,
)
from rewardline.data.hashing import combine, hash64, hex_from_hashes

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")

SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("model_a", pa.string()),
        ("model_b", pa.string()),
        ("winner", pa.string()),
        ("prompt", pa.string()),
        ("response_a", pa.string()),
        ("response_b", pa.string()),
        ("conversation_a", MESSAGES),
        ("conversation_b", MESSAGES),
        ("judge", pa.string()),
        ("annotator_id", pa.string()),
        ("category", pa.string()),
    ]
)
FLEXIBLE = ("question_id", "judge", "annotator_id")


def split_conversation(conversation: pa.Array) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """(messages before the last assistant turn, that turn's content, has-an-assistant-turn mask)."""
    n = len(conversation)
    flat = pc.list_flatten(conversation)
    parents = np.asarray(pc.list_parent_indices(conversation), dtype=np.int64)
    pos = np.arange(len(flat))
    assistant = np.asarray(pc.fill_null(pc.equal(pc.utf8_lower(flat.field("role")), "assistant"), False))
    last = np.full(n, -1, np.int64)
    np.maximum.at(last, parents[assistant], pos[assistant])
    found = last >= 0
    response = (
        pc.take(flat.field("content"), pa.array(np.where(found, last, 0), mask=~found))
        if len(flat)
        else (pa.nulls(n, pa.string()))
    )
    before = pos < last[parents]
    prompt_messages = list_from_parents(flat.filter(pa.array(before)), parents[before], n)
    return prompt_messages, response, found


def _winner_reasons(winner: pa.Array) -> np.ndarray:
    """Per record, the reason of a ``winner`` outside :data:`WINNERS`, with the value found (None elsewhere: a
    null winner is a missing field, named by that check)."""
    reasons = np.full(len(winner), None, dtype=object)
    outside = pc.and_(pc.is_valid(winner), pc.invert(pc.is_in(winner, pa.array(WINNERS))))
    bad = np.flatnonzero(np.asarray(outside, bool))
    values = pc.take(winner, pa.array(bad, pa.int64())).to_pylist()
    reasons[bad] = [f"winner: expected one of {WINNERS}, got {value[:60]!r}" for value in values]
    return reasons


def to_ranked(records: Records) -> tuple[pa.Table, Records]:
    """Two ranked rows per well-formed record (winner rank 1; a tie ranks both 1)."""
    t = records.table
    conv_a, conv_b = combined(t, "conversation_a"), combined(t, "conversation_b")
    has_conv = np.asarray(pc.or_(pc.is_valid(conv_a), pc.is_valid(conv_b)))
    msgs_a, resp_a, found_a = split_conversation(conv_a)
    msgs_b, resp_b, found_b = split_conversation(conv_b)
    prompt_a, _ = prompt_columns(pa.nulls(len(t), pa.string()), msgs_a)
    prompt_b, _ = prompt_columns(pa.nulls(len(t), pa.string()), msgs_b)
    annotator = pc.coalesce(combined(t, "annotator_id"), combined(t, "judge"))

    def missing(name: str, where: np.ndarray) -> tuple[np.ndarray, str, str]:
        return where & np.asarray(pc.is_null(combined(t, name))), name, f"missing required field '{name}'"

    checks = [missing(name, np.ones(len(t), bool)) for name in ("model_a", "model_b", "winner")]
    winner = combined(t, "winner")
    checks += [
        (pc.invert(pc.is_in(winner, pa.array(WINNERS))), "winner", _winner_reasons(winner)),
        (pc.is_null(annotator), "judge", "missing required field 'judge' (or 'annotator_id')"),
    ]
    checks += [missing(name, ~has_conv) for name in ("prompt", "response_a", "response_b")]
    for side, conv in (("a", conv_a), ("b", conv_b)):
        flat = pc.list_flatten(conv)
        for part in ("role", "content"):
            bad = items_fault(conv, pc.or_(pc.is_null(flat), pc.is_null(flat.field(part))))
            checks.append((bad, f"conversation_{side}.{part}", f"missing '{part}' in conversation_{side}"))
        unknown, reasons = unknown_roles(conv, f"conversation_{side}")
        checks.append((unknown, f"conversation_{side}.role", reasons))
    checks += [
        (has_conv & np.asarray(pc.is_null(conv_a)), "conversation_a", "missing required field 'conversation_a'"),
        (has_conv & np.asarray(pc.is_null(conv_b)), "conversation_b", "missing required field 'conversation_b'"),
        (has_conv & ~found_a, "conversation_a", "conversation_a: no assistant turn"),
        (has_conv & ~found_b, "conversation_b", "conversation_b: no assistant turn"),
        (
            has_conv & np.asarray(pc.fill_null(pc.not_equal(prompt_a, prompt_b), False)),
            "conversation_b",
            "conversation_a and conversation_b do not share the prompt before the last assistant turn",
        ),
    ]
    records = records.reject_many(checks)

    t = records.table
    msgs, resp_a, _ = split_conversation(combined(t, "conversation_a"))
    _, resp_b, _ = split_conversation(combined(t, "conversation_b"))
    prompt, prompt_messages = prompt_columns(combined(t, "prompt"), msgs)
    response_a = pc.coalesce(resp_a, combined(t, "response_a"))
    response_b = pc.coalesce(resp_b, combined(t, "response_b"))
    winner = combined(t, "winner")
    rank_a = np.where(np.asarray(pc.equal(winner, "model_b")), 2, 1).astype(np.int32)
    rank_b = np.where(np.asarray(pc.equal(winner, "model_a")), 2, 1).astype(np.int32)

    n = t.num_rows
    rec = np.repeat(np.arange(n), 2)
    pick = np.arange(2 * n) % 2 * n + rec  # index into concat([side a, side b])

    def sides(a: pa.Array, b: pa.Array) -> pa.Array:
        return pc.take(pa.concat_arrays([a, b]), pick)

    hash_a, hash_b = hash64(response_a), hash64(response_b)
    pair_key = hex_from_hashes(combine(np.minimum(hash_a, hash_b), np.maximum(hash_a, hash_b)), "pair-")
    ranked = pa.table(
        {
            "prompt_id": pc.take(combined(t, "question_id"), rec),
            "prompt": pc.take(prompt, rec),
            "prompt_messages": pc.take(prompt_messages, rec),
            "category": pc.take(combined(t, "category"), rec),
            "annotator_id": pc.take(pc.coalesce(combined(t, "annotator_id"), combined(t, "judge")), rec),
            "response": sides(response_a, response_b),
            "source": sides(combined(t, "model_a"), combined(t, "model_b")),
            "rank": pa.array(np.stack([rank_a, rank_b], axis=1).ravel()),
            "origin_line": pa.array(records.line[rec]),
            "ranking_key": pc.take(pair_key, pa.array(rec)),
        }
    )
    return ranked, records
