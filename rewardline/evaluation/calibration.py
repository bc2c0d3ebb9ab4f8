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

When T is applied (:func:`calibrate`)
-------------------------------------
A temperature fitted on a small val split can make held-out calibration worse, so ``T̂`` is
applied only when val can vouch for it; otherwise ``T = 1`` and the report says why:

* val has at least ``min_pairs`` decided pairs (``p ≠ 0.5``; ``evaluate.min_calibration_pairs``);
* the val NLL gain ``G = NLL(Δ) − NLL(Δ/T̂)`` is clear: the lower end of its bootstrap interval
  is above 0 and ``G / NLL(Δ) ≥ min_gain`` (``evaluate.min_temperature_gain``).

Bootstrap: resampling units are prompts (pairs when no prompt ids are given), drawn with
replacement ``B`` times; a unit drawn ``c`` times gives each of its pairs the weight ``c``. For
each resample, ``G_b`` is the weighted gain at the fitted ``T̂`` and ``T_b`` the weighted NLL's
argmin over a grid of ``log T`` (``log T̂ ± 1.5`` in steps of 0.025), both vectorised as one
``weights @ per-pair-loss`` product. ECE on test gets the same kind of interval (test prompts,
raw and calibrated on the same resamples): per resample, the bin counts / sums are
``weights @ one-hot(bin)`` products. These are percentile intervals; the ECE of a resample is
biased upwards (each bin's ``|mean(y) − mean(q)|`` grows with the bin's noise), so for a
well-calibrated model the interval can lie above the point ECE: read it as the spread of the
ECE at this test size, not as a bias-corrected interval.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit

N_BINS = 15
LOG_T_BOUNDS = (-5.0, 5.0)
#: Bootstrap of T: the grid of log T around log T̂ (half width, step).
LOG_T_GRID = (1.5, 0.025)
#: Largest weights matrix (resamples × pairs) held at once.
MAX_WEIGHT_CELLS = 1 << 22


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
class TemperatureFit:
    """The temperature decision: what is applied, what was fitted, and why (module docstring)."""

    temperature: float  # applied: T̂ or 1.0
    applied: bool
    reason: str
    fitted: float  # T̂ on val (NaN: not fitted)
    ci_low: float  # bootstrap interval of T̂
    ci_high: float
    val_pairs: int  # decided val pairs
    val_nll_raw: float
    val_nll_scaled: float  # at T̂
    val_nll_gain_ci_low: float  # lower end of the interval of NLL(Δ) − NLL(Δ/T̂)

    def summary(self) -> dict[str, float | int | bool | str]:
        """``metrics.json`` keys: ``temperature_*`` and ``val_nll_*``."""
        d = asdict(self)
        return {"temperature": d.pop("temperature"), "temperature_applied": d.pop("applied"),
                "temperature_reason": d.pop("reason"), "temperature_fitted": d.pop("fitted"),
                "temperature_ci_low": d.pop("ci_low"), "temperature_ci_high": d.pop("ci_high"),
                "calibration_val_pairs": d.pop("val_pairs"), **d}


@dataclass(frozen=True)
class CalibrationReport:
    """The temperature decision and the test metrics before (T = 1) and after scaling, with ECE intervals."""

    temperature: float
    raw: CalibrationMetrics
    calibrated: CalibrationMetrics
    fit: TemperatureFit | None = None
    ece_raw_ci: tuple[float, float] = (float("nan"), float("nan"))
    ece_calibrated_ci: tuple[float, float] = (float("nan"), float("nan"))


def _resample_weights(units: np.ndarray | None, n: int, samples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield chunks of the ``(B, n)`` weight matrix: weight of pair ``i`` in resample ``b`` = how often its
    unit (prompt; the pair itself when ``units`` is None) was drawn, units drawn with replacement."""
    if units is None:
        codes, n_units = np.arange(n), n
    else:
        _, codes = np.unique(np.asarray(units, dtype=object).astype(str), return_inverse=True)
        codes, n_units = codes.ravel(), int(codes.max(initial=-1)) + 1
    rng = np.random.default_rng(seed)
    rows = max(1, MAX_WEIGHT_CELLS // max(n, n_units, 1))
    for start in range(0, samples, rows):
        b = min(rows, samples - start)
        counts = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=b) if n_units else np.zeros((b, 0))
        yield counts[:, codes].astype(np.float64)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _pair_nll(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-pair ``y·softplus(−z) + (1 − y)·softplus(z)`` (any shape, broadcast)."""
    return y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)


