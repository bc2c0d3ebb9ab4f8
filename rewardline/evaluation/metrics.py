"""Pairwise accuracy of a reward model and bootstrap confidence intervals resampled by prompt.

Pure NumPy: inputs are per-pair arrays (the rows of a ``PAIRS`` table, :mod:`rewardline.data.schema`)
and the model's rewards ``r_a``, ``r_b`` for the two responses of each pair.

Definitions (``p`` = ``label`` = share of votes preferring response a, ``Δ = r_a − r_b``)
-----------------------------------------------------------------------------------------
* Majority label: a wins if ``p > 0.5``, b wins if ``p < 0.5`` (the contract orients pairs so
  that ``p ≥ 0.5``, but either orientation is accepted); ``p == 0.5`` (within ``TIE_TOL``) is a
  *tie*: excluded from accuracy and counted as ``ties_excluded``.
* Hard credit of a non-tie pair: ``1[Δ > 0]`` if a wins, ``1[Δ < 0]`` if b wins, and ``0.5``
  when ``Δ == 0`` (the model has no preference: half credit, like a coin flip).
* Pairwise accuracy = mean hard credit over non-tie pairs.
* Agreement-aware (soft) accuracy = mean over *all* pairs of
  ``p·1[Δ > 0] + (1 − p)·1[Δ < 0] + 0.5·1[Δ == 0]``: the expected accuracy against one
  annotator's vote drawn with probability ``p``. Its ceiling is ``mean(max(p, 1 − p))``, not 1.

Bootstrap by prompt
-------------------
Pairs of one prompt are correlated, so resampling units are prompts. For ``B`` resamples, the
prompts are drawn ``P`` times with replacement (``counts``: a ``(B, P)`` multinomial matrix of
how often each prompt was drawn) and a resample's accuracy is the ratio

    acc_b = Σ_j counts[b, j] · S_j / Σ_j counts[b, j] · N_j

with ``S_j`` the summed credit and ``N_j`` the number of non-tie pairs of prompt ``j``
(``np.bincount`` per prompt). No loop over pairs or resamples. The CI is the percentile
interval ``[q_{α/2}, q_{1−α/2}]`` of the ``acc_b``. Prompts whose pairs are all ties carry no
credit and are left out of the draw (``P`` = prompts with at least one counted pair). The paired
bootstrap (:func:`paired_bootstrap_difference`) applies the *same* ``counts`` to the challenger's
and the champion's credits and takes percentiles of ``acc_b(challenger) − acc_b(champion)``.

Power of the champion comparison (:func:`non_inferiority_power`)
----------------------------------------------------------------
Per counted pair ``D_i = credit_challenger − credit_champion`` ∈ {−1, −½, 0, ½, 1}; the
*discordance* is ``d = mean(D²)`` (for 0/1 credits: the share of pairs where exactly one model
is right). For two models of equal quality ``E[D] = 0`` and ``Var(D) = d``, so the standard error
of the accuracy difference over ``n`` pairs is ``se = sqrt(deff · d / n)``, with the design effect
``deff = se_bootstrap² / (Var_pair(D) / n)`` of the prompt clustering (1 without a bootstrap).
With ``z = z_{1−α/2} + z_{power}`` (α = 1 − confidence; 1.96 + 0.84 = 2.80 at 95 % / 80 %):

* minimum detectable difference ``mdd = z · se``: the smallest margin δ that an equal-quality
  challenger passes (CI low ≥ −δ) with probability ``power``;
* pairs a conclusive answer at margin δ needs: ``n_δ = ⌈z² · deff · d / δ²⌉`` (= ``n·(mdd/δ)²``).

Verdict at margin δ: *worse* when the CI's upper end ``< −δ``, *non-inferior* when its lower end
``≥ −δ``, *inconclusive* otherwise (not shown worse, not shown non-inferior).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import ndtri

#: |p − 0.5| below this is a tie (labels are float32).
TIE_TOL = 1e-6
#: Label for pairs whose category is null.
NO_CATEGORY = "(none)"
#: Largest bootstrap counts matrix held at once (resamples × prompts entries, int64: 32 MiB).
MAX_COUNT_CELLS = 1 << 22


def _as_float(x: np.ndarray | list) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def tie_mask(label: np.ndarray) -> np.ndarray:
    """``True`` where the label is a tie, ``|p − 0.5| ≤ TIE_TOL``."""
    return np.abs(_as_float(label) - 0.5) <= TIE_TOL


def hard_credit(reward_a: np.ndarray, reward_b: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per-pair credit against the majority label; NaN for tied labels.

    credit = 1[Δ > 0] if p > 0.5, 1[Δ < 0] if p < 0.5, 0.5 if Δ == 0, NaN if p == 0.5.
    """
    delta = _as_float(reward_a) - _as_float(reward_b)
    p = _as_float(label)
    winner_sign = np.sign(p - 0.5)  # +1: a wins, −1: b wins
    credit = 0.5 * (1.0 + np.sign(delta) * winner_sign)  # 1, 0, or 0.5 when Δ == 0
    return np.where(tie_mask(p), np.nan, credit)


