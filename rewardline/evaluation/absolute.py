"""Absolute calibration: does ``win_prob`` of a response match how often the judge prefers it to the anchor?

An *anchor comparison* is a test pair with exactly one side the prompt's anchor response
(``responses.is_anchor``, e.g. AlpacaEval's reference). For it, with ``r`` the model's reward of the
other response and ``p`` the pair's label oriented to that response (``y = p`` if it is side a,
``1 − p`` if side b). With ``pairs.anchor_labels: score`` (default) a judge's probability against the anchor
is the label itself, so ``y`` = the judge's P(response beats the anchor), averaged over judges (AlpacaEval:
``preference − 1``); otherwise ``y`` is the share of votes, 0/1 for one annotator:

* prediction ``q`` = ``win_prob`` of the non-anchor response:
  - ``method = "link"`` (an absolute-scale model, ``reward_config.link`` set: objectives
    ``thurstone`` / ``bt+thurstone``, trained on anchored utilities): ``q = Φ(r/√(1+s²))`` (probit) or its logit
    form, exactly what ``rewardline score`` and the registry pyfunc serve
    (:func:`rewardline.modeling.score.win_probability`, ``s = residual_sd``);
  - ``method = "difference"`` (an absolute-scale model trained on prompt-centred utilities,
    ``train.target_centre: prompt``, so ``anchored`` is False and its reward is relative to the prompt's typical
    response): the anchor is scored too, and ``q = Φ(Δ)`` with ``Δ = r − r_anchor`` (Thurstone Case V,
    P(i ≻ j) = Φ(u_i − u_j)). No residual correction: the two responses' errors share their prompt and largely
    cancel in Δ; on AlpacaEval the scale fitted on the val anchor comparisons was 0 for both centred models, and
    the independent-error correction Φ(Δ/√(1+2s²)) lowered the test Brier skill (docs/benchmarks.md, issue 14);
  - ``method = "logistic"`` (a BT model, rewards meaningful only up to a shift): one global logistic map
    ``q = σ(w·r + c)`` fitted by maximum likelihood to the *val* anchor comparisons (soft labels as
    weights: each comparison counts ``y`` times as a win and ``1 − y`` times as a loss), applied to test.
* ECE (15 equal-width bins, :func:`rewardline.evaluation.calibration.calibration_metrics`), Brier
  ``mean[(q − y)²]`` and log-loss ``−mean[y·log q + (1 − y)·log(1 − q)]`` (q clipped to [1e−12, 1 − 1e−12]),
  each with a percentile bootstrap CI resampling *prompts* (:mod:`rewardline.evaluation.metrics`); the
  ECE of a resample is recomputed from per-prompt bin sums (c_bj: draws of prompt j in resample b):
  ``ECE_b = Σ_k |Σ_j c_bj·Y_jk − Σ_j c_bj·Q_jk| / Σ_j c_bj·N_j``.
* Brier skill score ``BSS = 1 − Brier / Brier_ref`` with ``Brier_ref = mean[(ȳ − y)²]``, the Brier of
  always predicting the test base rate ``ȳ = mean(y)``: > 0 means better than the base rate.
* AUROC of ``q`` against the judge's decision ``1[y > 0.5]`` (``sklearn.metrics.roc_auc_score``) and the
  threshold table, over the *decided* comparisons (``y ≠ 0.5``): for τ in :data:`THRESHOLDS`, accept a
  response when ``q ≥ τ``; acceptance rate = accepted / decided, precision = judge-preferred among the
  accepted, recall = accepted among the judge-preferred (None when a denominator is 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import expit, logit

from rewardline.evaluation.calibration import N_BINS, CalibrationMetrics, calibration_metrics
from rewardline.evaluation.metrics import (
    TIE_TOL,
    _percentiles,
    bootstrap_ci,
    bootstrap_counts,
    prompt_codes,
)

THRESHOLDS = (0.3, 0.5, 0.7, 0.9)
PROB_CLIP = 1e-12
NO_ANCHORS = "no anchor comparisons in the test split"
#: The ``metrics.json`` key saying why ``ece_absolute`` was not measured (present only then): the gate's reason.
ABSOLUTE_UNMEASURED = "absolute_unmeasured_reason"


@dataclass(frozen=True)
class AnchorComparisons:
    """Per anchor comparison: its prompt, the reward of the non-anchor response, y = P(it beats the anchor),
    and the anchor's own reward when scored (``reward − anchor_reward``: the comparison's reward difference)."""

    prompt_ids: np.ndarray
    reward: np.ndarray
    label: np.ndarray
    anchor_reward: np.ndarray | None = None


def anchor_comparisons(pairs: pa.Table, reward_a: np.ndarray, reward_b: np.ndarray,
                       anchor_ids: pa.Array) -> AnchorComparisons:
    """The pairs with exactly one anchor side, oriented to the other response (module docstring)."""
    a_anchor = np.asarray(pc.is_in(pairs["response_a_id"], value_set=anchor_ids), bool)
    b_anchor = np.asarray(pc.is_in(pairs["response_b_id"], value_set=anchor_ids), bool)
    one = a_anchor ^ b_anchor
    label = pairs["label"].to_numpy(zero_copy_only=False).astype(np.float64)
    reward_a, reward_b = np.asarray(reward_a, np.float64), np.asarray(reward_b, np.float64)
    reward = np.where(a_anchor, reward_b, reward_a)
    anchor_reward = np.where(a_anchor, reward_a, reward_b)
    y = np.where(a_anchor, 1.0 - label, label)
    prompts = np.asarray(pairs["prompt_id"].to_pylist(), dtype=object)
    return AnchorComparisons(prompts[one], reward[one], y[one], anchor_reward[one])


def fit_logistic_map(reward: np.ndarray, label: np.ndarray) -> tuple[float, float] | None:
    """(w, c) of ``q = σ(w·r + c)`` by unpenalised weighted logistic regression; None without wins and losses."""
    from sklearn.linear_model import LogisticRegression

    wins, losses = float(np.sum(label)), float(np.sum(1.0 - label))
    if reward.size == 0 or wins <= 0 or losses <= 0:
        return None
    x = np.concatenate([reward, reward])[:, None]
    y = np.r_[np.ones(reward.size), np.zeros(reward.size)]
    model = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000)  # C = ∞: no penalty
    model.fit(x, y, sample_weight=np.r_[label, 1.0 - label])
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def _ece_ci(q: np.ndarray, y: np.ndarray, prompts: np.ndarray, samples: int, seed: int, confidence: float,
            n_bins: int = N_BINS) -> tuple[float, float]:
    """Prompt-bootstrap percentile CI of the ECE from per-prompt bin sums (module docstring)."""
    codes, n_prompts = prompt_codes(prompts)
    k = np.minimum((q * n_bins).astype(np.int64), n_bins - 1)
    cell = codes * n_bins + k
    size = n_prompts * n_bins
    sum_q = np.bincount(cell, weights=q, minlength=size).reshape(n_prompts, n_bins)
    sum_y = np.bincount(cell, weights=y, minlength=size).reshape(n_prompts, n_bins)
    n_j = np.bincount(codes, minlength=n_prompts).astype(np.float64)
    counts = bootstrap_counts(n_prompts, samples, seed).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ece = np.abs(counts @ sum_y - counts @ sum_q).sum(axis=1) / (counts @ n_j)
    return _percentiles(ece, confidence)


def threshold_table(q: np.ndarray, y: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS) -> list[dict]:
    """Per τ: acceptance rate, precision and recall of ``q ≥ τ`` against the judge, on decided comparisons."""
    decided = np.abs(y - 0.5) > TIE_TOL
    q, preferred = q[decided], y[decided] > 0.5
    rows = []
    for tau in thresholds:
        accept = q >= tau
        hits = int(np.sum(accept & preferred))
        rows.append({
            "threshold": tau,
            "acceptance_rate": float(accept.mean()) if q.size else None,
            "precision": hits / int(accept.sum()) if accept.any() else None,
            "recall": hits / int(preferred.sum()) if preferred.any() else None,
            "accepted": int(accept.sum()),
        })
    return rows


def _auroc(q: np.ndarray, y: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    decided = np.abs(y - 0.5) > TIE_TOL
    preferred = y[decided] > 0.5
    if preferred.all() or not preferred.any():
        return None
    return float(roc_auc_score(preferred, q[decided]))


def calibration_of(q: np.ndarray, y: np.ndarray, prompts: np.ndarray, samples: int = 1000, seed: int = 0,
                   confidence: float = 0.95) -> tuple[dict[str, Any], CalibrationMetrics]:
    """Every number of the module docstring for predictions ``q`` of targets ``y``, and the reliability bins."""
    q = np.clip(np.asarray(q, np.float64), PROB_CLIP, 1.0 - PROB_CLIP)
    y = np.asarray(y, np.float64)
    cal = calibration_metrics(logit(q), y)
    brier_items = (q - y) ** 2
    log_loss_items = -(y * np.log(q) + (1.0 - y) * np.log1p(-q))
    base_rate = float(y.mean())
    brier_ref = float(np.mean((base_rate - y) ** 2))
    boot = {"samples": samples, "seed": seed, "confidence": confidence}
    details = {
        "n": int(q.size),
        "n_prompts": int(np.unique(prompts).size),
        "ece": cal.ece,
        "ece_ci": list(_ece_ci(q, y, prompts, **boot)),
        "brier": cal.brier,
        "brier_ci": list(bootstrap_ci(brier_items, prompts, **boot)),
        "log_loss": cal.nll,
        "log_loss_ci": list(bootstrap_ci(log_loss_items, prompts, **boot)),
        "base_rate": base_rate,
        "brier_base_rate": brier_ref,
        "brier_skill": 1.0 - cal.brier / brier_ref if brier_ref > 0 else None,
        "auroc": _auroc(q, y),
        "thresholds": threshold_table(q, y),
    }
    return details, cal


@dataclass(frozen=True)
class AbsoluteCalibration:
    """``headline`` (the few ``metrics.json`` keys), ``details`` (``absolute_calibration.json``), bins or None."""

    headline: dict[str, Any]
    details: dict[str, Any]
    bins: CalibrationMetrics | None


def _skipped(reason: str, n: int, method: str) -> AbsoluteCalibration:
    headline = {"ece_absolute": None, "auroc_absolute": None, "brier_skill_absolute": None,
                "n_anchor_comparisons": n, ABSOLUTE_UNMEASURED: reason}
    return AbsoluteCalibration(headline, {"method": method, "skipped": reason, "n": n}, None)


def absolute_calibration(test: AnchorComparisons, val: AnchorComparisons, link: str | None, samples: int = 1000,
                         seed: int = 0, confidence: float = 0.95, residual_sd: float = 0.0,
                         anchored: bool | None = True) -> AbsoluteCalibration:
    """Absolute calibration of ``win_prob`` on the test anchor comparisons (``link`` set: as served,
    Φ(r/√(1+s²)) with the model's val ``residual_sd`` s; ``anchored`` False: of Φ(Δ), Δ = r − r_anchor),
    or of the val-fitted logistic map of the reward (``link`` None: a BT model); skipped, with the reason, when
    there is nothing to measure (module docstring)."""
    method = "logistic" if link is None else "difference" if anchored is False else "link"
    n = int(test.reward.size)
    if n == 0:
        return _skipped(NO_ANCHORS, 0, method)
    if link is not None:
        from rewardline.modeling.score import win_probability  # torch: only for an absolute-scale model

        scale = 0.0 if method == "difference" else residual_sd
        x = test.reward - test.anchor_reward if method == "difference" else test.reward
        q, fitted = win_probability(x, link, scale), {"link": link, "residual_sd": residual_sd, "scale": scale}
    else:
        coef = fit_logistic_map(val.reward, val.label)
        if coef is None:
            return _skipped("BT model: no val anchor comparisons with both outcomes to fit the logistic map", n,
                            method)
        q, fitted = expit(coef[0] * test.reward + coef[1]), {"slope": coef[0], "intercept": coef[1],
                                                              "fitted_on": "val", "n_fit": int(val.reward.size)}
    details, bins = calibration_of(q, test.label, test.prompt_ids, samples, seed, confidence)
    headline = {"ece_absolute": details["ece"], "auroc_absolute": details["auroc"],
                "brier_skill_absolute": details["brier_skill"], "n_anchor_comparisons": n}
    return AbsoluteCalibration(headline, {"method": method, **fitted, **details}, bins)
