"""Tests for rewardline.evaluation.metrics and rewardline.evaluation.length_bias against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from rewardline.evaluation.length_bias import length_bias, length_spearman, unique_responses
from rewardline.evaluation.metrics import (
    NO_CATEGORY,
    _bootstrap_means,
    _per_prompt,
    _resampled_means,
    accuracy_by_category,
    accuracy_with_ci,
    agreement_aware_accuracy,
    bootstrap_ci,
    bootstrap_counts,
    hard_credit,
    paired_bootstrap_difference,
    pairwise_accuracy,
    prompt_codes,
    soft_credit,
)

# Five pairs, one of each kind:
#   Δ > 0, a wins (p = 1)          -> credit 1,   soft 1.0
#   Δ < 0, a wins (p = 0.75)       -> credit 0,   soft 0.25
#   Δ = 0, a wins (p = 0.6)        -> credit 0.5, soft 0.5
#   Δ > 0, tie label (p = 0.5)     -> excluded,   soft 0.5
#   Δ < 0, b wins (p = 0.25)       -> credit 1,   soft 0.75
RA = np.array([2.0, 0.0, 1.0, 3.0, 0.0])
RB = np.array([1.0, 1.0, 1.0, 0.0, 2.0])
P = np.array([1.0, 0.75, 0.6, 0.5, 0.25], dtype=np.float32)


def test_hard_and_soft_credit_by_hand():
    np.testing.assert_array_equal(hard_credit(RA, RB, P), [1.0, 0.0, 0.5, np.nan, 1.0])
    np.testing.assert_allclose(soft_credit(RA, RB, P), [1.0, 0.25, 0.5, 0.5, 0.75])


def test_accuracy_excludes_and_counts_ties():
    assert pairwise_accuracy(RA, RB, P) == pytest.approx(2.5 / 4)
    assert agreement_aware_accuracy(RA, RB, P) == pytest.approx(3.0 / 5)
    acc = accuracy_with_ci(RA, RB, P, ["p1", "p1", "p2", "p3", "p3"], samples=200)
    assert (acc.accuracy, acc.n_pairs, acc.ties_excluded, acc.n_prompts) == (0.625, 4, 1, 3)


def test_all_ties_is_nan_not_an_error():
    acc = accuracy_with_ci(RA[:2], RB[:2], [0.5, 0.5], ["p", "q"], samples=50)
    assert math.isnan(acc.accuracy) and math.isnan(acc.ci_low) and acc.ties_excluded == 2 and acc.n_pairs == 0


def test_bootstrap_counts_resample_prompts_with_replacement():
    counts = bootstrap_counts(7, 300, seed=3)
    assert counts.shape == (300, 7) and (counts.sum(axis=1) == 7).all()
    np.testing.assert_array_equal(counts, bootstrap_counts(7, 300, seed=3))  # seeded


def test_vectorised_resamples_equal_explicit_resampling():
    """acc_b from the counts matrix = accuracy of the pairs of the drawn prompts, pooled."""
    rng = np.random.default_rng(0)
    n = 60
    prompts = rng.integers(0, 9, n).astype(str)
    credit = rng.choice([0.0, 0.5, 1.0, np.nan], n)
    codes, n_prompts = prompt_codes(prompts)
    counts = bootstrap_counts(n_prompts, 25, seed=1)
    fast = _resampled_means(*_per_prompt(credit, codes, n_prompts), counts)
    for b in range(25):
        pooled = np.concatenate([np.repeat(credit[codes == j], counts[b, j]) for j in range(n_prompts)])
        assert fast[b] == pytest.approx(np.nanmean(pooled))


def test_bootstrap_ci_two_prompts_by_hand():
    """Prompt A: credits [1, 1]; prompt B: [0]. Resamples {A,A} -> 1, {A,B} -> 2/3, {B,B} -> 0 (1/4, 1/2, 1/4)."""
    credit, prompts = np.array([1.0, 1.0, 0.0]), ["A", "A", "B"]
    codes, n_prompts = prompt_codes(prompts)
    means = _resampled_means(*_per_prompt(credit, codes, n_prompts), bootstrap_counts(n_prompts, 4000, seed=0))
    values, freq = np.unique(np.round(means, 12), return_counts=True)
    np.testing.assert_allclose(values, [0.0, 2 / 3, 1.0])
    np.testing.assert_allclose(freq / 4000, [0.25, 0.5, 0.25], atol=0.03)
    assert bootstrap_ci(credit, prompts, samples=4000, seed=0) == (0.0, 1.0)


def test_single_prompt_ci_is_degenerate_and_ties_only_prompts_are_dropped():
    low, high = bootstrap_ci(np.array([1.0, 0.0, 1.0, np.nan]), ["A", "A", "A", "B"], samples=100)
    assert low == high == pytest.approx(2 / 3)


def test_accuracy_by_category_with_null_category():
    cats = ["x", "x", None, "x", None]
    by_cat = accuracy_by_category(RA, RB, P, ["p1", "p1", "p2", "p3", "p4"], cats, samples=100)
    assert set(by_cat) == {"x", NO_CATEGORY}
    assert by_cat["x"].accuracy == pytest.approx(0.5) and by_cat["x"].ties_excluded == 1
    assert by_cat[NO_CATEGORY].accuracy == pytest.approx(0.75) and by_cat[NO_CATEGORY].n_pairs == 2


def test_paired_bootstrap_by_hand():
    """Challenger credits A [1, 1], B [0]; champion A [0, 0], B [1]: diffs {A,A} 1, {A,B} 1/3, {B,B} −1."""
    prompts, label = ["A", "A", "B"], np.ones(3)
    challenger = (np.array([1.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]))
    champion = (challenger[1], challenger[0])
    d = paired_bootstrap_difference(*challenger, *champion, label, prompts, samples=4000, seed=0)
    assert (d.challenger, d.champion, d.difference) == pytest.approx((2 / 3, 1 / 3, 1 / 3))
    assert (d.ci_low, d.ci_high) == pytest.approx((-1.0, 1.0))


def test_paired_bootstrap_same_model_has_zero_width():
    rng = np.random.default_rng(2)
    ra, rb = rng.normal(size=40), rng.normal(size=40)
    d = paired_bootstrap_difference(ra, rb, ra, rb, np.ones(40), rng.integers(0, 8, 40).astype(str), samples=200)
    assert d.difference == d.ci_low == d.ci_high == 0.0


# ---------------------------------------------------------------- length bias


def test_length_bias_by_hand():
    la = np.array([10, 5, 7, 3, 8])
    lb = np.array([5, 10, 7, 9, 2])
    label = np.array([1.0, 0.75, 1.0, 0.5, 0.8])
    ra = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    rb = np.array([0.0, 0.0, 1.0, 1.0, 0.0])
    # decisive pairs (non-tie label, unequal lengths): 0, 1, 4
    #   model prefers longer: 1 (a longer, r_a > r_b), 0 (a shorter, r_a > r_b), 0.5 (Δ = 0)  -> 0.5
    #   labels prefer longer: 1, 0, 1                                                       -> 2/3
    # longer-wins credits: 1, 0, 0.5 (equal lengths), tie excluded, 1                       -> 0.625
    lbias = length_bias(ra, rb, la, lb, label)
    assert lbias.n_decisive_pairs == 3
    assert lbias.model_prefers_longer == pytest.approx(0.5)
    assert lbias.labels_prefer_longer == pytest.approx(2 / 3)
    assert lbias.length_bias == pytest.approx(-1 / 6)
    assert lbias.longer_wins_accuracy == pytest.approx(0.625)


def test_length_spearman_by_hand_and_undefined():
    # ranks (1, 2, 3) vs (3, 1, 2): Σd² = 6, ρ = 1 − 6·6 / (3·(9 − 1)) = −0.5
    assert length_spearman(np.array([1.0, 2.0, 3.0]), np.array([30, 10, 20])) == pytest.approx(-0.5)
    assert math.isnan(length_spearman(np.array([1.0, 1.0]), np.array([1, 2])))
    assert math.isnan(length_spearman(np.array([1.0]), np.array([1])))


def test_spearman_counts_each_response_once():
    ids_a, ids_b = ["r1", "r1", "r2"], ["r2", "r3", "r3"]
    rewards_a, rewards_b = np.array([3.0, 3.0, 1.0]), np.array([1.0, 2.0, 2.0])
    ids, rewards = unique_responses(ids_a, ids_b, rewards_a, rewards_b)
    assert ids.tolist() == ["r1", "r2", "r3"] and rewards.tolist() == [3.0, 1.0, 2.0]
    lengths_a, lengths_b = np.array([9, 9, 4]), np.array([4, 7, 7])
    lbias = length_bias(rewards_a, rewards_b, lengths_a, lengths_b, np.ones(3), ids_a, ids_b)
    assert lbias.length_spearman == pytest.approx(spearmanr([3.0, 1.0, 2.0], [9, 4, 7]).statistic)


def test_chunked_bootstrap_equals_one_counts_matrix():
    rng = np.random.default_rng(5)
    prompts = rng.integers(0, 11, 80).astype(str)
    credit = rng.choice([0.0, 1.0], 80)
    codes, n_prompts = prompt_codes(prompts)
    sums, ns = _per_prompt(credit, codes, n_prompts)
    (chunked,) = _bootstrap_means([sums], ns, samples=97, seed=9, max_cells=3 * n_prompts)  # chunks of 3 rows
    np.testing.assert_allclose(chunked, _resampled_means(sums, ns, bootstrap_counts(n_prompts, 97, seed=9)))