def soft_credit(reward_a: np.ndarray, reward_b: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per-pair expected credit under the soft label: p·1[Δ>0] + (1−p)·1[Δ<0] + 0.5·1[Δ==0]."""
    delta = _as_float(reward_a) - _as_float(reward_b)
    p = _as_float(label)
    return np.where(delta > 0, p, np.where(delta < 0, 1.0 - p, 0.5))


def _nanmean(x: np.ndarray) -> float:
    valid = ~np.isnan(x)
    return float(x[valid].mean()) if valid.any() else float("nan")


@dataclass(frozen=True)
class Accuracy:
    """Pairwise accuracy with its prompt-bootstrap percentile interval."""

    accuracy: float  # mean hard credit over non-tie pairs (NaN when there are none)
    ci_low: float
    ci_high: float
    n_pairs: int  # non-tie pairs counted
    n_prompts: int  # prompts with at least one counted pair
    ties_excluded: int

    def to_dict(self) -> dict:
        return asdict(self)


def pairwise_accuracy(reward_a: np.ndarray, reward_b: np.ndarray, label: np.ndarray) -> float:
    """Mean hard credit over non-tie pairs (see module docstring); NaN when every pair is a tie."""
    return _nanmean(hard_credit(reward_a, reward_b, label))


def agreement_aware_accuracy(reward_a: np.ndarray, reward_b: np.ndarray, label: np.ndarray) -> float:
    """Mean over all pairs of p·1[Δ>0] + (1−p)·1[Δ<0] + 0.5·1[Δ==0]; NaN for no pairs."""
    credit = soft_credit(reward_a, reward_b, label)
    return float(credit.mean()) if credit.size else float("nan")


def prompt_codes(prompt_ids: np.ndarray | list) -> tuple[np.ndarray, int]:
    """Integer code per pair for its prompt (0..P−1) and the number of prompts P."""
    uniques, codes = np.unique(np.asarray(prompt_ids, dtype=object).astype(str), return_inverse=True)
    return codes.ravel(), len(uniques)


def _draw_counts(rng: np.random.Generator, n_prompts: int, samples: int) -> np.ndarray:
    if n_prompts == 0:
        return np.zeros((samples, 0), dtype=np.int64)
    return rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=samples)


def bootstrap_counts(n_prompts: int, samples: int, seed: int) -> np.ndarray:
    """``(samples, n_prompts)`` matrix: how often each prompt is drawn in each resample.

    Each row is Multinomial(n_prompts, uniform) = drawing ``n_prompts`` prompts with replacement.
    """
    return _draw_counts(np.random.default_rng(seed), n_prompts, samples)


def _per_prompt(credit: np.ndarray, codes: np.ndarray, n_prompts: int) -> tuple[np.ndarray, np.ndarray]:
    """(S_j, N_j): summed credit and number of counted (non-NaN) pairs per prompt."""
    valid = ~np.isnan(credit)
    sums = np.bincount(codes[valid], weights=credit[valid], minlength=n_prompts)
    ns = np.bincount(codes[valid], minlength=n_prompts).astype(np.float64)
    return sums, ns


def _resampled_means(sums: np.ndarray, ns: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """acc_b = counts[b] · S / counts[b] · N; NaN where a resample has no counted pair."""
    num = counts @ sums
    den = counts @ ns
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _bootstrap_means(
    sums: list[np.ndarray], ns: np.ndarray, samples: int, seed: int, max_cells: int = MAX_COUNT_CELLS
) -> list[np.ndarray]:
    """acc_b for each credit vector in ``sums``, all on the same resamples (those of ``bootstrap_counts``).

    The counts matrix is drawn in row chunks of at most ``max_cells`` entries, so memory stays
    bounded for large test sets; the rows are the same as one :func:`bootstrap_counts` call.
    """
    rng = np.random.default_rng(seed)
    out = [np.empty(samples) for _ in sums]
    rows = max(1, max_cells // max(len(ns), 1))
    for start in range(0, samples, rows):
        counts = _draw_counts(rng, len(ns), min(rows, samples - start))
        for acc, s in zip(out, sums, strict=True):
            acc[start : start + len(counts)] = _resampled_means(s, ns, counts)
    return out


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1.0 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(
    credit: np.ndarray,
    prompt_ids: np.ndarray | list,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile CI of the mean of ``credit`` (NaN entries ignored), resampling prompts with replacement."""
    credit = _as_float(credit)
    codes, n_prompts = prompt_codes(prompt_ids)
    sums, ns = _per_prompt(credit, codes, n_prompts)
    used = ns > 0  # prompts without counted pairs change nothing but the draw: drop them
    (means,) = _bootstrap_means([sums[used]], ns[used], samples, seed)
    return _percentiles(means, confidence)


def accuracy_with_ci(
    reward_a: np.ndarray,
    reward_b: np.ndarray,
    label: np.ndarray,
    prompt_ids: np.ndarray | list,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Accuracy:
    """Pairwise accuracy over non-tie pairs with a prompt-bootstrap percentile CI."""
    credit = hard_credit(reward_a, reward_b, label)
    valid = ~np.isnan(credit)
    low, high = bootstrap_ci(credit, prompt_ids, samples, seed, confidence)
    prompts = np.asarray(prompt_ids, dtype=object)[valid]
    return Accuracy(
        accuracy=_nanmean(credit),
        ci_low=low,
        ci_high=high,
        n_pairs=int(valid.sum()),
        n_prompts=len(set(prompts.tolist())),
        ties_excluded=int((~valid).sum()),
    )


def accuracy_by_category(
    reward_a: np.ndarray,
    reward_b: np.ndarray,
    label: np.ndarray,
    prompt_ids: np.ndarray | list,
    categories: np.ndarray | list,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Accuracy]:
    """:func:`accuracy_with_ci` within each category (null → ``NO_CATEGORY``), resampling that category's prompts."""
    cats = np.array([NO_CATEGORY if c is None else str(c) for c in categories], dtype=object)
    prompt_ids = np.asarray(prompt_ids, dtype=object)
    ra, rb, p = _as_float(reward_a), _as_float(reward_b), _as_float(label)
    out: dict[str, Accuracy] = {}
    for cat in sorted(set(cats.tolist())):
        m = cats == cat
        out[cat] = accuracy_with_ci(ra[m], rb[m], p[m], prompt_ids[m], samples, seed, confidence)
    return out


@dataclass(frozen=True)
class PairedDifference:
    """challenger − champion accuracy on the same pairs, with a paired prompt-bootstrap CI."""

    challenger: float
    champion: float
    difference: float
    ci_low: float
    ci_high: float
    n_pairs: int = 0  # counted (non-tie) pairs
    discordance: float = float("nan")  # mean(D²), D = credit(challenger) − credit(champion)
    design_effect: float = 1.0  # bootstrap variance / pair-level variance of the mean difference

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NonInferiorityPower:
    """Power analysis and verdict of the champion comparison at margin δ (module docstring)."""

    verdict: str  # "worse" | "inconclusive" | "non-inferior"
    delta: float
    power: float
    n_pairs: int
    min_detectable_difference: float  # mdd = z · se
    pairs_needed: int | None  # ⌈z² · deff · d / δ²⌉; None: none suffices (δ = 0, d > 0)

    def to_dict(self) -> dict:
        return asdict(self)


def non_inferiority_power(n_pairs: int, discordance: float, delta: float, confidence: float = 0.95,
                          power: float = 0.8, design_effect: float = 1.0) -> tuple[float, int | None]:
    """``(mdd, n_δ)``: ``mdd = (z_{1−α/2} + z_power)·sqrt(deff·d/n)``, ``n_δ = ⌈(z_{1−α/2} + z_power)²·deff·d/δ²⌉``."""
    z = float(ndtri(1 - (1 - confidence) / 2) + ndtri(power))
    variance = max(design_effect, 0.0) * max(discordance, 0.0)
    mdd = z * math.sqrt(variance / n_pairs) if n_pairs > 0 else float("inf")
    needed = math.ceil(z * z * variance / delta**2) if delta > 0 else (0 if variance == 0 else None)  # None: no n
    return mdd, needed


def champion_verdict(diff: PairedDifference, delta: float, confidence: float = 0.95,
                     power: float = 0.8) -> NonInferiorityPower:
    """Worse / inconclusive / non-inferior at margin δ, with the power numbers (module docstring)."""
    if diff.ci_high < -delta:
        verdict = "worse"
    elif diff.ci_low >= -delta:
        verdict = "non-inferior"
    else:
        verdict = "inconclusive"
    mdd, needed = non_inferiority_power(diff.n_pairs, diff.discordance, delta, confidence, power, diff.design_effect)
    return NonInferiorityPower(verdict, delta, power, diff.n_pairs, mdd, needed)


def paired_bootstrap_difference(
    challenger_a: np.ndarray,
    challenger_b: np.ndarray,
    champion_a: np.ndarray,
    champion_b: np.ndarray,
    label: np.ndarray,
    prompt_ids: np.ndarray | list,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedDifference:
    """Accuracy difference challenger − champion; both are scored on every resample with the same counts.

    diff_b = acc_b(challenger) − acc_b(champion); CI = percentiles [α/2, 1 − α/2] of diff_b.
    Ties in the labels are excluded from both (the same pairs count for both models).
    """
    c1 = hard_credit(challenger_a, challenger_b, label)
    c0 = hard_credit(champion_a, champion_b, label)
    codes, n_prompts = prompt_codes(prompt_ids)
    s1, ns = _per_prompt(c1, codes, n_prompts)
    s0, _ = _per_prompt(c0, codes, n_prompts)
    used = ns > 0
    m1, m0 = _bootstrap_means([s1[used], s0[used]], ns[used], samples, seed)
    diff = m1 - m0
    low, high = _percentiles(diff, confidence)
    acc1, acc0 = _nanmean(c1), _nanmean(c0)
    paired = (c1 - c0)[~np.isnan(c1)]
    n = int(paired.size)
    discordance = float(np.mean(paired**2)) if n else float("nan")
    pair_var = float(np.var(paired)) / n if n else 0.0  # Var_pair(D) / n
    boot = diff[~np.isnan(diff)]
    deff = float(np.var(boot)) / pair_var if pair_var > 0 and boot.size > 1 else 1.0
    return PairedDifference(challenger=acc1, champion=acc0, difference=acc1 - acc0, ci_low=low, ci_high=high,
                            n_pairs=n, discordance=discordance, design_effect=deff)
