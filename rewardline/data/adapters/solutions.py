"""Candidate solutions with outcome labels (the GSM8K model-solutions shape) -> one solution per candidate.

Record: ``{"question", "ground_truth"?, "solutions": [{"solver"?, "solution", "is_correct"?}]}``, as in
``model_solutions_dev.jsonl.gz`` (openai/grade-school-math: 4 GPT-3 solutions per test problem). Each
candidate is one solution row: one step a line (blank lines are not steps), outcome = ``is_correct``
(true 1, false 0, absent null), final answer from the last line ``A: <answer>`` (null without one),
``solver`` kept. The reference solution (``ground_truth``) is not a candidate: it would make
best-of-N trivially easy. A record with a candidate without its ``solution`` text is quarantined, naming it.

Step labels (``StepOptions.step_labels``, a source's ``step_labels``):

* ``unknown`` (default): every step label null: only the outcome was judged (best-of-N candidates);
* ``outcome``: labels from the outcome ``o`` for PRM training, the standard outcome labelling
  (Math-Shepherd's hard estimate with the solution itself as the one rollout; the ORM's label on the
  last step). For steps ``1..K``::

      o = 1     ->  y_k = 1 for every k          (a correct answer: every step on a correct path)
      o = 0     ->  y_K = -1, y_k = null, k < K  (the chain went wrong somewhere: only the end is known)
      o = null  ->  y_k = null for every k

  so in the PRM loss (:class:`rewardline.training.objectives.ProcessObjective`) a wrong solution gives
  one BCE term ``-log σ(-z_K)`` at its last separator and its earlier separators no gradient.
  ``synthetic`` is true (generated step labels), as for Math-Shepherd.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data.adapters.jsonl import Records
from rewardline.data.adapters.native import combined, offsets_of, require
from rewardline.data.steps import StepOptions

CANDIDATE = pa.struct([("solver", pa.string()), ("solution", pa.string()), ("is_correct", pa.bool_())])
SCHEMA = pa.schema([("question", pa.string()), ("ground_truth", pa.string()), ("solutions", pa.list_(CANDIDATE))])
FLEXIBLE: tuple[str, ...] = ()
ANSWER_LINE = r"^A:\s*(?P<answer>.*?)\s*$"


def split_lines(texts: pa.Array) -> pa.Array:
    """Each text's non-blank lines, stripped (null text -> null list)."""
    lines = pc.split_pattern(texts, "\n")
    flat = pc.utf8_trim_whitespace(pc.list_flatten(lines))
    parents = np.asarray(pc.list_parent_indices(lines), dtype=np.int64)
    keep = np.asarray(pc.greater(pc.utf8_length(flat), 0), dtype=bool)
    counts = np.bincount(parents[keep], minlength=len(texts))
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, flat.filter(pa.array(keep)), mask=pc.is_null(texts))


def final_answers(steps: pa.Array) -> pa.Array:
    """The answer of a last step ``A: <answer>``, else null."""
    lengths = np.asarray(pc.fill_null(pc.list_value_length(steps), 0), dtype=np.int64)
    flat = pc.list_flatten(steps)
    ends = np.cumsum(lengths) - 1
    last = pc.if_else(pa.array(lengths > 0), flat.take(pa.array(np.maximum(ends, 0))) if len(flat) else
                      pa.nulls(len(steps), pa.string()), pa.scalar(None, flat.type))
    return pc.struct_field(pc.extract_regex(last, ANSWER_LINE), [0]).cast(pa.string())


def outcome_labels(steps: pa.Array, correct: pa.Array) -> pa.Array:
    """Step labels from each solution's outcome (module docstring): all 1 when correct, the last step
    -1 and the rest null when incorrect, all null when unknown."""
    lengths = np.asarray(pc.fill_null(pc.list_value_length(steps), 0), dtype=np.int64)
    outcome = np.asarray(pc.fill_null(pc.if_else(correct, 1, 0), -1), dtype=np.int64)
    parent = np.repeat(np.arange(len(lengths)), lengths)
    is_last = np.zeros(len(parent), bool)
    is_last[np.cumsum(lengths)[lengths > 0] - 1] = True
    value = np.where(outcome[parent] == 1, 1, np.where((outcome[parent] == 0) & is_last, -1, 0))
    known = (outcome[parent] == 1) | ((outcome[parent] == 0) & is_last)
    flat = pa.array(value, pa.int64(), mask=~known)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, flat, mask=pc.is_null(steps))


def _without_text(candidates: pa.Array) -> tuple[np.ndarray, str, np.ndarray]:
    """A check (mask, field, reason per record) for records with a candidate that is null or has no ``solution``
    (null, or the field misnamed), naming the first: ``solutions[1]: missing required field 'solution'``."""
    flat = pc.list_flatten(candidates)
    missing = np.asarray(pc.fill_null(pc.or_(pc.is_null(flat), pc.is_null(flat.field("solution"))), True), bool)
    mask, reasons = np.zeros(len(candidates), bool), np.full(len(candidates), None, dtype=object)
    if missing.any():
        parents = np.asarray(pc.list_parent_indices(candidates), dtype=np.int64)[missing]
        position = np.flatnonzero(missing) - offsets_of(candidates)[:-1][parents]
        records, first = np.unique(parents, return_index=True)  # each record's first such candidate
        mask[records] = True
        reasons[records] = [f"solutions[{k}]: missing required field 'solution'" for k in position[first]]
    return mask, "solutions.solution", reasons


def to_solutions(records: Records, options: StepOptions | None = None) -> tuple[pa.Table, Records]:
    """One row per candidate solution of each record (step labels per ``options.step_labels``)."""
    records = require(records, ["question", "solutions"])
    candidates = combined(records.table, "solutions")
    records = records.reject(pc.equal(pc.list_value_length(candidates), 0), "solutions",
                             "solutions: an empty list; expected at least one candidate solution")
    records = records.reject(*_without_text(combined(records.table, "solutions")))
    candidates = combined(records.table, "solutions")
    parents = np.asarray(pc.list_parent_indices(candidates), dtype=np.int64)
    flat = pc.list_flatten(candidates)
    counts = np.bincount(parents, minlength=len(candidates))
    starts = np.concatenate([[0], np.cumsum(counts)])[:-1].astype(np.int64)  # first candidate of each record
    candidate = np.arange(len(flat)) - starts[parents]
    texts = flat.field("solution")
    steps = split_lines(texts)
    correct = flat.field("is_correct")
    from_outcome = options is not None and options.step_labels == "outcome"
    labels = outcome_labels(steps, correct) if from_outcome else pa.nulls(len(flat), pa.list_(pa.int64()))
    table = pa.table(
        {
            "prompt": pc.take(combined(records.table, "question"), pa.array(parents)),
            "steps": steps,
            "step_labels": labels,
            "outcome": pc.if_else(correct, 1, 0).cast(pa.int64()),
            "final_answer": final_answers(steps),
            "synthetic": pa.array(np.full(len(flat), from_outcome)),
            "solver": flat.field("solver"),
            "candidate": pa.array(candidate.astype(np.int32)),
            "origin_line": pa.array(records.line[parents]),
        }
    )
    return table, records
