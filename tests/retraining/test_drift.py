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


def test_ks_statistic_matches_scipy():
    rng = np.random.default_rng(3)
    ref, act = rng.normal(size=300), rng.normal(0.2, 1.3, size=77)
    assert drift.ks_statistic(ref, act) == pytest.approx(ks_2samp(act, ref).statistic, abs=1e-12)


def _clustered(rng: np.random.Generator, prompts: int, per_prompt: int, shift: float = 0.0) -> tuple:
    """Rewards that share most of their variance within a prompt (ICC = 1 / (1 + 0.3²) ≈ 0.92)."""
    effect = rng.normal(shift, 1.0, size=prompts)
    values = np.repeat(effect, per_prompt) + rng.normal(0.0, 0.3, size=prompts * per_prompt)
    return values, np.repeat(np.arange(prompts), per_prompt)


def test_prompt_clustered_null_crosses_the_psi_threshold_but_the_permutation_test_holds_its_level():
    """Without drift, a 24-prompt batch against a 48-prompt reference crosses PSI 0.25 most of the time;
    the prompt-level permutation test rejects at about its level, the per-sample one far more often."""
    rng = np.random.default_rng(4)
    crossed = grouped_rejects = iid_rejects = 0
    trials = 60
    for t in range(trials):
        ref, ref_groups = _clustered(rng, 48, 5)
        act, act_groups = _clustered(rng, 24, 4)
        report = drift.measure(ref, act, reference_groups=ref_groups, groups=act_groups + 1000, permutations=200,
                               seed=t)
        crossed += report.psi > 0.25
        grouped_rejects += report.psi_pvalue <= 0.05
        iid_rejects += drift.permutation_pvalues(ref, act, permutations=200, seed=t)[0] <= 0.05
        assert (report.n_prompts, report.n_reference_prompts) == (24, 48)
    assert crossed / trials > 0.5
    assert grouped_rejects / trials <= 0.15  # level 0.05, with the binomial noise of 60 trials
    assert iid_rejects / trials > 0.3


def test_a_shift_of_the_prompt_effects_is_significant_and_retrains():
    rng = np.random.default_rng(5)
    ref, ref_groups = _clustered(rng, 48, 5)
    act, act_groups = _clustered(rng, 24, 4, shift=2.0)
    report = drift.measure(ref, act, reference_groups=ref_groups, groups=act_groups + 1000, permutations=200)
    assert report.psi_pvalue == report.ks_perm_pvalue == pytest.approx(1 / 201)  # no permutation as extreme
    decision = drift.decide(report, drift.Thresholds())
    assert decision.retrain and [r.split()[0] for r in decision.reasons] == ["psi", "ks"]


def test_permutation_pvalue_by_hand_for_two_groups_a_side():
    # Groups {0}, {1} reference and {10}, {11} batch: 6 ways to pick the batch's 2 of 4 groups; the
    # observed split is the most extreme for KS (= 1) together with its mirror image.
    ref, act = np.array([0.0, 1.0]), np.array([10.0, 11.0])
    _, p_ks = drift.permutation_pvalues(ref, act, permutations=3000, seed=0)
    assert p_ks == pytest.approx((1 + 3000 * 2 / 6) / 3001, abs=0.03)
    assert all(math.isnan(p) for p in drift.permutation_pvalues(ref, act, permutations=0))
    assert all(math.isnan(p) for p in drift.permutation_pvalues(ref, act[:0]))  # an empty batch: not testable
    with pytest.raises(ValueError, match="one entry per sample"):
        drift.permutation_pvalues(ref, act, groups=np.array([1]))


def test_a_crossing_within_sampling_noise_is_reported_but_does_not_retrain():
    t = drift.Thresholds(psi=0.25, ks=0.2, accuracy_drop=0.05, min_pairs=20, alpha=0.05)
    noisy = _report(psi=0.84, ks=0.13)
    noisy.psi_pvalue, noisy.ks_perm_pvalue = 0.085, 0.78
    decision = drift.decide(noisy, t)
    assert decision.retrain is False and decision.reasons == []
    assert decision.within_noise == ["psi 0.8400 > 0.25 but permutation p 0.0850 > 0.05"]
    noisy.psi_pvalue = 0.01
    assert drift.decide(noisy, t).reasons == ["psi 0.8400 > 0.25 (permutation p 0.0100 <= 0.05)"]
    assert drift.decide(noisy, drift.Thresholds(alpha=0.005)).retrain is False


def test_a_batch_of_one_prompt_is_tested_against_single_prompts_of_the_reference():
    """Was: a batch of one prompt got no permutation p-value (NaN), so the thresholds alone decided, and one prompt's
    rewards, bunched together, always crossed them: even a batch that is one of the champion's own reference prompts
    was retrained on. Now its pseudo-batches are single prompts of the pool: a typical prompt is within noise; one
    whose rewards lie past every reference prompt's is drift by KS (PSI, ≈ 8 for any prompt whose rewards share a
    bin, cannot tell one prompt from another)."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(200), 4).astype(str)
    reference = rng.normal(size=200)[np.repeat(np.arange(200), 4)] + 0.1 * rng.normal(size=800)
    t = drift.Thresholds(psi=0.25, ks=0.2, accuracy_drop=0.05, min_pairs=20, alpha=0.05)
    own = drift.measure(reference, reference[:4], reference_groups=groups, groups=np.array(["x"] * 4))
    assert own.psi > t.psi and own.ks > t.ks  # the thresholds alone would retrain
    assert own.psi_pvalue > t.alpha and own.ks_perm_pvalue > t.alpha
    assert drift.decide(own, t).retrain is False and len(drift.decide(own, t).within_noise) == 2
    far = drift.measure(reference, reference.max() + 5 + 0.1 * rng.normal(size=4), reference_groups=groups,
                        groups=np.array(["x"] * 4))
    assert far.ks_perm_pvalue <= t.alpha < far.psi_pvalue
    decision = drift.decide(far, t)
    assert decision.retrain is True and [r.split()[0] for r in decision.reasons] == ["ks"]
