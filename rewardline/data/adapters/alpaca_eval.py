"""AlpacaEval annotations -> per record a K = 2 ranking (sample, reference), plus per file and
(instruction, judge) a K-way ranking of the judged samples.

Each record is one judgement of one policy sample (``output_2`` by ``generator_2``) against the
reference (``output_1`` by ``generator_1``): ``preference`` in [1, 2], 2 = sample preferred.

(a) Anchor comparison, one per record, ``ranking_key = generator_2`` (ranking id
``<prompt>|<annotator>|<generator_2>``):

    score(sample) = preference - 1   (= P(sample beats reference)),  score(reference) = 0.5
    rank 1 for the higher score, 2 for the lower; equal scores (preference = 1.5) tie at rank 1

The pairs stage reads the sample's score as the soft label of this comparison, v = preference − 1
(``pairs.anchor_labels: score``, the default), not the 0/1 of the ranks.

The reference is stored once (response_id = ``generator_1``, qualified by the prompt in the
canonical step) and flagged ``is_anchor``: the prompt's anchor response, utility 0. This part does
not depend on the file layout: upstream AlpacaEval writes one file per sample index
(``model.0.json``, ``model.1.json``, ...), each re-judging the reference, and each judgement is
its own ranking, so no file is a "duplicate" of another.

(b) Sample ranking: the samples of one (instruction, judge) judged in the same file, when there
are K >= 2 of them, form one K-way ranking (the reference is not in it: (a) covers it),
``ranking_key = "samples@<file name>"``:

    score(sample) = preference - 1,   rank = dense rank of score, descending (equal scores tie)

i.e. the samples ordered by P(sample beats reference), as best-of-K files (several samples per
instruction in one file) have always been ranked. The ranking is per file, so the upstream layout
(one sample per instruction and file) gives none, and rankings of different files never merge.

A record feeds its (a) ranking and, when its file has another sample of its (instruction, judge),
the (b) ranking: its rows share its ``origin_line``, so it is still counted once (ok when any of its
rankings is kept; see :mod:`rewardline.data.canonical`).

response_id = generator name; prompt_id is left null so that it derives from the instruction
text: AlpacaEval's ``id`` is only a row number, and the same instruction from another source
must share its id and split; category = ``dataset``.
"""

from __future__ import annotations

import json
from pathlib import PurePath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data.adapters.jsonl import Records
from rewardline.data.adapters.native import combined

REFERENCE_SCORE = 0.5
SAMPLES_KEY = "samples@"  # + the file name: ranking key of the K-way ranking of a file's samples
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
    """(a) rows (sample, reference) per well-formed record, then (b) rows of the files' sample rankings."""
    t = records.table
    pref = combined(t, "preference")
    in_range = pc.and_(pc.greater_equal(pref, 1.0), pc.less_equal(pref, 2.0))  # NaN -> false
    checks = [(pc.is_null(combined(t, name)), name, f"missing required field '{name}'") for name in REQUIRED]
    checks.append((pc.invert(in_range), "preference", _preference_reasons(pref, in_range)))
    records = records.reject_many(checks)
    return pa.concat_tables([_anchor_comparisons(records), _sample_rankings(records)]), records


def _preference_reasons(pref: pa.Array, in_range: pa.Array) -> np.ndarray:
    """Per record, the reason of a preference outside [1, 2] with the value found (JSON-style: 2.5, NaN,
    -Infinity); None where it is inside (or null: the missing-field check names that)."""
    reasons = np.full(len(pref), None, dtype=object)
    bad = np.flatnonzero(~np.asarray(pc.fill_null(in_range, True), bool))
    values = np.asarray(pc.take(pref, pa.array(bad, pa.int64())), np.float64)
    reasons[bad] = [f"preference: expected a number in [1, 2], got {json.dumps(float(v))}" for v in values]
    return reasons


def _anchor_comparisons(records: Records) -> pa.Table:
    """(a): two rows per record, the sample then the reference (the anchor), ranking key ``generator_2``."""
    t = records.table
    n = t.num_rows
    rec = np.repeat(np.arange(n), 2)  # record feeding each output row: sample, reference
    is_ref = np.tile(np.array([False, True]), n)
    sample_score = np.asarray(combined(t, "preference"), np.float64) - 1.0
    score = np.where(is_ref, REFERENCE_SCORE, sample_score[rec])
    other = np.where(is_ref, sample_score[rec], REFERENCE_SCORE)
    rank = np.where(score < other, 2, 1).astype(np.int32)  # equal scores tie at rank 1
    pick = np.arange(2 * n) % 2 * n + rec  # index into concat([sample side, reference side])

    def sides(sample: str, reference: str) -> pa.Array:
        return pc.take(pa.concat_arrays([combined(t, sample), combined(t, reference)]), pa.array(pick))

    generator = sides("generator_2", "generator_1")
    return pa.table(
        {
            "prompt_id": pa.nulls(2 * n, pa.string()),
            "prompt": pc.take(combined(t, "instruction"), rec),
            "category": pc.take(combined(t, "dataset"), rec),
            "annotator_id": pc.take(combined(t, "annotator"), rec),
            "response_id": generator,
            "response": sides("output_2", "output_1"),
            "source": generator,
            "rank": pa.array(rank),
            "score": pa.array(score),
            "origin_line": pa.array(records.line[rec]),
            "is_anchor": pa.array(is_ref),
            "ranking_key": pc.take(combined(t, "generator_2"), rec),
        }
    )


def _sample_rankings(records: Records) -> pa.Table:
    """(b): per (instruction, annotator) with K >= 2 records in this file, the K samples ranked by
    score = preference - 1 (dense rank, descending; ties share a rank), grouped, best first."""
    t = records.table
    key = pc.binary_join_element_wise(combined(t, "instruction"), combined(t, "annotator"), "\x1f")
    group = np.asarray(pc.dictionary_encode(key).indices, dtype=np.int64)
    sizes = np.bincount(group, minlength=1)
    rows = np.flatnonzero(sizes[group] >= 2)  # K = 1 is no ranking
    score = np.asarray(combined(t, "preference"), np.float64)[rows] - 1.0
    rank = dense_rank_desc(group[rows], score)
    order = np.lexsort((rank, group[rows]))
    rows, score, rank = rows[order], score[order], rank[order]
    take = pa.array(rows, pa.int64())
    generator = pc.take(combined(t, "generator_2"), take)
    return pa.table(
        {
            "prompt_id": pa.nulls(rows.size, pa.string()),
            "prompt": pc.take(combined(t, "instruction"), take),
            "category": pc.take(combined(t, "dataset"), take),
            "annotator_id": pc.take(combined(t, "annotator"), take),
            "response_id": generator,
            "response": pc.take(combined(t, "output_2"), take),
            "source": generator,
            "rank": pa.array(rank, pa.int32()),
            "score": pa.array(score),
            "origin_line": pa.array(records.line[rows]),
            "is_anchor": pa.array(np.zeros(rows.size, bool)),
            "ranking_key": pa.array([SAMPLES_KEY + PurePath(records.origin_file).name] * rows.size, pa.string()),
        }
    )
