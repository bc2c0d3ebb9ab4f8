"""rewardline.evaluation.calibration: hand-computed metrics, perfectly calibrated and over-confident scorers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.calibration import calibration_curve

from rewardline.evaluation.calibration import (
    N_BINS,
    calibrate,
    calibration_metrics,
    fit_temperature,
    pairwise_nll,
    preference_probability,
    random_orientation,
    reward_stats,
)


def test_preference_probability():
    np.testing.assert_allclose(preference_probability([2.0, 0.0], [0.0, 0.0], temperature=2.0), [expit(1.0), 0.5])


def test_nll_by_hand_soft_and_extreme():
    # z = 0: −log ½ = log 2 whatever the target; z = log 3, y = 1: −log ¾
    assert pairwise_nll(np.array([0.0]), np.array([0.7])) == pytest.approx(math.log(2))
    assert pairwise_nll(np.array([0.0, math.log(3)]), np.array([1.0, 1.0])) == pytest.approx(
        (math.log(2) - math.log(0.75)) / 2)
    assert pairwise_nll(np.array([-800.0]), np.array([1.0])) == pytest.approx(800.0)  # finite, no log(0)


def test_ece_mce_brier_nll_by_hand():
    # q = 0.1, 0.1 -> bin ⌊1.5⌋ = 1, targets 0, 1: |0.5 − 0.1| = 0.4
    # q = 0.9, 0.9 -> bin ⌊13.5⌋ = 13, targets 1, 1: |1 − 0.9| = 0.1
    q = np.array([0.1, 0.1, 0.9, 0.9])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    m = calibration_metrics(logit(q), y)
    assert m.ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert m.mce == pytest.approx(0.4)
    assert m.brier == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    assert m.nll == pytest.approx(-(3 * math.log(0.9) + math.log(0.1)) / 4)
    assert m.bin_count[1] == 2 and m.bin_count[13] == 2 and sum(m.bin_count) == 4 and len(m.bin_count) == N_BINS
    assert m.bin_observed[1] == pytest.approx(0.5) and m.bin_confidence[13] == pytest.approx(0.9)
    assert m.bin_observed[0] is None


def test_soft_targets_and_q_equal_one_goes_to_last_bin():
    m = calibration_metrics(np.array([800.0, 0.0]), np.array([0.8, 0.5]))
    assert m.bin_count[N_BINS - 1] == 1 and m.bin_count[7] == 1  # q = 1 -> bin 14; q = 0.5 -> ⌊7.5⌋ = 7
    assert m.ece == pytest.approx(0.5 * 0.2) and m.mce == pytest.approx(0.2)


def test_bins_match_sklearn_calibration_curve_for_binary_targets():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 2000)
    y = (rng.random(2000) < expit(z)).astype(float)
    m = calibration_metrics(z, y)
    prob_true, prob_pred = calibration_curve(y, expit(z), n_bins=N_BINS, strategy="uniform")
    filled = [k for k, c in enumerate(m.bin_count) if c]
    np.testing.assert_allclose([m.bin_observed[k] for k in filled], prob_true)
    np.testing.assert_allclose([m.bin_confidence[k] for k in filled], prob_pred)


def test_random_orientation_flips_half_consistently():
    delta, label = np.arange(1.0, 1001.0), np.full(1000, 0.8)
    d, y = random_orientation(delta, label, seed=4)
    flipped = d < 0
    np.testing.assert_array_equal(np.abs(d), delta)
    np.testing.assert_allclose(y, np.where(flipped, 0.2, 0.8))
    assert 0.45 < flipped.mean() < 0.55
    np.testing.assert_array_equal(d, random_orientation(delta, label, seed=4)[0])


def test_fit_temperature_recovers_the_generating_temperature():
    # soft labels p = σ(Δ / 2.5) exactly: the NLL is minimised where σ(Δ/T) = p, i.e. T = 2.5
    delta = np.linspace(0.1, 8, 200)
    assert fit_temperature(delta, expit(delta / 2.5)) == pytest.approx(2.5, rel=1e-4)


def test_fit_temperature_degenerate_inputs():
    assert fit_temperature(np.array([]), np.array([])) == 1.0
    assert fit_temperature(np.zeros(5), np.ones(5)) == 1.0


def _scorer_pairs(n: int, seed: int, overconfidence: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Pairs as the pipeline stores them: a = the sampled winner, label 1; Δ = overconfidence × true logit."""
    rng = np.random.default_rng(seed)
    true = rng.normal(0, 1.5, n)
    a_wins = rng.random(n) < expit(true)
    delta = np.where(a_wins, true, -true) * overconfidence
    return delta, np.ones(n)


