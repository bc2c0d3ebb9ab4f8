"""Math-Shepherd (peiyi9979/Math-Shepherd): ``{"input", "label", "task"}`` -> one step-labelled solution.

``input`` is the problem followed by the solution, each step ending in the step tag ``ки``
(``"<problem> Step 1: ... ки\\nStep 2: ... ки"``); ``label`` is the same text with each tag
replaced by ``+`` (the step can still reach the gold answer: correct) or ``-`` (incorrect), as
estimated automatically by completing the solution from that step (Wang et al., 2023). So the
label of step k is the character of ``label`` at the k-th tag's position once each two-character
tag counts as one character (the reading of TRL's ``examples/datasets/math_shepherd.py``).

The problem is the text before the first ``Step 1:`` (or ``step 1:``); step texts are stripped.
Labels: ``+`` -> 1, ``-`` -> -1; outcome = the last step's label (1 / 0: for the last step the
completion is the solution itself); final answer from ``The answer is: X`` in the last step.
``synthetic`` is true (generated labels). ``task`` (GSM8K / MATH, the problem's source) is not kept.

Quarantined: no step tag, text after the last tag (a last step without its tag), no ``Step 1:`` to split the
problem from the first step, a label text that does not line up with the input (other length, or a character other
than ``+``/``-`` at a tag).
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from rewardline.data.adapters.jsonl import Records
from rewardline.data.adapters.native import combined, require
from rewardline.data.steps import CORRECT, INCORRECT

SCHEMA = pa.schema([("input", pa.string()), ("label", pa.string()), ("task", pa.string())])
FLEXIBLE: tuple[str, ...] = ()
STEP_TAG = "ки"
_ONE = "\u2dbb"  # a one-character stand-in for the two-character tag, so positions line up with the label
FIRST_STEP = re.compile(r"[Ss]tep 1:")
ANSWER = re.compile(r"The answer is:?\s*(.+?)\s*$", re.S)


def _first_difference(tagged: str, label: str) -> str:
    """Where ``label`` first stops being the input (``tagged``: its tags as one character) with each tag replaced
    by a mark, with 10 characters either side of both texts: a mistyped tag shows there."""
    at = next((i for i, (a, b) in enumerate(zip(tagged, label, strict=False))
               if (a != b and a != _ONE) or (a == _ONE and b not in "+-")), min(len(tagged), len(label)))
    lo, hi = max(0, at - 10), at + 10
    return (f"they first differ at character {at + 1}: input {tagged[lo:hi].replace(_ONE, STEP_TAG)!r}, "
            f"label {label[lo:hi]!r}")


def parse(text: str, label: str) -> tuple[str, list[str], list[int]] | str:
    """(problem, steps, labels), or the reason the record cannot be read."""
    if STEP_TAG not in text:
        return f"input: no step tag '{STEP_TAG}'; expected each step to end with it"
    tagged = text.replace(STEP_TAG, _ONE)
    if len(label) != len(tagged):
        return (f"label: {len(label)} characters where the input has {len(tagged)} (tags counted once); expected "
                f"the input with each '{STEP_TAG}' replaced by + or -; {_first_difference(tagged, label)}")
    positions = [m.start() for m in re.finditer(_ONE, tagged)]
    marks = [label[p] for p in positions]
    if any(mark not in "+-" for mark in marks):
        bad = next(mark for mark in marks if mark not in "+-")
        return f"label: {bad!r} at a step tag is not + or -"
    *pieces, tail = tagged.split(_ONE)
    if tail.strip():  # a last step without its tag: dropping it would change the outcome
        return (f"input: text after the last step tag ({tail.strip()[:60]!r}); expected every step to end with "
                f"'{STEP_TAG}'")
    head = FIRST_STEP.search(pieces[0])
    if head is None:
        return "input: no 'Step 1:' before the first step tag; expected '<problem> Step 1: ... ки'"
    problem = pieces[0][:head.start()].strip()
    steps = [pieces[0][head.start():].strip(), *(piece.strip() for piece in pieces[1:])]
    return problem, steps, [CORRECT if mark == "+" else INCORRECT for mark in marks]


def to_solutions(records: Records, options: object = None) -> tuple[pa.Table, Records]:
    """One solution per record (input and label texts parsed per record)."""
    records = require(records, ["input", "label"])
    parsed = [parse(t, lab) for t, lab in zip(combined(records.table, "input").to_pylist(),
                                              combined(records.table, "label").to_pylist(), strict=True)]
    reasons = [p if isinstance(p, str) else None for p in parsed]
    checks = [(np.array([r == reason for r in reasons], dtype=bool), reason.split(":", 1)[0], reason)
              for reason in sorted({r for r in reasons if r})]
    records = records.reject_many(checks) if checks else records
    parsed = [p for p in parsed if not isinstance(p, str)]
    problems = [p[0] for p in parsed]
    steps = [p[1] for p in parsed]
    labels = [p[2] for p in parsed]
    finals = [(m.group(1) if (m := ANSWER.search(s[-1])) else None) for s in steps]
    table = pa.table(
        {
            "prompt": pa.array(problems, pa.large_string()),
            "steps": pa.array(steps, pa.list_(pa.large_string())),
            "step_labels": pa.array(labels, pa.list_(pa.int64())),
            "outcome": pa.array([int(lab[-1] == CORRECT) for lab in labels], pa.int64()),
            "final_answer": pa.array(finals, pa.string()),
            "synthetic": pa.array([True] * len(parsed), pa.bool_()),
            "candidate": pa.array([0] * len(parsed), pa.int32()),
            "origin_line": pa.array(records.line),
        }
    )
    return table, records

