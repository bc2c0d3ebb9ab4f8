"""AlpacaEval annotations -> one K = 2 ranking (sample, reference) per record.

Each record is one judgement of one policy sample (``output_2`` by ``generator_2``) against the
reference (``output_1`` by ``generator_1``): ``preference`` in [1, 2], 2 = sample preferred. The
judge compared that sample with the reference and nothing else, so the record becomes exactly
that comparison:

    score(sample) = preference - 1   (= P(sample beats reference)),  score(reference) = 0.5
    rank 1 for the higher score, 2 for the lower; equal scores (preference = 1.5) tie at rank 1

with ``ranking_key = generator_2``: the ranking id is ``<prompt>|<annotator>|<generator_2>``, one
ranking per judged pair. That is correct by construction whatever the file layout: upstream
AlpacaEval writes one file per sample index (``model.0.json``, ``model.1.json``, ...), each
re-judging the reference, and the per-(prompt, judge) ranking id made every file after the first a
"duplicate"; a K-way ranking sorting the samples by P(beats reference) would also invent
sample-vs-sample comparisons the judge never made, and would depend on which files are ingested
together. Samples are compared with each other downstream through the shared reference (the
Thurstone/BT utilities of ``pairs.targets``, anchored at the reference).

The reference is stored once (response_id = ``generator_1``, qualified by the prompt in the
canonical step) and flagged ``is_anchor``: the prompt's anchor response, utility 0.
response_id = generator name; prompt_id is left null so that it derives from the instruction
text: AlpacaEval's ``id`` is only a row number, and the same instruction from another source
must share its id and split; category = ``dataset``.
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


def to_ranked(records: Records) -> tuple[pa.Table, Records]:
    """Two rows per well-formed record: the sample, then the reference (the anchor)."""
    t = records.table
    pref = combined(t, "preference")
    in_range = pc.and_(pc.greater_equal(pref, 1.0), pc.less_equal(pref, 2.0))  # NaN -> false
    checks = [(pc.is_null(combined(t, name)), name, f"missing required field '{name}'") for name in REQUIRED]
    checks.append((pc.invert(in_range), "preference", "preference: expected a number in [1, 2]"))
    records = records.reject_many(checks)

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
    ranked = pa.table(
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
    return ranked, records
