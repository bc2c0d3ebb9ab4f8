"""RewardBench rows -> one ranking per row.

RewardBench v1 (allenai/reward-bench, ``filtered`` split), one chosen against one rejected::

    {"prompt": str, "chosen": str, "chosen_model": str, "rejected": str, "rejected_model": str,
     "subset": str, "id": int}

RewardBench 2 (allenai/reward-bench-2), best-of-4: ``num_correct`` chosen against the rest::

    {"id": str, "prompt": str, "chosen": [str], "rejected": [str, str, str], "num_correct": 1,
     "num_incorrect": 3, "total_completions": 4, "models": [...], "subset": str}

Every chosen response gets rank 1 and every rejected one rank 2: a K-way ranking in which the
chosen win and the rejected tie below them (so the pairs stage makes chosen ≻ each rejected,
and with ``ties: skip`` nothing between two rejected). ``subset`` -> category; ``id`` ->
prompt_id, so each row is its own prompt (RewardBench scores rows, and a prompt text that
occurs in two subsets stays two items); chosen_model / rejected_model -> source (v1).
annotator_id = ``rewardbench``. A v2 response text repeated on the same side of a row is kept
once (it is the same response); ``num_correct``, when given, must equal ``len(chosen)``, and a row with it whose
``chosen`` is bracketed text that is not JSON (a list that reached a CSV cell as pandas' repr, ``['a']``) is
quarantined, not read as a v1 pair of list-shaped texts.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data.adapters.jsonl import Records
from rewardline.data.adapters.native import Shape, combined, items_fault, require
from rewardline.data.keys import key_codes

ANNOTATOR = "rewardbench"
SIDES = ("chosen", "rejected")
FLEXIBLE = ("id",)


def schema_for(responses_are_lists: bool) -> pa.Schema:
    """Input schema: v1 (string responses) or v2 (lists of strings)."""
    response = pa.list_(pa.string()) if responses_are_lists else pa.string()
    return pa.schema(
        [
            ("id", pa.string()),
            ("prompt", pa.string()),
            ("chosen", response),
            ("rejected", response),
            ("chosen_model", pa.string()),
            ("rejected_model", pa.string()),
            ("subset", pa.string()),
            ("num_correct", pa.int64()),
        ]
    )


def shape(list_fields: dict[str, bool]) -> Shape:
    """The Shape for a file whose ``chosen`` is (True: RewardBench 2) or is not a list."""
    return Shape(schema_for(list_fields.get("chosen", False)), FLEXIBLE, to_ranked)


def _v1(t: pa.Table) -> tuple[np.ndarray, pa.Array, np.ndarray, pa.Array]:
    """(record of each output row, response, rank, source): chosen then rejected per record."""
    n = t.num_rows
    rec = np.repeat(np.arange(n), 2)
    pick = np.arange(2 * n) % 2 * n + rec  # index into concat([chosen, rejected])

    def sides(a: str, b: str) -> pa.Array:
        return pc.take(pa.concat_arrays([combined(t, a), combined(t, b)]), pick)

    return rec, sides("chosen", "rejected"), np.tile(np.array([1, 2], np.int32), n), sides("chosen_model",
                                                                                         "rejected_model")


def _v2(t: pa.Table, line: np.ndarray) -> tuple[np.ndarray, pa.Array, np.ndarray, pa.Array]:
    """(record of each output row, response, rank, source): each record's chosen, then its rejected;
    a text repeated on the same side of a record is kept once."""
    chosen, rejected = combined(t, "chosen"), combined(t, "rejected")
    rec = np.concatenate([np.asarray(pc.list_parent_indices(chosen)), np.asarray(pc.list_parent_indices(rejected))])
    response = pa.concat_arrays([pc.list_flatten(chosen), pc.list_flatten(rejected)])
    rank = np.concatenate([np.ones(len(pc.list_flatten(chosen)), np.int32),
                           np.full(len(pc.list_flatten(rejected)), 2, np.int32)])
    order = np.lexsort((np.arange(rec.size), rec))  # by record, chosen first, input order kept
    rec, rank, response = rec[order], rank[order], response.take(pa.array(order))
    side_key = key_codes(pa.array(line[rec].astype(str)), pa.array(rank.astype(str)), response)
    _, first = np.unique(side_key, return_index=True)
    keep = np.sort(first)
    return rec[keep], response.take(pa.array(keep)), rank[keep], pa.nulls(keep.size, pa.string())


def to_ranked(records: Records) -> tuple[pa.Table, Records]:
    """Ranked rows of every well-formed row: chosen rank 1, rejected rank 2."""
    records = require(records, ["prompt", *SIDES])
    lists = pa.types.is_list(records.table.schema.field("chosen").type)
    if lists:
        t = records.table
        checks = []
        for name in SIDES:
            side = combined(t, name)
            checks.append((pc.equal(pc.list_value_length(side), 0), name, f"{name}: expected a non-empty list"))
            checks.append((items_fault(side, pc.is_null(pc.list_flatten(side))), name,
                           f"{name}: expected a list of strings, got a null item"))
        wrong_count = pc.not_equal(combined(t, "num_correct"), pc.list_value_length(combined(t, "chosen")))
        checks.append((wrong_count, "num_correct", "num_correct: expected the number of chosen responses"))
        records = records.reject_many(checks)
    else:  # num_correct is RewardBench 2's: text here is a list written another way (pandas' repr in a CSV cell)
        t = records.table
        bracketed = pc.match_substring_regex(combined(t, "chosen"), r"(?s)^\s*\[.*\]\s*$")
        records = records.reject(pc.and_(pc.is_valid(combined(t, "num_correct")), bracketed), "chosen",
                                 "chosen: expected a list of responses, as num_correct says (RewardBench 2); got text "
                                 "in brackets that is not a JSON array (a list in a CSV cell is its JSON text: "
                                 "[\"a\", \"b\"])")
    t = records.table
    rec, response, rank, source = _v2(t, records.line) if lists else _v1(t)
    taken = pa.array(rec, pa.int64())
    ranked = pa.table(
        {
            "prompt_id": pc.take(combined(t, "id"), taken),
            "prompt": pc.take(combined(t, "prompt"), taken),
            "category": pc.take(combined(t, "subset"), taken),
            "annotator_id": pa.array([ANNOTATOR] * len(rec), pa.string()),
            "response": response,
            "source": source,
            "rank": pa.array(rank, pa.int32()),
            "origin_line": pa.array(records.line[rec]),
        }
    )
    return ranked, records
