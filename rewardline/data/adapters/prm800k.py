"""PRM800K (openai/prm800k, phase 1 and phase 2 JSONL) -> one human-labelled solution per record.

Record (the fields read; see the upstream README)::

    {"question": {"problem", "ground_truth_answer", "pre_generated_answer"?, ...},
     "label": {"steps": [{"completions": [{"text", "rating": -1 | 0 | 1 | null, "flagged"}],
                          "human_completion": {"text", ...} | null,
                          "chosen_completion": int | null}],
               "finish_reason": "solution" | "found_error" | "give_up" | "bad_problem"}, ...}

The solution is the labelled trajectory, as upstream reconstructs it: at each step the chosen
completion (its text, its rating as the step label), or, when none is chosen, the labeller's own
``human_completion`` (a +1 step by the phase-1 instructions; its rating when it has one). A step with
neither is where labelling stopped: its first completion rated -1 is the solution's last step (phase 2
stops at the first error, whose completions then hold the erroneous step and alternatives), and
without a -1 completion the solution ends before it. The solution also ends at its first -1 step.

Outcome: 0 when a step is -1 or ``finish_reason`` is ``found_error``, 1 when it is ``solution``, else
null (``give_up``, or no ``finish_reason``). Records with ``finish_reason`` ``bad_problem`` (the labeller
reported the problem as broken), or a value other than those four, are quarantined. Final answer: the text
after ``# Answer`` in the last step, else null.
``synthetic`` is false (human labels).
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data.adapters.jsonl import Records
from rewardline.data.adapters.native import combined, require
from rewardline.data.steps import CORRECT, INCORRECT

COMPLETION = pa.struct([("text", pa.string()), ("rating", pa.int64())])
STEP = pa.struct([("completions", pa.list_(COMPLETION)), ("human_completion", COMPLETION),
                  ("chosen_completion", pa.int64())])
QUESTION = pa.struct([("problem", pa.string()), ("ground_truth_answer", pa.string()),
                      ("pre_generated_answer", pa.string())])
LABEL = pa.struct([("steps", pa.list_(STEP)), ("finish_reason", pa.string())])
SCHEMA = pa.schema([("question", QUESTION), ("label", LABEL)])
FLEXIBLE: tuple[str, ...] = ()
ANSWER = re.compile(r"#\s*Answer\s*(.+?)\s*$", re.S)
FINISH_REASONS = ("solution", "found_error", "give_up", "bad_problem")  # upstream's values of label.finish_reason


def trajectory(steps: list[dict | None]) -> tuple[list[str | None], list[int | None]] | str:
    """(step texts, step labels) of the labelled trajectory, or why it cannot be read."""
    texts: list[str | None] = []
    labels: list[int | None] = []
    for k, step in enumerate(steps):
        step = step or {}
        completions = step.get("completions") or []
        chosen, human = step.get("chosen_completion"), step.get("human_completion")
        if chosen is not None:
            if not 0 <= chosen < len(completions) or completions[chosen] is None:
                return (f"label.steps[{k}].chosen_completion: {chosen} is not an index of its {len(completions)} "
                        "completion(s)")
            text, rating = completions[chosen]["text"], completions[chosen]["rating"]
        elif human is not None:
            text, rating = human["text"], CORRECT if human["rating"] is None else human["rating"]
        else:
            wrong = [c for c in completions if c is not None and c["rating"] == INCORRECT]
            if not wrong:
                break
            text, rating = wrong[0]["text"], INCORRECT
        texts.append(text)
        labels.append(rating)
        if rating == INCORRECT:
            break
    return texts, labels


def _unknown_finish(finish: pa.Array) -> tuple[np.ndarray, str, np.ndarray]:
    """A check (mask, field, reason per record) for a ``finish_reason`` that is none of :data:`FINISH_REASONS`
    (a typo would otherwise read as ``give_up``: an unknown outcome); a missing one passes."""
    known = pc.is_in(finish, value_set=pa.array(FINISH_REASONS))
    unknown = np.asarray(pc.and_(pc.is_valid(finish), pc.invert(known)), dtype=bool)
    values = finish.to_pylist() if unknown.any() else [None] * len(finish)
    reasons = np.array([None if v is None else f"label.finish_reason: {v[:60]!r} is not a finish reason; expected "
                        f"{', '.join(FINISH_REASONS[:-1])} or {FINISH_REASONS[-1]}" for v in values], dtype=object)
    return unknown, "label.finish_reason", reasons


def to_solutions(records: Records, options: object = None) -> tuple[pa.Table, Records]:
    """One solution per record: the labelled trajectory."""
    records = require(records, ["question", "label"])
    problem = pc.struct_field(combined(records.table, "question"), "problem")
    finish = pc.struct_field(combined(records.table, "label"), "finish_reason")
    records = records.reject_many([
        (pc.is_null(problem), "question.problem", "missing required field 'question.problem'"),
        (pc.fill_null(pc.equal(finish, "bad_problem"), False), "label.finish_reason",
         "label.finish_reason: 'bad_problem' (the labeller reported the problem as broken); expected solution, "
         "found_error or give_up"),
        _unknown_finish(finish),
    ])
    label = combined(records.table, "label")
    parsed = [trajectory(steps or []) for steps in pc.struct_field(label, "steps").to_pylist()]
    reasons = [p if isinstance(p, str) else None for p in parsed]
    checks = [(np.array([r == reason for r in reasons], dtype=bool), reason.split(":", 1)[0], reason)
              for reason in sorted({r for r in reasons if r})]
    keep = np.array([r is None for r in reasons], dtype=bool)
    records = records.reject_many(checks) if checks else records
    parsed = [p for p in parsed if not isinstance(p, str)]
    finish = pc.struct_field(label, "finish_reason").filter(pa.array(keep)).to_pylist()
    outcome = [0 if INCORRECT in labels or reason == "found_error" else 1 if reason == "solution" else None
               for (_, labels), reason in zip(parsed, finish, strict=True)]
    finals = [(m.group(1) if texts and texts[-1] and (m := ANSWER.search(texts[-1])) else None) for texts, _ in parsed]
    n = len(parsed)
    table = pa.table(
        {
            "prompt": pc.struct_field(combined(records.table, "question"), "problem").cast(pa.large_string()),
            "steps": pa.array([texts for texts, _ in parsed], pa.list_(pa.large_string())),
            "step_labels": pa.array([labels for _, labels in parsed], pa.list_(pa.int64())),
            "outcome": pa.array(outcome, pa.int64()),
            "final_answer": pa.array(finals, pa.string()),
            "synthetic": pa.array(np.zeros(n, bool)),
            "candidate": pa.array(np.zeros(n, np.int32)),
            "origin_line": pa.array(records.line),
        }
    )
    return table, records
