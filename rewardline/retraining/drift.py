"""Drift of a reward model's inputs: reward-distribution shift and accuracy drop on fresh samples.

A reward model is trained on one policy's samples; as the policy improves its samples move
away from them. Three numbers say how far, each against the champion's own reference:

* **PSI**, the population stability index of the champion's rewards on the fresh samples
  (``a``) against its rewards on its test split at registration (``e``, the reference)::

      PSI = Σ_i (a_i − e_i) · ln(a_i / e_i)

  over ``bins`` quantile bins of the reference (each holds 1/bins of it), with both shares
  floored at ``eps`` so an empty bin costs a large but finite term. Rules of thumb:
  < 0.1 stable, 0.1–0.25 moderate, > 0.25 shifted. With n fresh and m reference samples
  the statistic is biased up by about (bins − 1)·(1/n + 1/m) even without a shift.
* **KS**, the two-sample Kolmogorov–Smirnov statistic ``sup_x |F_a(x) − F_e(x)|`` of the
  same two samples (:func:`scipy.stats.ks_2samp`), with its p-value.
* **Accuracy drop** = the champion's test accuracy − its accuracy on the fresh batch's
  labelled pairs (hard credit, tied labels excluded; :func:`rewardline.evaluation.metrics.pairwise_accuracy`).

:func:`decide` turns them into a retrain decision with the thresholds of ``params.yaml: retrain``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np


def psi(reference: np.ndarray, actual: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of ``actual`` against ``reference`` on quantile bins of the reference."""
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if reference.size == 0 or actual.size == 0:
        return float("nan")
    edges = np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1])  # bins − 1 interior edges
    e = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=bins) / reference.size
    a = np.bincount(np.searchsorted(edges, actual, side="right"), minlength=bins) / actual.size
    e, a = np.maximum(e, eps), np.maximum(a, eps)
    return float(np.sum((a - e) * np.log(a / e)))


def ks(reference: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic sup|F_a − F_e| and its p-value (NaN, NaN for an empty sample)."""
    from scipy.stats import ks_2samp

    if len(reference) == 0 or len(actual) == 0:
        return float("nan"), float("nan")
    result = ks_2samp(np.asarray(actual, np.float64), np.asarray(reference, np.float64))
    return float(result.statistic), float(result.pvalue)


@dataclass
class DriftReport:
    """Drift numbers of one fresh batch against the champion's reference."""

    n_samples: int  # fresh samples scored
    n_reference: int  # reference rewards
    psi: float
    ks: float
    ks_pvalue: float
    reward_mean: float  # mean raw reward of the fresh samples
    reference_mean: float
    n_pairs: int = 0  # labelled, non-tied pairs of the batch (0: unlabelled batch)
    batch_accuracy: float = float("nan")  # champion accuracy on them
    reference_accuracy: float = float("nan")  # champion test accuracy at registration

    @property
    def accuracy_drop(self) -> float:
        """reference_accuracy − batch_accuracy (NaN when either is unknown)."""
        return self.reference_accuracy - self.batch_accuracy

    def to_dict(self) -> dict:
        return {**asdict(self), "accuracy_drop": self.accuracy_drop}


def measure(reference: np.ndarray, rewards: np.ndarray, bins: int = 10, eps: float = 1e-4,
            pair_credit: np.ndarray | None = None, reference_accuracy: float = float("nan")) -> DriftReport:
    """PSI and KS of ``rewards`` vs ``reference``; accuracy from per-pair hard credit (NaN = tied label)."""
    statistic, pvalue = ks(reference, rewards)
    credit = np.asarray(pair_credit if pair_credit is not None else [], dtype=np.float64)
    counted = credit[~np.isnan(credit)]
    return DriftReport(
        n_samples=int(len(rewards)),
        n_reference=int(len(reference)),
        psi=psi(reference, rewards, bins, eps),
        ks=statistic,
        ks_pvalue=pvalue,
        reward_mean=float(np.mean(rewards)) if len(rewards) else float("nan"),
        reference_mean=float(np.mean(reference)) if len(reference) else float("nan"),
        n_pairs=int(counted.size),
        batch_accuracy=float(counted.mean()) if counted.size else float("nan"),
        reference_accuracy=float(reference_accuracy),
    )


@dataclass
class Thresholds:
    """Retrain when any measured value crosses its threshold (strictly greater)."""

    psi: float = 0.25
    ks: float = 0.2
    accuracy_drop: float = 0.05
    min_pairs: int = 20  # fewer labelled pairs: the accuracy drop is not used


@dataclass
class Decision:
    retrain: bool
    reasons: list[str] = field(default_factory=list)  # each crossed threshold, or "forced"

    def to_dict(self) -> dict:
        return asdict(self)


def decide(report: DriftReport, thresholds: Thresholds, force: bool = False) -> Decision:
    """Retrain when forced, PSI > psi, KS > ks, or (with ≥ min_pairs labelled pairs) drop > accuracy_drop."""
    reasons = ["forced"] if force else []
    if not math.isnan(report.psi) and report.psi > thresholds.psi:
        reasons.append(f"psi {report.psi:.4f} > {thresholds.psi}")
    if not math.isnan(report.ks) and report.ks > thresholds.ks:
        reasons.append(f"ks {report.ks:.4f} > {thresholds.ks}")
    drop = report.accuracy_drop
    if report.n_pairs >= thresholds.min_pairs and not math.isnan(drop) and drop > thresholds.accuracy_drop:
        reasons.append(f"accuracy drop {drop:.4f} > {thresholds.accuracy_drop}")
    return Decision(retrain=bool(reasons), reasons=reasons)