def test_perfectly_calibrated_scorer_has_ece_near_zero():
    val_delta, val_label = _scorer_pairs(20_000, seed=1)
    test_delta, test_label = _scorer_pairs(20_000, seed=2)
    report = calibrate(val_delta, val_label, test_delta, test_label, seed=0)
    assert report.temperature == pytest.approx(1.0, abs=0.05)
    assert report.raw.ece < 0.015 and report.calibrated.ece < 0.015
    # soft labels equal to the predictions: every bin's mean target is its mean prediction
    delta = np.random.default_rng(3).normal(0, 2, 5000)
    exact = calibration_metrics(*random_orientation(delta, expit(delta), seed=0))
    assert exact.ece == pytest.approx(0.0, abs=1e-12)


def test_overconfident_scorer_ece_drops_after_temperature_scaling():
    val_delta, val_label = _scorer_pairs(20_000, seed=1, overconfidence=4.0)
    test_delta, test_label = _scorer_pairs(20_000, seed=2, overconfidence=4.0)
    report = calibrate(val_delta, val_label, test_delta, test_label, seed=0)
    assert report.temperature == pytest.approx(4.0, rel=0.1)
    assert report.raw.ece > 0.1
    assert report.calibrated.ece < 0.015
    assert report.calibrated.nll < report.raw.nll and report.calibrated.brier < report.raw.brier


def test_reward_stats():
    assert reward_stats(np.array([1.0, 3.0])) == (2.0, 1.0)
    assert reward_stats(np.array([])) == (0.0, 1.0)


def test_a_temperature_from_a_tiny_val_set_is_not_applied():
    # over-confident scorer, but val holds 40 decided pairs: T̂ is fitted and reported, T = 1 is kept
    val_delta, val_label = _scorer_pairs(40, seed=4, overconfidence=3.0)
    test_delta, test_label = _scorer_pairs(2000, seed=5, overconfidence=3.0)
    report = calibrate(val_delta, val_label, test_delta, test_label, min_pairs=100, min_gain=0.01, samples=200)
    assert report.temperature == 1.0 and report.fit is not None and not report.fit.applied
    assert "40 decided pairs < evaluate.min_calibration_pairs = 100" in report.fit.reason
    assert report.calibrated.ece == report.raw.ece


@pytest.mark.parametrize("seed", range(8))
def test_a_temperature_that_does_not_lower_val_nll_clearly_is_never_applied(seed):
    # small val sets of a calibrated scorer: whatever T̂ the noise gives, it is kept only if val NLL drops
    val_delta, val_label = _scorer_pairs(30 + 20 * seed, seed=10 + seed)
    prompts = np.arange(val_delta.size) // 3  # three pairs per prompt
    fit = calibrate(val_delta, val_label, *_scorer_pairs(200, seed=99), val_prompts=prompts, min_pairs=0,
                    min_gain=0.01, samples=300).fit
    scaled = pairwise_nll(val_delta / fit.temperature, val_label)
    assert scaled <= pairwise_nll(val_delta, val_label)  # never raises val NLL
    if fit.applied:
        assert fit.val_nll_gain_ci_low > 0 and fit.val_nll_scaled < 0.99 * fit.val_nll_raw
    else:
        assert fit.temperature == 1.0 and fit.reason


def test_an_overconfident_scorer_gets_its_temperature_with_intervals_by_prompt():
    val_delta, val_label = _scorer_pairs(2000, seed=1, overconfidence=4.0)
    test_delta, test_label = _scorer_pairs(2000, seed=2, overconfidence=4.0)
    prompts = np.arange(2000) // 4
    report = calibrate(val_delta, val_label, test_delta, test_label, val_prompts=prompts, test_prompts=prompts,
                       min_pairs=100, min_gain=0.01, samples=300)
    fit = report.fit
    assert fit.applied and fit.ci_low < 4.0 < fit.ci_high and fit.ci_low < fit.fitted < fit.ci_high
    assert fit.val_nll_gain_ci_low > 0 and fit.val_pairs == 2000
    raw_low, raw_high = report.ece_raw_ci
    cal_low, cal_high = report.ece_calibrated_ci
    assert raw_low <= report.raw.ece <= raw_high and cal_low < cal_high
    # (the ECE of a resample is biased upwards — |gap| of a noisier bin mean — so a small ECE can lie below its CI)
    assert cal_high < raw_low  # clearly better calibrated
    assert set(fit.summary()) >= {"temperature", "temperature_applied", "temperature_reason", "temperature_fitted",
                                  "temperature_ci_low", "temperature_ci_high", "val_nll_gain_ci_low"}