def fit_temperature_checked(delta: np.ndarray, label: np.ndarray, units: np.ndarray | None = None, *,
                            min_pairs: int = 0, min_gain: float = 0.0, samples: int = 1000, seed: int = 0,
                            confidence: float = 0.95) -> TemperatureFit:
    """Fit T̂ on val and apply it only when val vouches for it (module docstring); else T = 1 with the reason."""
    delta, label = np.asarray(delta, dtype=np.float64), np.asarray(label, dtype=np.float64)
    decided = int(np.sum(np.abs(label - 0.5) > 1e-6))
    nan = float("nan")
    raw_nll = pairwise_nll(delta, label)
    if decided < max(min_pairs, 1) or not np.any(delta != 0):
        why = (f"val has {decided} decided pairs < evaluate.min_calibration_pairs = {min_pairs}"
               if decided < max(min_pairs, 1) else "every val reward difference is 0")
        return TemperatureFit(1.0, False, why, nan, nan, nan, decided, raw_nll, raw_nll, nan)
    fitted = fit_temperature(delta, label)
    scaled_nll = pairwise_nll(delta / fitted, label)
    grid = np.log(fitted) + np.arange(-LOG_T_GRID[0], LOG_T_GRID[0] + 1e-9, LOG_T_GRID[1])
    per_grid = _pair_nll(delta[:, None] * np.exp(-grid)[None, :], label[:, None])  # (n, grid)
    gain_per_pair = _pair_nll(delta, label) - _pair_nll(delta / fitted, label)
    gains, temps = [], []
    for w in _resample_weights(units, delta.size, samples, seed):
        total = np.maximum(w.sum(axis=1), 1e-12)
        gains.append(w @ gain_per_pair / total)
        temps.append(np.exp(grid[np.argmin(w @ per_grid, axis=1)]))
    gain_low, _ = _interval(np.concatenate(gains), confidence)
    t_low, t_high = _interval(np.concatenate(temps), confidence)
    relative = (raw_nll - scaled_nll) / max(raw_nll, 1e-12)
    applied = gain_low > 0 and relative >= min_gain
    if applied:
        why = f"val NLL {raw_nll:.4f} → {scaled_nll:.4f} (gain CI low {gain_low:.4f} > 0, relative {relative:.3f})"
    elif gain_low <= 0:
        why = f"no clear val NLL gain: the {confidence:.0%} CI of the gain reaches {gain_low:.4f} ≤ 0"
    else:
        why = f"val NLL gain {relative:.3f} relative < evaluate.min_temperature_gain = {min_gain}"
    return TemperatureFit(fitted if applied else 1.0, bool(applied), why, fitted, t_low, t_high, decided,
                          raw_nll, scaled_nll, gain_low)


def ece_intervals(logits: np.ndarray, target: np.ndarray, temperature: float, units: np.ndarray | None = None,
                  samples: int = 1000, seed: int = 0, confidence: float = 0.95,
                  n_bins: int = N_BINS) -> tuple[tuple[float, float], tuple[float, float]]:
    """Bootstrap intervals of the ECE of σ(z) and of σ(z/T) (same resamples, by ``units``)."""
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if z.size == 0:
        return (float("nan"), float("nan")), (float("nan"), float("nan"))
    out = []
    for scale in (1.0, temperature):
        q = expit(z / scale)
        onehot = np.eye(n_bins)[np.minimum((q * n_bins).astype(np.int64), n_bins - 1)]  # (n, bins)
        eces = []
        for w in _resample_weights(units, z.size, samples, seed):
            counts, sum_q, sum_y = w @ onehot, w @ (onehot * q[:, None]), w @ (onehot * y[:, None])
            n = np.maximum(counts.sum(axis=1, keepdims=True), 1e-12)
            eces.append(np.sum(np.abs(sum_y - sum_q), axis=1) / n[:, 0])  # Σ_k n_k/N·|ȳ_k − q̄_k|
        out.append(_interval(np.concatenate(eces) if eces else np.array([]), confidence))
    return out[0], out[1]


def calibrate(
    val_delta: np.ndarray,
    val_label: np.ndarray,
    test_delta: np.ndarray,
    test_label: np.ndarray,
    seed: int = 0,
    n_bins: int = N_BINS,
    *,
    val_prompts: np.ndarray | None = None,
    test_prompts: np.ndarray | None = None,
    min_pairs: int = 0,
    min_gain: float = 0.0,
    samples: int = 1000,
    confidence: float = 0.95,
) -> CalibrationReport:
    """Decide T on val (:func:`fit_temperature_checked`); on test in a random orientation (seeded)
    report metrics of σ(Δ) and σ(Δ/T) with bootstrap intervals of their ECE (by test prompt)."""
    fit = fit_temperature_checked(val_delta, val_label, val_prompts, min_pairs=min_pairs, min_gain=min_gain,
                                  samples=samples, seed=seed, confidence=confidence)
    delta, target = random_orientation(test_delta, test_label, seed)
    raw_ci, cal_ci = ece_intervals(delta, target, fit.temperature, test_prompts, samples, seed, confidence, n_bins)
    return CalibrationReport(
        temperature=fit.temperature,
        raw=calibration_metrics(delta, target, n_bins),
        calibrated=calibration_metrics(delta / fit.temperature, target, n_bins),
        fit=fit,
        ece_raw_ci=raw_ci,
        ece_calibrated_ci=cal_ci,
    )


def reward_stats(rewards: np.ndarray) -> tuple[float, float]:
    """(mean, population std) of rewards, for normalised scores (r − mean) / std; (0, 1) when empty."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.size == 0:
        return 0.0, 1.0
    return float(r.mean()), float(r.std())
