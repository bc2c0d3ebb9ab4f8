"""AlpacaEval annotations -> one K-way ranking per (instruction, annotator).

Each record judges one policy sample (``output_2`` by ``generator_2``) against the
reference (``output_1`` by ``generator_1``): ``preference`` in [1, 2], 2 = sample
preferred. All samples of an instruction plus the reference form one ranking:

    score(sample) = preference - 1   (= P(sample beats reference)),  score(reference) = 0.5
    rank = dense rank of score, descending (equal scores tie)

response_id = generator name (qualified by the prompt in the canonical step); prompt_id is
left null so that it derives from the instruction text: AlpacaEval's ``id`` is only a
row number, and the same instruction from another source must share its id and split;
category = ``dataset``. The reference row carries the origin of the group's first record.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data.adapters.jsonl import Records
from rewardline.data.adapters.native import combined

REFERENCE_SCORE = 0.5
REQUIRED = ["instruction", "output_1", "generator_1", "output_2", "generator_2", "preference", "annotator"]

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("instruction", pa.string()),
        ("dataset", pa.string()),
        ("output_1", pa.string()),
        ("generator_1", pa.string()),
        ("output_2", pa.string()),
        ("generator_2", pa.string()),
        ("preference", pa.float64()),
        ("annotator", pa.string()),
    ]
)
FLEXIBLE = ("id",)


def dense_rank_desc(group: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per-group dense rank of ``score``, highest = 1, equal scores share a rank."""
    order = np.lexsort((-score, group))
    g, s = group[order], score[order]
    new_group = np.r_[True, g[1:] != g[:-1]]
    new_value = new_group | np.r_[True, s[1:] != s[:-1]]
    c = np.cumsum(new_value)
    start = np.maximum.accumulate(np.where(new_group, c, 0))
    rank = np.empty(len(group), np.int32)
    rank[order] = c - start + 1
    return rank


def to_ranked(records: Records) -> tuple[pa.Table, Records]:
    """Sample rows + one reference row per (instruction, annotator) group."""
    t = records.table
    pref = combined(t, "preference")
    in_range = pc.and_(pc.greater_equal(pref, 1.0), pc.less_equal(pref, 2.0))  # NaN -> false
    checks = [(pc.is_null(combined(t, name)), name, f"missing required field '{name}'") for name in REQUIRED]
    checks.append((pc.invert(in_range), "preference", "preference: expected a number in [1, 2]"))
    records = records.reject_many(checks)

    t = records.table
    key = pc.binary_join_element_wise(combined(t, "instruction"), combined(t, "annotator"), "\x1f")
    group = np.asarray(pc.dictionary_encode(key).indices, dtype=np.int64)
    _, first = np.unique(group, return_index=True)  # first record of each group
    rows = np.concatenate([np.arange(t.num_rows), first])  # record feeding each output row
    is_ref = np.r_[np.zeros(t.num_rows, bool), np.ones(len(first), bool)]
    score = np.r_[np.asarray(combined(t, "preference")) - 1.0, np.full(len(first), REFERENCE_SCORE)]
    rank = dense_rank_desc(group[rows], score)

    def pick(sample: str, reference: str) -> pa.Array:
        return pa.concat_arrays([combined(t, sample), pc.take(combined(t, reference), first)])

    generator = pick("generator_2", "generator_1")
    ranked = pa.table(
        {
            "prompt_id": pa.nulls(len(rows), pa.string()),
            "prompt": pc.take(combined(t, "instruction"), rows),
            "category": pc.take(combined(t, "dataset"), rows),
            "annotator_id": pc.take(combined(t, "annotator"), rows),
            "response_id": generator,
            "response": pick("output_2", "output_1"),
            "source": generator,
            "rank": pa.array(rank),
            "score": pa.array(score),
            "origin_line": pa.array(records.line[rows]),
        }
    )
    order = np.lexsort((rank, is_ref, group[rows]))
    return ranked.take(pa.array(order)), records
