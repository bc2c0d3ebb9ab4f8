"""Drift statistics (PSI, KS, accuracy drop) against hand-computed and analytic values, and the decision."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ks_2samp, norm

from rewardline.retraining import drift


def test_psi_is_zero_for_the_reference_itself():
    x = np.random.default_rng(0).normal(size=1000)
    assert drift.psi(x, x) == pytest.approx(0.0, abs=1e-12)


def test_psi_by_hand_when_every_fresh_value_falls_in_the_top_bin():
    reference = np.arange(100.0)  # deciles: 10 values per bin
    actual = np.full(20, 1000.0)
    eps = 1e-4
    expected = 9 * (eps - 0.1) * math.log(eps / 0.1) + (1 - 0.1) * math.log(1 / 0.1)
    assert drift.psi(reference, actual, bins=10, eps=eps) == pytest.approx(expected, rel=1e-12)


def test_psi_of_a_mean_shift_approaches_the_jeffreys_divergence():
    # For N(0,1) vs N(d,1), PSI -> sum (a-e) ln(a/e) -> Jeffreys divergence d^2 as bins get fine;
    # 10 quantile bins capture most of it.
    rng = np.random.default_rng(1)
    value = drift.psi(rng.normal(size=200_000), rng.normal(0.5, 1.0, size=200_000), bins=10)
    assert 0.2 < value < 0.25


def test_ks_matches_scipy_and_the_analytic_value():
    rng = np.random.default_rng(2)
    ref, act = rng.normal(size=20_000), rng.normal(0.5, 1.0, size=20_000)
    statistic, pvalue = drift.ks(ref, act)
    assert statistic == pytest.approx(ks_2samp(act, ref).statistic)
    assert statistic == pytest.approx(2 * norm.cdf(0.25) - 1, abs=0.02)  # sup|Phi(x) - Phi(x - 0.5)|
    assert pvalue < 1e-10
    assert math.isnan(drift.ks([], act)[0]) and math.isnan(drift.psi([], act))


def test_measure_counts_pairs_without_tied_labels():
    credit = np.array([1.0, 0.0, 1.0, np.nan, 0.5])
    report = drift.measure(np.zeros(10), np.ones(4), pair_credit=credit, reference_accuracy=0.8)
    assert report.n_pairs == 4 and report.batch_accuracy == pytest.approx(0.625)
    assert report.accuracy_drop == pytest.approx(0.175)
    assert report.to_dict()["accuracy_drop"] == pytest.approx(0.175)


def _report(psi: float = 0.0, ks: float = 0.0, n_pairs: int = 100, batch_accuracy: float = 0.7):
    return drift.DriftReport(n_samples=50, n_reference=50, psi=psi, ks=ks, ks_pvalue=1.0, reward_mean=0.0,
                             reference_mean=0.0, n_pairs=n_pairs, batch_accuracy=batch_accuracy,
                             reference_accuracy=0.7)


def test_decide_names_every_crossed_threshold():
    t = drift.Thresholds(psi=0.25, ks=0.2, accuracy_drop=0.05, min_pairs=20)
    assert drift.decide(_report(), t) == drift.Decision(False, [])
    assert drift.decide(_report(psi=0.25, ks=0.2, batch_accuracy=0.65), t).retrain is False  # strictly greater
    crossed = drift.decide(_report(psi=0.3, ks=0.25, batch_accuracy=0.6), t)
    assert crossed.retrain and [r.split()[0] for r in crossed.reasons] == ["psi", "ks", "accuracy"]
    few_pairs = drift.decide(_report(n_pairs=10, batch_accuracy=0.1), t)
    assert few_pairs.retrain is False  # an accuracy drop on too few pairs does not count
    unlabelled = drift.decide(_report(n_pairs=0, batch_accuracy=float("nan")), t)
    assert unlabelled.retrain is False
    assert drift.decide(_report(), t, force=True) == drift.Decision(True, ["forced"])
