"""Temperature scaling of pairwise preference probabilities and calibration metrics.

A reward model turns a pair into the preference probability ``P(a ≻ b) = σ((r_a − r_b) / T)``
with one temperature ``T > 0``, fitted on the val split and stored with the model.

Definitions (``Δ = r_a − r_b``, ``z = Δ / T``, prediction ``q = σ(z)``, target ``y`` in [0, 1])
---------------------------------------------------------------------------------------------
* Pairwise NLL (soft targets allowed):
  ``NLL = −mean[y·log q + (1 − y)·log(1 − q)] = mean[y·softplus(−z) + (1 − y)·softplus(z)]``
  (computed from ``z`` with ``np.logaddexp``, so it is finite for any ``z``).
* Temperature: ``T = exp(argmin_{s ∈ [−5, 5]} NLL(Δ / e^s, p))`` on val, by bounded
  ``scipy.optimize.minimize_scalar`` over ``s = log T``. The NLL does not depend on the pair's
  orientation (``σ(−z) = 1 − σ(z)``), so it is fitted on the pairs as stored. With no val pair,
  or all ``Δ == 0`` (nothing to scale), ``T = 1``.
* Random orientation: the stored pairs have ``p ≥ 0.5``, so every target would be ≥ 0.5 and the
  reliability diagram would only use its upper half. Each pair is flipped with probability 1/2
  (seeded): flipped pairs have ``Δ → −Δ`` and ``y = 1 − p``, the others ``y = p``.
  The same orientation is used before and after scaling.
* ECE with ``n_bins = 15`` equal-width bins of the prediction over [0, 1]: bin ``k`` holds the
  predictions with ``k/15 ≤ q < (k+1)/15`` (bin 14 also takes ``q = 1``), i.e.
  ``k = min(⌊15·q⌋, 14)``. With ``n_k`` comparisons in bin ``k`` out of ``N``,
  ``ECE = Σ_k (n_k / N)·|mean_k(y) − mean_k(q)|`` over non-empty bins;
  ``MCE = max_k |mean_k(y) − mean_k(q)|`` over non-empty bins.
  (``sklearn.calibration.calibration_curve`` is not used: it accepts only binary ``y`` and
  drops empty bins without returning their counts; the bins here are a few ``np.bincount``.)
* Brier score: ``mean[(q − y)²]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit

N_BINS = 15
LOG_T_BOUNDS = (-5.0, 5.0)


def preference_probability(reward_a: np.ndarray, reward_b: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P(a ≻ b) = σ((r_a − r_b) / T)."""
    return expit((np.asarray(reward_a, dtype=np.float64) - np.asarray(reward_b, dtype=np.float64)) / temperature)


def pairwise_nll(logits: np.ndarray, target: np.ndarray) -> float:
    """mean[y·softplus(−z) + (1 − y)·softplus(z)] = −mean[y·log σ(z) + (1 − y)·log(1 − σ(z))]; NaN if empty."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if z.size == 0:
        return float("nan")
    return float(np.mean(y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)))


def fit_temperature(delta: np.ndarray, label: np.ndarray) -> float:
    """T = exp(argmin_{s ∈ [−5, 5]} NLL(Δ·e^{−s}, p)); 1.0 when there is nothing to fit."""
    delta = np.asarray(delta, dtype=np.float64)
    label = np.asarray(label, dtype=np.float64)
    if delta.size == 0 or not np.any(delta != 0):
        return 1.0
    result = minimize_scalar(
        lambda s: pairwise_nll(delta * np.exp(-s), label),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def random_orientation(delta: np.ndarray, label: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flip each pair with probability 1/2: returns (±Δ, p or 1 − p)."""
    delta = np.asarray(delta, dtype=np.float64)
    label = np.asarray(label, dtype=np.float64)
    flip = np.random.default_rng(seed).random(delta.shape[0]) < 0.5
    return np.where(flip, -delta, delta), np.where(flip, 1.0 - label, label)


@dataclass(frozen=True)
class CalibrationMetrics:
    """ECE / MCE / Brier / NLL of predictions ``q`` against targets ``y``, with the reliability bins."""

    ece: float
    mce: float
    brier: float
    nll: float
    n: int
    bin_count: list[int] = field(default_factory=list)  # n_k, all n_bins bins
    bin_confidence: list[float | None] = field(default_factory=list)  # mean_k(q), None for empty bins
    bin_observed: list[float | None] = field(default_factory=list)  # mean_k(y), None for empty bins

    def summary(self) -> dict[str, float | int]:
        return {"ece": self.ece, "mce": self.mce, "brier": self.brier, "nll": self.nll, "n": self.n}


def calibration_metrics(logits: np.ndarray, target: np.ndarray, n_bins: int = N_BINS) -> CalibrationMetrics:
    """ECE, MCE (``n_bins`` equal-width bins of q = σ(z) over [0, 1]), Brier and NLL; see the module docstring."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    q = expit(z)
    n = int(q.size)
    if n == 0:
        nan = float("nan")
        return CalibrationMetrics(nan, nan, nan, nan, 0, [0] * n_bins, [None] * n_bins, [None] * n_bins)
    k = np.minimum((q * n_bins).astype(np.int64), n_bins - 1)  # k = min(⌊n_bins·q⌋, n_bins − 1)
    counts = np.bincount(k, minlength=n_bins)
    sum_q = np.bincount(k, weights=q, minlength=n_bins)
    sum_y = np.bincount(k, weights=y, minlength=n_bins)
    filled = counts > 0
    mean_q = np.divide(sum_q, counts, out=np.zeros(n_bins), where=filled)
    mean_y = np.divide(sum_y, counts, out=np.zeros(n_bins), where=filled)
    gap = np.abs(mean_y - mean_q)
    return CalibrationMetrics(
        ece=float(np.sum(counts / n * gap)),
        mce=float(gap[filled].max()),
        brier=float(np.mean((q - y) ** 2)),
        nll=pairwise_nll(z, y),
        n=n,
        bin_count=counts.astype(int).tolist(),
        bin_confidence=[float(v) if f else None for v, f in zip(mean_q, filled, strict=True)],
        bin_observed=[float(v) if f else None for v, f in zip(mean_y, filled, strict=True)],
    )


@dataclass(frozen=True)
class CalibrationReport:
    """The fitted temperature and the test metrics before (T = 1) and after scaling."""

    temperature: float
    raw: CalibrationMetrics
    calibrated: CalibrationMetrics


def calibrate(
    val_delta: np.ndarray,
    val_label: np.ndarray,
    test_delta: np.ndarray,
    test_label: np.ndarray,
    seed: int = 0,
    n_bins: int = N_BINS,
) -> CalibrationReport:
    """Fit T on val; on test in a random orientation (seeded) report metrics of σ(Δ) and σ(Δ/T)."""
    temperature = fit_temperature(val_delta, val_label)
    delta, target = random_orientation(test_delta, test_label, seed)
    return CalibrationReport(
        temperature=temperature,
        raw=calibration_metrics(delta, target, n_bins),
        calibrated=calibration_metrics(delta / temperature, target, n_bins),
    )


def reward_stats(rewards: np.ndarray) -> tuple[float, float]:
    """(mean, population std) of rewards, for normalised scores (r − mean) / std; (0, 1) when empty."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.size == 0:
        return 0.0, 1.0
    return float(r.mean()), float(r.std())
