"""PRM evaluation: AUROC, step metrics, first-error localisation and best-of-N (random pick, majority vote
with ties, oracle, PRM pick with ties) against hand-computed values; the gates and the report."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from rewardline.evaluation.process import (
    PrmConfig,
    auroc,
    best_of_n,
    first_error,
    step_level,
    write_prm_report,
)

CFG = PrmConfig(bootstrap_samples=50)


def test_auroc_is_the_share_of_correctly_ordered_pairs():
    scores, positive = np.array([0.9, 0.4, 0.6, 0.1]), np.array([1, 1, 0, 0])
    assert auroc(scores, positive) == pytest.approx(3 / 4)  # (0.9>0.6, 0.9>0.1, 0.4>0.1; 0.4<0.6)
    assert auroc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5  # ties count one half
    assert np.isnan(auroc(np.array([0.5]), np.array([1])))


def test_step_level_uses_labelled_scored_steps_only():
    scores = [np.array([0.9, 0.2, np.nan]), np.array([0.8, 0.7])]
    labels = [[1, -1, -1], [1, None]]  # the nan step and the unknown label are left out
    m = step_level(scores, labels, ["p1", "p2"], CFG)
    assert m["steps_labelled"] == 3 and m["steps_incorrect"] == 1
    assert m["step_auroc"] == 1.0 and m["step_accuracy"] == 1.0 and m["step_f1"] == 1.0


def test_first_error_localisation():
    scores = [np.array([0.9, 0.3, 0.2]), np.array([0.4, 0.9, 0.1]), np.array([0.9, 0.8]), np.array([0.9, 0.4])]
    labels = [[1, -1, -1], [1, -1, -1], [1, 1], [1, 1]]
    m = first_error(scores, labels)
    assert (m["first_error_accuracy"], m["first_error_solutions"]) == (0.5, 2)  # 2nd flags step 0, too early
    assert (m["no_error_accuracy"], m["no_error_solutions"]) == (0.5, 2)  # 4th raises a false alarm
    assert m["first_error_f1"] == pytest.approx(0.5)


def test_best_of_n_against_hand_values():
    # problem a: outcomes 1,0,0,1 answers 5,7,7,5 (tie 2-2: majority = mean(1, 0) = 0.5); the PRM ties
    # candidates 0 and 1 at the top -> 0.5. Problem b: outcomes 0,0,1 answers 3,3,4 -> majority 0, PRM picks 2.
    table = pa.table({"prompt_id": ["a"] * 4 + ["b"] * 3, "outcome": pa.array([1, 0, 0, 1, 0, 0, 1], pa.int8()),
                      "final_answer": ["5", "7", "7", "5", "3", "3", "4"]})
    scores = [np.array([0.9]), np.array([0.95, 0.9]), np.array([0.2]), np.array([0.1]),
              np.array([0.3]), np.array([0.2]), np.array([0.8])]
    m = best_of_n(table, scores, CFG)
    assert m["bon_problems"] == 2 and m["bon_n"] == 3.5
    assert m["bon_random"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert m["bon_majority"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["bon_oracle"] == 1.0
    assert m["bon_min"] == pytest.approx((0.5 + 1) / 2)  # min: 0.9, 0.9, 0.2, 0.1 -> tie of candidates 0, 1
    assert m["bon_last"] == pytest.approx((0.5 + 1) / 2)  # last: 0.9, 0.9 -> the same tie
    assert m["bon_mean"] == pytest.approx((0.0 + 1) / 2)  # mean: candidate 1 (0.925) alone on top, incorrect
    assert m["bon_min_gain"] == pytest.approx(m["bon_min"] - m["bon_random"])
    assert m["bon_min_gain_ci_low"] <= m["bon_min_gain"] <= m["bon_min_gain_ci_high"]


def test_gates_and_report(tmp_path):
    metrics = {"step_auroc": 0.55, "bon_gain_ci_low": 0.01, "bon_random": 0.3, "bon_random_ci_low": 0.2,
               "bon_random_ci_high": 0.4}
    out = write_prm_report(metrics, tmp_path, PrmConfig(min_step_auroc=0.6, min_bon_gain=0.0))
    gates = json.loads((tmp_path / "gates.json").read_text())
    assert not gates["passed"] and not gates["gates"]["min_step_auroc"]["passed"]
    assert gates["gates"]["min_bon_gain"]["passed"] and out["gates_passed"] is False
    assert "Best-of-N" in (tmp_path / "report.md").read_text() and (tmp_path / "plots" / "bon_accuracy.png").exists()
