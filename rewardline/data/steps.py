"""The step-level data contract (process reward models): solutions with a label per reasoning step.

See ``docs/data-contract.md`` ("Step-level data"). A step adapter (``prm800k``, ``math-shepherd``,
``gsm8k``, ``solutions`` in :mod:`rewardline.data.adapters`) turns its source records into
``STEP_ROWS`` (one row per solution, several per record when a record holds several solutions);
:func:`canonicalize_solutions` checks their content and writes the canonical ``SOLUTIONS`` table
(``solutions.parquet`` of an ingest directory, beside the ranking tables) plus quarantine rows.

Step labels (``step_labels``, one per step): ``1`` correct, ``0`` neutral (PRM800K's "neither
helps nor hurts"), ``-1`` incorrect, null unknown. Outcome (whole solution): ``1`` correct,
``0`` incorrect, null unknown. Training maps labels to binary targets: 1 -> 1, -1 -> 0,
0 -> ``prm.neutral_as``, null -> ignored.

Accounting unit: the input record, as for rankings. A record is quarantined, with the first fault
found, when one of its solutions has an empty problem text, no steps, an empty step, a label list
whose length differs from the step list's, a label outside {-1, 0, 1, null}, an outcome outside
{0, 1, null}, or repeats a solution id already seen (the same source record ingested twice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data.hashing import combine, hash64, hex_from_hashes
from rewardline.data.keys import SEP, key_codes
from rewardline.data.schema import QUARANTINE, SOLUTIONS_FILE, conform

CORRECT, NEUTRAL, INCORRECT = 1, 0, -1
LABELS = (INCORRECT, NEUTRAL, CORRECT)
OUTCOMES = (0, 1)
STEP_FORMATS = ("prm800k", "math-shepherd", "gsm8k", "solutions")

#: What every step adapter returns: one row per solution (``candidate`` = its index in the record).
STEP_ROWS = pa.schema(
    [
        ("prompt", pa.large_string()),
        ("steps", pa.list_(pa.large_string())),
        ("step_labels", pa.list_(pa.int64())),  # wide on purpose: out-of-range values are quarantined, not wrapped
        ("outcome", pa.int64()),
        ("final_answer", pa.string()),
        ("synthetic", pa.bool_()),
        ("solver", pa.string()),  # the model / solver that wrote the solution, when the source says
        ("candidate", pa.int32()),
        ("source_format", pa.string()),
        ("origin_file", pa.string()),
        ("origin_line", pa.int64()),
        ("batch_id", pa.string()),
    ]
)

#: The canonical step-level table, ``solutions.parquet`` (the agreed contract; extend only by adding columns).
SOLUTIONS = pa.schema(
    [
        ("solution_id", pa.string()),  # s- + hash of (prompt, steps, source record)
        ("prompt_id", pa.string()),  # p- + hash64(prompt): the ranking tables' derivation
        ("prompt", pa.large_string()),
        ("steps", pa.list_(pa.large_string())),
        ("step_labels", pa.list_(pa.int8())),  # 1 correct, 0 neutral, -1 incorrect, null unknown
        ("outcome", pa.int8()),  # 1 correct, 0 incorrect, null unknown
        ("final_answer", pa.string()),  # normalised: stripped, no "," or "$"
        ("synthetic", pa.bool_()),  # labels / negatives generated (gsm8k perturbations, Math-Shepherd rollouts)
        ("source_format", pa.string()),
        ("source", pa.string()),
        ("line", pa.int64()),
        ("batch_id", pa.string()),
        ("solver", pa.string()),  # added column: the solver / model name when the source gives it, else null
    ]
)


@dataclass(frozen=True)
class StepOptions:
    """Options of the step adapters (``ingest.gsm8k_negatives``, ``ingest.gsm8k_negative_kind``, ``ingest.seed``,
    a source's ``step_labels``)."""

    gsm8k_negatives: int = 1  # synthetic negatives per GSM8K reference solution
    gsm8k_negative_kind: str = "operation"  # how a negative's step goes wrong: "result" | "operation" (adapters/gsm8k)
    seed: int = 0
    step_labels: str = "unknown"  # solutions format: "unknown" | "outcome" (labels from the outcome)


@dataclass
class SolutionTables:
    solutions: pa.Table  # SOLUTIONS
    quarantine: pa.Table  # QUARANTINE
    records_ok: int
    records_quarantined: int


def normalise_answer(answers: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Final answers for majority vote: stripped, without ``,`` and ``$``; empty -> null."""
    cleaned = pc.utf8_trim_whitespace(pc.replace_substring_regex(answers, r"[,$]", ""))
    return pc.if_else(pc.equal(cleaned, ""), pa.scalar(None, pa.string()), cleaned).cast(pa.string())


def _combined(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _filled_labels(rows: pa.Table) -> pa.Array:
    """``step_labels``, a null list replaced by one null label per step (every label unknown)."""
    labels, steps = _combined(rows["step_labels"]), _combined(rows["steps"])
    n_steps = np.asarray(pc.fill_null(pc.list_value_length(steps), 0), dtype=np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(n_steps)]).astype(np.int32))
    unknown = pa.ListArray.from_arrays(offsets, pa.nulls(int(n_steps.sum()), pa.int64()))
    return pc.coalesce(labels, unknown)


def _outside(values: pa.Array | pa.ChunkedArray, allowed: tuple[int, ...]) -> np.ndarray:
    """Mask of non-null values not in ``allowed`` (null = unknown is always allowed)."""
    inside = pc.is_in(values, value_set=pa.array(allowed, pa.int64()))
    return np.asarray(pc.and_(pc.is_valid(values), pc.invert(inside)), dtype=bool)


def _row_faults(rows: pa.Table, labels: pa.Array) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(field, mask, reason per row) for each content fault, in priority order."""
    n = rows.num_rows
    steps = _combined(rows["steps"])

    def reasons(mask: np.ndarray, make: Callable[[int], str]) -> np.ndarray:
        out = np.full(n, "", dtype=object)
        for i in np.flatnonzero(mask):
            out[i] = make(i)
        return out

    faults = []
    blank_prompt = np.asarray(pc.fill_null(pc.match_substring_regex(rows["prompt"], r"^\s*$"), True), dtype=bool)
    faults.append(("prompt", blank_prompt, np.full(n, "empty problem text; expected a non-empty string", object)))
    n_steps = np.asarray(pc.fill_null(pc.list_value_length(steps), 0), dtype=np.int64)
    no_steps = n_steps == 0
    faults.append(("steps", no_steps, np.full(n, "no steps; expected at least one reasoning step", object)))

    flat = pc.list_flatten(steps)
    parents = np.asarray(pc.list_parent_indices(steps), dtype=np.int64)
    blank_step = np.asarray(pc.fill_null(pc.match_substring_regex(flat, r"^\s*$"), True), dtype=bool)
    empty_step = np.zeros(n, bool)
    empty_step[parents[blank_step]] = True
    first_blank = np.full(n, -1)
    if blank_step.any():
        step_index = np.arange(len(flat)) - np.repeat(np.concatenate([[0], np.cumsum(n_steps)[:-1]]), n_steps)
        for row, index in zip(parents[blank_step][::-1], step_index[blank_step][::-1], strict=True):
            first_blank[row] = index  # reversed: the first blank step of each row wins
    faults.append(("steps", empty_step, reasons(
        empty_step, lambda i: f"step {first_blank[i] + 1} of {n_steps[i]} is empty; expected non-empty step texts")))

    n_labels = np.asarray(pc.fill_null(pc.list_value_length(labels), 0), dtype=np.int64)
    length = n_labels != n_steps
    faults.append(("step_labels", length, reasons(
        length, lambda i: f"{n_labels[i]} step labels for {n_steps[i]} steps; expected one label per step")))

    flat_labels = pc.list_flatten(labels)
    label_parents = np.asarray(pc.list_parent_indices(labels), dtype=np.int64)
    bad_value = _outside(flat_labels, LABELS)
    bad_label = np.zeros(n, bool)
    bad_label[label_parents[bad_value]] = True
    first_bad = {}
    for row, value in zip(label_parents[bad_value][::-1], flat_labels.filter(pa.array(bad_value)).to_pylist()[::-1],
                          strict=True):
        first_bad[row] = value
    faults.append(("step_labels", bad_label, reasons(
        bad_label, lambda i: f"step label {first_bad[i]} is not one of -1, 0, 1 or null "
                             "(incorrect, neutral, correct, unknown)")))

    outcome = rows["outcome"]
    bad_outcome = _outside(outcome, OUTCOMES)
    shown = outcome.to_pylist() if bad_outcome.any() else []
    faults.append(("outcome", bad_outcome, reasons(
        bad_outcome, lambda i: f"outcome {shown[i]} is not one of 0, 1 or null (incorrect, correct, unknown)")))
    return faults


def solution_ids(rows: pa.Table) -> pa.Array:
    """``s-`` + hex of combine(hash(prompt), hash(steps joined by \\x1f), hash(origin file:line#candidate)):
    stable across runs; distinct for two candidates of one record even when their texts are equal."""
    joined = pc.binary_join(pc.fill_null(_combined(rows["steps"]), pa.scalar([], rows.schema.field("steps").type)),
                            pa.scalar(SEP, pa.large_string()))
    where = pc.binary_join_element_wise(
        pc.fill_null(rows["origin_file"], ""), ":", pc.cast(rows["origin_line"], pa.string()), "#",
        pc.cast(pc.fill_null(rows["candidate"], 0), pa.string()), "")
    return hex_from_hashes(combine(combine(hash64(rows["prompt"]), hash64(joined)), hash64(where)), "s-")


def canonicalize_solutions(rows: pa.Table) -> SolutionTables:
    """Validate step rows (``STEP_ROWS``) and build ``SOLUTIONS`` + quarantine, accounting by record.

    A record with any faulty solution is quarantined whole with its first fault (by fault priority,
    then row order); ``records_ok + records_quarantined`` = distinct records in ``rows``, asserted."""
    rows = conform(rows, STEP_ROWS)
    n = rows.num_rows
    labels = _filled_labels(rows) if n else pa.array([], STEP_ROWS.field("step_labels").type)
    ids = solution_ids(rows) if n else pa.array([], pa.string())
    record = key_codes(rows["origin_file"], rows["origin_line"].cast(pa.string())) if n else np.zeros(0, np.int64)
    n_records = int(record.max()) + 1 if n else 0

    faults = _row_faults(rows, labels) if n else []
    codes = key_codes(ids) if n else np.zeros(0, np.int64)
    _, first_index, inverse = np.unique(codes, return_index=True, return_inverse=True)
    duplicate = first_index[inverse] != np.arange(n)
    faults.append(("solution_id", duplicate, np.full(n, "duplicate solution: the same source record was ingested "
                                                        "twice; expected each record once", object)))

    bad = np.zeros(n_records, bool)
    field = np.full(n_records, None, dtype=object)
    reason = np.full(n_records, None, dtype=object)
    for name, mask, texts in faults:
        hit = np.flatnonzero(mask)
        recs, first = np.unique(record[hit], return_index=True)
        new = ~bad[recs]
        field[recs[new]], reason[recs[new]] = name, texts[hit[first[new]]]
        bad[recs] = True
    row_ok = ~bad[record] if n else np.zeros(0, bool)

    keep = pa.array(np.flatnonzero(row_ok), pa.int64())
    good = rows.take(keep)
    solutions = pa.table(
        {
            "solution_id": ids.take(keep),
            "prompt_id": hex_from_hashes(hash64(good["prompt"]), "p-"),
            "prompt": good["prompt"],
            "steps": good["steps"],
            "step_labels": labels.take(keep).cast(pa.list_(pa.int8())),
            "outcome": good["outcome"].cast(pa.int8()),
            "final_answer": normalise_answer(good["final_answer"]),
            "synthetic": pc.fill_null(good["synthetic"], False),
            "source_format": good["source_format"],
            "source": good["origin_file"],
            "line": good["origin_line"],
            "batch_id": good["batch_id"],
            "solver": good["solver"],
        },
        schema=SOLUTIONS,
    )
    quarantine = _quarantine(rows, record, bad, field, reason)
    records_ok = int(np.unique(record[row_ok]).size)
    assert records_ok + int(bad.sum()) == n_records, "solution accounting broke: a record is neither ok nor quarantined"
    return SolutionTables(solutions, quarantine, records_ok, int(bad.sum()))


def _quarantine(rows: pa.Table, record: np.ndarray, bad: np.ndarray, field: np.ndarray,
                reason: np.ndarray) -> pa.Table:
    """One QUARANTINE row per faulty record: its origin and a compact rendering of its first solution."""
    bad_records = np.flatnonzero(bad)
    if bad_records.size == 0:
        return QUARANTINE.empty_table()
    _, first_row = np.unique(record, return_index=True)
    sample = rows.take(pa.array(first_row[bad_records]))
    steps = pc.binary_join(pc.fill_null(sample["steps"], pa.scalar([], sample.schema.field("steps").type)),
                           pa.scalar(" | ", pa.large_string()))
    raw = pc.binary_join_element_wise(
        "prompt=", pc.utf8_slice_codeunits(pc.fill_null(sample["prompt"], ""), 0, 300).cast(pa.string()),
        " steps=", pc.utf8_slice_codeunits(pc.fill_null(steps, ""), 0, 1500).cast(pa.string()), "",
    )
    return pa.table(
        {
            "origin_file": sample["origin_file"],
            "origin_line": sample["origin_line"],
            "field": pa.array(field[bad_records].tolist(), pa.string()),
            "reason": pa.array(reason[bad_records].tolist(), pa.string()),
            "raw": raw.cast(pa.string()),
        },
        schema=QUARANTINE,
    )


__all__ = ["SOLUTIONS", "SOLUTIONS_FILE", "STEP_ROWS", "StepOptions", "canonicalize_solutions"]


def conform_rows(table: pa.Table) -> pa.Table:
    """``table`` as ``STEP_ROWS`` (absent columns null)."""
    return conform(table, STEP_ROWS)


def empty_rows() -> pa.Table:
    return STEP_ROWS.empty_table()
