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

**Sampling noise: a prompt-level permutation test.** The rule-of-thumb thresholds assume
large independent samples. Rewards are not independent: responses to one prompt share most
of their reward (intraclass correlation ρ ≈ 0.93 for the tiny test model), so a batch of n
samples from P prompts carries about n / (1 + (k − 1)·ρ) ≈ P independent values (k = n / P),
and a batch of 24 prompts against a 48-prompt reference has a no-drift PSI of ≈ 0.4 on
average (docs/retraining.md, "Drift under sampling noise"): above 0.25 by chance alone. So
each statistic T ∈ {PSI, KS} also gets a p-value under the null "the batch's prompts and the
reference's prompts are exchangeable" (no drift): the pooled prompt groups (all responses to
one prompt stay together) are split R times at random into a batch of the batch's number of
prompts and a reference of the rest, T*_r is recomputed each time, and

    p = (1 + #{r : T*_r ≥ T}) / (1 + R).

Without prompt ids every sample is its own group (an ordinary permutation test).

:func:`decide` turns them into a retrain decision with the thresholds of ``params.yaml: retrain``:
PSI or KS counts when it crosses its threshold (a material shift) *and* its permutation
p-value is ≤ ``alpha`` (not sampling noise).
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


def ks_statistic(reference: np.ndarray, actual: np.ndarray) -> float:
    """sup_x |F_a(x) − F_e(x)| of two non-empty samples (the statistic of :func:`ks`, without SciPy)."""
    e, a = np.sort(np.asarray(reference, np.float64)), np.sort(np.asarray(actual, np.float64))
    x = np.concatenate([e, a])
    return float(np.max(np.abs(np.searchsorted(a, x, side="right") / a.size
                               - np.searchsorted(e, x, side="right") / e.size)))


def permutation_pvalues(reference: np.ndarray, actual: np.ndarray, reference_groups: np.ndarray | None = None,
                        groups: np.ndarray | None = None, bins: int = 10, eps: float = 1e-4,
                        permutations: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Permutation p-values (PSI, KS) of ``actual`` vs ``reference`` with whole groups (prompts) exchanged.

    The groups of both samples are pooled (a group never spans the two); each of the
    ``permutations`` rounds draws as many groups as ``actual`` has for a pseudo-batch, the rest
    is the pseudo-reference; p = (1 + #{T* ≥ T}) / (1 + R). ``None`` groups: one per sample.
    NaN for an empty sample or ``permutations`` 0. A batch of one prompt is tested too: its pseudo-batches are single
    prompts of the pool, so p says whether its rewards stand out from those of a typical prompt (≥ 1/(1 + groups in
    the pool), so a small pool is never significant); a threshold alone would always fire, as one prompt's rewards
    bunch together and are far from the spread of many.
    """
    reference, actual = np.asarray(reference, np.float64), np.asarray(actual, np.float64)
    ref_groups = np.arange(reference.size) if reference_groups is None else np.asarray(reference_groups)
    act_groups = np.arange(actual.size) if groups is None else np.asarray(groups)
    if len(ref_groups) != reference.size or len(act_groups) != actual.size:
        raise ValueError("groups must have one entry per sample")
    _, ref_codes = np.unique(ref_groups.astype(str), return_inverse=True)
    _, act_codes = np.unique(act_groups.astype(str), return_inverse=True)
    n_ref, n_act = int(ref_codes.max(initial=-1)) + 1, int(act_codes.max(initial=-1)) + 1
    if permutations <= 0 or n_ref < 1 or n_act < 1:
        return float("nan"), float("nan")
    values = np.concatenate([reference, actual])
    codes = np.concatenate([ref_codes, act_codes + n_ref])  # group ids of the pool
    observed = psi(reference, actual, bins, eps), ks_statistic(reference, actual)
    rng = np.random.default_rng(seed)
    exceed = np.zeros(2)
    for _ in range(permutations):
        in_batch = np.zeros(n_ref + n_act, bool)
        in_batch[rng.choice(n_ref + n_act, size=n_act, replace=False)] = True
        mask = in_batch[codes]
        e, a = values[~mask], values[mask]
        exceed += [psi(e, a, bins, eps) >= observed[0], ks_statistic(e, a) >= observed[1]]
    p_psi, p_ks = (1.0 + exceed) / (1.0 + permutations)
    return float(p_psi), float(p_ks)


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
    n_prompts: int = 0  # distinct prompts of the fresh samples (groups of the permutation test)
    n_reference_prompts: int = 0
    psi_pvalue: float = float("nan")  # prompt-level permutation p-values (NaN: not tested)
    ks_perm_pvalue: float = float("nan")
    best_of_n: dict | None = None  # the champion's best-of-N on the samples when they carry gold (cycle.fresh_bon)

    @property
    def accuracy_drop(self) -> float:
        """reference_accuracy − batch_accuracy (NaN when either is unknown)."""
        return self.reference_accuracy - self.batch_accuracy

    def to_dict(self) -> dict:
        return {**asdict(self), "accuracy_drop": self.accuracy_drop}


def measure(reference: np.ndarray, rewards: np.ndarray, bins: int = 10, eps: float = 1e-4,
            pair_credit: np.ndarray | None = None, reference_accuracy: float = float("nan"),
            reference_groups: np.ndarray | None = None, groups: np.ndarray | None = None,
            permutations: int = 1000, seed: int = 0) -> DriftReport:
    """PSI and KS of ``rewards`` vs ``reference`` with their prompt-level permutation p-values
    (:func:`permutation_pvalues`); accuracy from per-pair hard credit (NaN = tied label)."""
    statistic, pvalue = ks(reference, rewards)
    p_psi, p_ks = (permutation_pvalues(reference, rewards, reference_groups, groups, bins, eps, permutations, seed)
                   if len(reference) and len(rewards) else (float("nan"), float("nan")))
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
        n_prompts=len(set(map(str, groups))) if groups is not None else int(len(rewards)),
        n_reference_prompts=(len(set(map(str, reference_groups))) if reference_groups is not None
                             else int(len(reference))),
        psi_pvalue=p_psi,
        ks_perm_pvalue=p_ks,
    )


@dataclass
class Thresholds:
    """Retrain when any measured value crosses its threshold (strictly greater); PSI and KS only
    when their permutation p-value is also ≤ ``alpha`` (or was not computed: NaN)."""

    psi: float = 0.25
    ks: float = 0.2
    accuracy_drop: float = 0.05
    min_pairs: int = 20  # fewer labelled pairs: the accuracy drop is not used
    alpha: float = 0.05  # significance level of the PSI / KS permutation tests (1.0: threshold alone)


@dataclass
class Decision:
    retrain: bool
    reasons: list[str] = field(default_factory=list)  # each crossed threshold, or "forced"
    within_noise: list[str] = field(default_factory=list)  # crossed, but p > alpha: not counted

    def to_dict(self) -> dict:
        return asdict(self)


def decide(report: DriftReport, thresholds: Thresholds, force: bool = False) -> Decision:
    """Retrain when forced, PSI > psi or KS > ks with permutation p ≤ alpha, or (with ≥ min_pairs
    labelled pairs) drop > accuracy_drop. A crossing with p > alpha goes to ``within_noise``."""
    reasons = ["forced"] if force else []
    noise: list[str] = []
    for name, value, threshold, p in (("psi", report.psi, thresholds.psi, report.psi_pvalue),
                                      ("ks", report.ks, thresholds.ks, report.ks_perm_pvalue)):
        if math.isnan(value) or value <= threshold:
            continue
        if math.isnan(p):
            reasons.append(f"{name} {value:.4f} > {threshold}")
        elif p <= thresholds.alpha:
            reasons.append(f"{name} {value:.4f} > {threshold} (permutation p {p:.4f} <= {thresholds.alpha})")
        else:
            noise.append(f"{name} {value:.4f} > {threshold} but permutation p {p:.4f} > {thresholds.alpha}")
    drop = report.accuracy_drop
    if report.n_pairs >= thresholds.min_pairs and not math.isnan(drop) and drop > thresholds.accuracy_drop:
        reasons.append(f"accuracy drop {drop:.4f} > {thresholds.accuracy_drop}")
    return Decision(retrain=bool(reasons), reasons=reasons, within_noise=noise)
