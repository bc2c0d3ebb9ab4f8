"""The grouped soft-label Bradley-Terry loss against its formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rewardline.training.loss import bt_loss, comparison_weights


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_matches_formula_with_soft_labels_margin_centering_and_weights():
    r = torch.tensor([0.3, -1.2, 2.0, 0.5])
    a, b = torch.tensor([0, 2, 2, 3]), torch.tensor([1, 1, 0, 1])
    p = torch.tensor([1.0, 0.75, 0.6, 0.5])
    m = torch.tensor([0.0, 0.5, 0.2, 0.0])
    w = torch.tensor([1.0, 0.5, 0.5, 2.0])
    c = 0.1
    out = bt_loss(r, a, b, p, w, m, c)
    expected, total_w = 0.0, 0.0
    for i in range(4):
        ra, rb = r[a[i]].item(), r[b[i]].item()
        d = ra - rb
        li = -(p[i] * _logsig(d - m[i]) + (1 - p[i]) * _logsig(-d + m[i])).item()
        expected += w[i].item() * (li + c * (ra + rb) ** 2)
        total_w += w[i].item()
    assert out.loss.item() == pytest.approx(expected / total_w, rel=1e-5)


def test_hard_labels_reduce_to_minus_logsigmoid():
    r = torch.randn(10, requires_grad=True)
    a, b = torch.arange(0, 10, 2), torch.arange(1, 10, 2)
    out = bt_loss(r, a, b, torch.ones(5))
    ref = -F.logsigmoid(r[a] - r[b]).mean()
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-6)
    out.loss.backward()
    assert r.grad is not None and torch.isfinite(r.grad).all()


def test_half_label_at_equal_rewards_has_zero_gradient():
    r = torch.zeros(2, requires_grad=True)
    bt_loss(r, torch.tensor([0]), torch.tensor([1]), torch.tensor([0.5])).loss.backward()
    assert torch.allclose(r.grad, torch.zeros(2))


def test_centering_penalises_the_sum_only():
    r = torch.tensor([3.0, 3.0])
    base = bt_loss(r, torch.tensor([0]), torch.tensor([1]), torch.tensor([1.0])).loss
    cen = bt_loss(r, torch.tensor([0]), torch.tensor([1]), torch.tensor([1.0]), center_coef=0.01).loss
    assert (cen - base).item() == pytest.approx(0.01 * 36.0, rel=1e-5)


def test_prompt_weighting_makes_each_prompt_count_once():
    w = comparison_weights(np.array([6, 1, 3]), "prompt")
    assert w.shape == (10,)
    assert np.allclose([w[:6].sum(), w[6:7].sum(), w[7:].sum()], 1.0)
    assert np.allclose(comparison_weights(np.array([6, 1]), "comparison"), 1.0)
    with pytest.raises(ValueError):
        comparison_weights(np.array([1]), "nope")


def test_accuracy_excludes_ties_and_counts_sign_agreement():
    r = torch.tensor([1.0, 0.0, 2.0, 2.0])
    a, b = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 0, 3, 2])
    p = torch.tensor([1.0, 0.9, 0.8, 0.5])  # right, wrong, equal rewards (wrong), tie (excluded)
    out = bt_loss(r, a, b, p)
    assert out.counted.item() == 3 and out.correct.item() == 1


def test_micro_batches_with_global_normalizer_sum_to_the_full_batch_loss():
    torch.manual_seed(0)
    r = torch.randn(8)
    a, b = torch.tensor([0, 2, 4, 6, 0]), torch.tensor([1, 3, 5, 7, 3])
    p, w = torch.rand(5), torch.rand(5) + 0.1
    full = bt_loss(r, a, b, p, w).loss
    norm = w.sum()
    parts = bt_loss(r, a[:2], b[:2], p[:2], w[:2], normalizer=norm).loss + bt_loss(
        r, a[2:], b[2:], p[2:], w[2:], normalizer=norm
    ).loss
    assert parts.item() == pytest.approx(full.item(), rel=1e-6)
