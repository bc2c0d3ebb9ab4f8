"""benchmarks/bench_calibration.py: the win_prob map fitted on the train anchor comparisons recovers a known
``q = Φ(a·Δ + b)`` and reports the held-out NLL of the map and of the unfitted ``Φ(Δ)``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from conftest import load_benchmark
from scipy.special import ndtr

calib = load_benchmark("bench_calibration")


def _comparisons(n: int, slope: float, offset: float, seed: int) -> SimpleNamespace:
    """Anchor comparisons whose soft labels are exactly ``Φ(slope·Δ + offset)``."""
    rng = np.random.default_rng(seed)
    reward, anchor_reward = rng.normal(0.0, 0.5, n), rng.normal(0.0, 0.5, n)
    return SimpleNamespace(reward=reward, anchor_reward=anchor_reward,
                           label=ndtr(slope * (reward - anchor_reward) + offset))


def test_the_train_fitted_map_recovers_slope_and_offset_and_beats_the_unfitted_reading_held_out():
    train, held = _comparisons(4000, 2.0, -0.3, seed=0), _comparisons(500, 2.0, -0.3, seed=1)
    fitted = calib.fit_map_on_train(train, held, "probit")
    assert abs(fitted["slope"] - 2.0) < 0.02 and abs(fitted["offset"] + 0.3) < 0.02, fitted
    assert fitted["n_train_anchor"] == 4000
    assert fitted["nll_map"] < fitted["nll_unfitted"] - 0.005  # the unfitted Φ(Δ) is too flat and too high
    q = fitted["cdf"](fitted["slope"] * (held.reward - held.anchor_reward) + fitted["offset"])
    assert np.max(np.abs(q - held.label)) < 0.01


def test_a_map_with_nothing_to_correct_stays_the_identity():
    train, held = _comparisons(4000, 1.0, 0.0, seed=2), _comparisons(500, 1.0, 0.0, seed=3)
    fitted = calib.fit_map_on_train(train, held, "probit")
    assert abs(fitted["slope"] - 1.0) < 0.02 and abs(fitted["offset"]) < 0.02
    assert abs(fitted["nll_map"] - fitted["nll_unfitted"]) < 1e-3
