"""benchmarks/bench_prm_cv.py: the fold assignment, the per-problem metrics and the pick rule (no training)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_benchmark

cv = load_benchmark("bench_prm_cv")


def test_folds_are_seeded_balanced_and_disjoint():
    fold = cv.fold_of(200, 3, seed=0)
    assert np.array_equal(fold, cv.fold_of(200, 3, seed=0))
    assert sorted(np.bincount(fold).tolist()) == [66, 67, 67]
    assert not np.array_equal(fold, cv.fold_of(200, 3, seed=1))
    assert not np.array_equal(fold, np.arange(200) % 3)  # permuted, not file order


def test_per_problem_best_random_and_pairs_with_ties():
    # problem a: scores 0.9 (wrong), 0.5 (right), 0.9 (right) -> top tie of wrong+right: best 1/2; random 2/3;
    # pairs (right, wrong): (0.5 vs 0.9) lose, (0.9 vs 0.9) tie -> 0.5 hits of 2
    # problem b: 0.2 (right), 0.1 (wrong) -> best 1, random 1/2, pairs 1 of 1
    reward = np.array([0.9, 0.5, 0.9, 0.2, 0.1])
    outcome = np.array([0.0, 1.0, 1.0, 1.0, 0.0])
    pp = cv.per_problem(reward, outcome, ["a", "a", "a", "b", "b"])
    assert pp["best"] == [0.5, 1.0] and pp["random"] == pytest.approx([2 / 3, 0.5])
    assert pp["pair_hits"] == [0.5, 1.0] and pp["pair_counts"] == [2, 1]
    s = cv.summary(pp)
    assert s["gain"] == pytest.approx(((0.5 - 2 / 3) + 0.5) / 2) and s["pair_accuracy"] == pytest.approx(1.5 / 3)


def _run(best, random, hits):
    return {"per_problem": {"best": best, "random": random}, "gain": float(np.mean(np.subtract(best, random))),
            "pair_accuracy": hits}


def test_pick_is_the_higher_mean_gain_then_pair_accuracy_then_first_listed():
    low, high = _run([0.0], [0.5], 0.9), _run([1.0], [0.5], 0.1)
    assert cv.combine({0: {1.0: low, 8.0: high}}, [1.0, 8.0], 1)["pick"] == 8.0
    assert cv.combine({0: {1.0: high, 8.0: low}}, [1.0, 8.0], 1)["pick"] == 1.0
    tie_a, tie_b = _run([1.0], [0.5], 0.4), _run([1.0], [0.5], 0.6)
    assert cv.combine({0: {1.0: tie_a, 8.0: tie_b}}, [1.0, 8.0], 1)["pick"] == 8.0
    assert cv.combine({0: {1.0: tie_a, 8.0: tie_a}}, [1.0, 8.0], 1)["pick"] == 1.0
