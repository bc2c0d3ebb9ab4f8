"""Grouped Bradley-Terry loss with soft labels, margin and reward centering.

A batch holds ``N`` scored sequences (every unique (prompt, response) once) and ``M``
comparisons between them, given as index pairs ``(a_i, b_i)`` into the rewards. For a
comparison with soft label ``p_i = P(a preferred)``, optional margin ``m_i`` and weight
``w_i``::

    Δ_i  = r[a_i] - r[b_i]
    ℓ_i  = -[ p_i · log σ(Δ_i - m_i) + (1 - p_i) · log σ(-Δ_i + m_i) ]       (soft-label BT)
         = BCEWithLogits(Δ_i - m_i, target = p_i)
    c_i  = c · (r[a_i] + r[b_i])²                                            (reward centering)

    loss = Σ_i w_i · (ℓ_i + c_i) / W

``W`` is the normaliser, by default ``Σ_i w_i``; training passes the total weight of the
whole *global* batch (all micro-batches and all ranks) so that gradient accumulation and
DDP give exactly the weighted mean over the global batch.

Weights (:func:`comparison_weights`): ``"prompt"`` gives each of the ``C`` comparisons of
one prompt ``w = 1 / C`` (InstructGPT's ``1 / C(K, 2)`` when all pairs of the K responses
are present), so each prompt counts once; ``"comparison"`` gives ``w = 1``.

Accuracy counts comparisons with ``p ≠ 0.5`` (ties excluded) whose ``Δ`` has the sign the
label says: ``Δ > 0`` when ``p > 0.5``, ``Δ < 0`` when ``p < 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

WEIGHTINGS = ("prompt", "comparison")


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, differentiable
    weighted_sum: torch.Tensor  # Σ w·(ℓ + c), detached
    weight_sum: torch.Tensor  # Σ w, detached
    correct: torch.Tensor  # number of correctly ordered non-tie comparisons
    counted: torch.Tensor  # number of non-tie comparisons


def bt_loss(
    rewards: torch.Tensor,
    idx_a: torch.Tensor,
    idx_b: torch.Tensor,
    label: torch.Tensor,
    weight: torch.Tensor | None = None,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
    normalizer: float | torch.Tensor | None = None,
) -> LossOutput:
    """Soft-label Bradley-Terry loss over the comparisons ``(idx_a, idx_b)`` of ``rewards``.

    ``loss = Σ w·(-[p log σ(Δ-m) + (1-p) log σ(m-Δ)] + c·(r_a+r_b)²) / W`` with
    ``Δ = r_a - r_b`` and ``W = normalizer`` (default ``Σ w``). See the module docstring.
    """
    rewards = rewards.float()
    r_a, r_b = rewards[idx_a], rewards[idx_b]
    delta = r_a - r_b
    label = label.to(delta)
    logits = delta - margin.to(delta) if margin is not None else delta
    per = F.binary_cross_entropy_with_logits(logits, label, reduction="none")
    if center_coef:
        per = per + center_coef * (r_a + r_b) ** 2
    w = torch.ones_like(per) if weight is None else weight.to(per)
    weighted = (w * per).sum()
    denom = w.sum().clamp_min(1e-12) if normalizer is None else normalizer
    with torch.no_grad():
        decided = label != 0.5
        right = ((delta > 0) == (label > 0.5)) & (delta != 0) & decided
    return LossOutput(
        loss=weighted / denom,
        weighted_sum=weighted.detach(),
        weight_sum=w.sum().detach(),
        correct=right.sum(),
        counted=decided.sum(),
    )


def comparison_weights(group_sizes: np.ndarray, weighting: str) -> np.ndarray:
    """Per-comparison weights for groups of ``group_sizes`` comparisons, laid out group by
    group: ``1 / C`` each for ``"prompt"``, ``1`` for ``"comparison"``."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    sizes = np.asarray(group_sizes, dtype=np.int64)
    if weighting == "comparison":
        return np.ones(int(sizes.sum()), dtype=np.float32)
    return np.repeat(1.0 / np.maximum(sizes, 1), sizes).astype(np.float32)
