"""Evaluate a reward model from its scores: metrics, calibration, length bias, plots, gates.

This module never loads a model: the caller scores the test (and val) pairs, and optionally
a champion on the same test pairs, and passes the rewards in. It knows nothing of DVC,
Prefect or MLflow.

    test rewards ──> accuracy (+ CI by prompt), by category, agreement-aware accuracy
    val rewards  ──> temperature T (min val NLL), reward mean / std
    test rewards ──> ECE / MCE / Brier / NLL before and after T (random orientation)
    anchor pairs ──> absolute calibration of win_prob (ECE, Brier, log-loss, AUROC, thresholds)
    lengths      ──> length Spearman, longer-wins baseline, length bias
    champion     ──> paired bootstrap challenger − champion
                 ──> gates ──> metrics.json, gates.json, report.md, calibration.json,
                     reference_rewards.json, plots/

Outputs in ``out_dir``:
* ``metrics.json`` – every number below, plus ``gates`` ({name: value, threshold, op, passed, ...})
  and ``gates_passed``;
* ``gates.json``, ``report.md`` – the gate report (gates :data:`rewardline.evaluation.gates.EVALUATE_GATES`
  checked by :mod:`rewardline.gates`);
* ``calibration.json`` – ``temperature``, ``reward_mean``, ``reward_std`` (val): what the model
  must carry so that σ((r_a − r_b)/T) is calibrated and (r − mean)/std is normalised;
* ``reference_rewards.json`` – the raw rewards of the unique test responses (``rewards``) and their
  prompt ids (``prompt_ids``): the reference distribution that drift checks compare fresh policy
  samples against, grouped by prompt for the drift permutation test;
* ``absolute_calibration.json`` – the absolute calibration of ``win_prob`` on the test pairs against
  the prompts' anchor responses (:mod:`rewardline.evaluation.absolute`; ``skipped`` with the reason
  when there are none); ``metrics.json`` carries only its headline (``ece_absolute``,
  ``auroc_absolute``, ``brier_skill_absolute``, ``n_anchor_comparisons``);
* ``plots/`` – PNGs and their DVC plots data (:mod:`rewardline.evaluation.plots`).

The function returns the metrics dict and does not raise on failed gates: the caller calls
:func:`rewardline.gates.check` on it (or :func:`rewardline.gates.check_output` on ``out_dir``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from rewardline.config import Section
from rewardline.data.tables import json_safe, write_json
from rewardline.errors import NonFiniteError
from rewardline.evaluation.absolute import AbsoluteCalibration, absolute_calibration, anchor_comparisons
from rewardline.evaluation.benchmark import benchmark_metrics
from rewardline.evaluation.calibration import CalibrationReport, calibrate, reward_stats
from rewardline.evaluation.gates import (
    CHAMPION_MISSING,
    EVALUATE_GATES,
    LENGTH_UNMEASURED,
    NO_TEST_PAIRS,
    report_markdown,
)
from rewardline.evaluation.length_bias import LengthBias, length_bias, unique_responses
from rewardline.evaluation.metrics import (
    Accuracy,
    PairedDifference,
    accuracy_by_category,
    accuracy_with_ci,
    agreement_aware_accuracy,
    champion_verdict,
    paired_bootstrap_difference,
    tie_mask,
)
from rewardline.evaluation.plots import write_absolute_reliability, write_plots
from rewardline.gates import GateReport, evaluate_gates
from rewardline.paths import GATES_FILE, METRICS_FILE, REPORT_FILE


class EvalConfig(Section):
    """Thresholds and bootstrap settings (``params.yaml: evaluate``). Defaults suit the tiny shipped sample."""

    section: ClassVar[str] = "evaluate"

    min_accuracy: float = Field(0.5, ge=0.0, le=1.0)  # gate: test pairwise accuracy ≥ this
    require_ci_above_chance: bool = False  # gate: lower end of the accuracy's 95 % CI > 0.5
    max_ece_calibrated: float = Field(0.25, ge=0.0, le=1.0)  # gate: ECE after temperature scaling ≤ this
    max_ece_absolute: float = Field(0.25, ge=0.0, le=1.0)  # gate: ECE of win_prob vs the anchor ≤ this (if any)
    max_length_bias: float = Field(0.25, ge=-1.0, le=1.0)  # gate: model_prefers_longer − labels_prefer_longer ≤ this
    champion_delta: float = Field(0.02, ge=0.0, le=1.0)  # gate: CI low of acc(challenger) − acc(champion) ≥ −δ
    champion_require_conclusive: bool = False  # an inconclusive champion comparison fails (default: passes, says so)
    champion_power: float = Field(0.8, gt=0.0, lt=1.0)  # power of the gate report's detectable-difference analysis
    min_calibration_pairs: int = Field(100, ge=0)  # fit T only on a val split with at least this many decided pairs
    min_temperature_gain: float = Field(0.01, ge=0.0)  # ... and apply it only if val NLL drops by this share (CI > 0)
    min_bon_gain: float = -1.0  # gate of the bon stage: CI low of gold(N_max) − gold(1) > this; -1 = report only
    max_overoptimization: float = Field(0.05, ge=0.0)  # gate of `rewardline bon`: peak gold − gold(N_max) ≤ this
    bootstrap_samples: int = Field(1000, ge=1)
    seed: int = Field(0, ge=0)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_pylist(), dtype=object)


def _check_lengths(n: int, **arrays: np.ndarray | None) -> None:
    """Each array has ``n`` entries; rewards are finite (:class:`NonFiniteError`, exit 2: a metric of NaN
    rewards would be meaningless and a gate on it could pass)."""
    for name, arr in arrays.items():
        if arr is not None and len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} entries, the pairs table has {n} rows")
        if arr is not None and "reward" in name:
            bad = np.flatnonzero(~np.isfinite(np.asarray(arr, np.float64)))
            if len(bad):
                raise NonFiniteError(field=name, detail=f"{len(bad)} of {n} rewards are not finite (first: pair "
                                                        f"{int(bad[0])}); expected finite rewards")


def evaluate_scores(
    pairs: pa.Table,
    reward_a: np.ndarray,
    reward_b: np.ndarray,
    val_pairs: pa.Table,
    val_reward_a: np.ndarray,
    val_reward_b: np.ndarray,
    response_lengths_a: np.ndarray,
    response_lengths_b: np.ndarray,
    thresholds: EvalConfig,
    champion_reward_a: np.ndarray | None = None,
    champion_reward_b: np.ndarray | None = None,
    *,
    out_dir: Path,
    anchor_ids: pa.Array | None = None,
    link: str | None = None,
    residual_sd: float = 0.0,
    anchored: bool | None = True,
    champion_missing: str | None = None,  # the champion gate's reason when there is none (None: "no champion")
) -> dict[str, Any]:
    """Compute every metric and gate from scores, write the outputs to ``out_dir``, return ``metrics.json``'s dict.

    ``pairs`` is the test split (``PAIRS`` schema) and ``reward_a[i]``, ``reward_b[i]``,
    ``response_lengths_*[i]`` belong to its row ``i``; likewise ``val_pairs`` and the val rewards.
    ``anchor_ids``: the anchor responses' ids (absolute calibration; None: none); ``link``, ``residual_sd``: the
    model's ``reward_config`` (win_prob = Φ(r/√(1+s²)); link None: a BT model, a logistic map fitted on val;
    ``anchored`` False: prompt-centred utilities, win_prob vs the anchor from the reward difference).
    """
    cfg = thresholds
    n = pairs.num_rows
    _check_lengths(n, reward_a=reward_a, reward_b=reward_b, response_lengths_a=response_lengths_a,
                   response_lengths_b=response_lengths_b, champion_reward_a=champion_reward_a,
                   champion_reward_b=champion_reward_b)
    _check_lengths(val_pairs.num_rows, val_reward_a=val_reward_a, val_reward_b=val_reward_b)
    if (champion_reward_a is None) != (champion_reward_b is None):
        raise ValueError("give both champion_reward_a and champion_reward_b, or neither")

    ra, rb = np.asarray(reward_a, np.float64), np.asarray(reward_b, np.float64)
    label = np.asarray(pairs.column("label").to_numpy(zero_copy_only=False), np.float64)
    prompts = _column(pairs, "prompt_id")
    ids_a, ids_b = _column(pairs, "response_a_id"), _column(pairs, "response_b_id")
    boot = {"samples": cfg.bootstrap_samples, "seed": cfg.seed, "confidence": cfg.confidence}

    overall = accuracy_with_ci(ra, rb, label, prompts, **boot)
    by_cat = accuracy_by_category(ra, rb, label, prompts, _column(pairs, "category"), **boot)

    val_label = np.asarray(val_pairs.column("label").to_numpy(zero_copy_only=False), np.float64)
    vra, vrb = np.asarray(val_reward_a, np.float64), np.asarray(val_reward_b, np.float64)
    cal = calibrate(vra - vrb, val_label, ra - rb, label, seed=cfg.seed, val_prompts=_column(val_pairs, "prompt_id"),
                    test_prompts=prompts, min_pairs=cfg.min_calibration_pairs, min_gain=cfg.min_temperature_gain,
                    samples=cfg.bootstrap_samples, confidence=cfg.confidence)
    _, val_rewards = unique_responses(_column(val_pairs, "response_a_id"), _column(val_pairs, "response_b_id"),
                                      vra, vrb)
    reward_mean, reward_std = reward_stats(val_rewards)

    lb = length_bias(ra, rb, response_lengths_a, response_lengths_b, label, ids_a, ids_b)

    metrics = _headline_metrics(overall, by_cat, ra, rb, label, cal, reward_mean, reward_std, lb, champion_missing)
    metrics.update(benchmark_metrics(pairs, ra, rb, by_cat, **boot))  # RewardBench sections, best-of-N
    if champion_reward_a is not None:
        metrics.update(_champion_metrics(ra, rb, champion_reward_a, champion_reward_b, label, prompts, cfg, boot))
    absolute = _absolute(pairs, ra, rb, val_pairs, vra, vrb, anchor_ids, link,
                         {**boot, "residual_sd": residual_sd, "anchored": anchored})
    metrics.update(absolute.headline)
    metrics = json_safe(metrics)

    report = evaluate_gates(EVALUATE_GATES, metrics, cfg, stage="evaluate")
    metrics.update(report.metrics_entries())
    out_dir.mkdir(parents=True, exist_ok=True)

    test_ids, test_rewards = unique_responses(ids_a, ids_b, ra, rb)
    prompt_of = {**dict(zip(map(str, ids_b), prompts, strict=True)), **dict(zip(map(str, ids_a), prompts, strict=True))}
    _, test_lengths = unique_responses(ids_a, ids_b, response_lengths_a, response_lengths_b)
    write_plots(out_dir / "plots", raw=cal.raw, calibrated=cal.calibrated, temperature=cal.temperature,
                overall=overall, by_category=by_cat, **_chosen_rejected(ra, rb, label), rewards=test_rewards,
                lengths=test_lengths, spearman=lb.length_spearman, seed=cfg.seed)
    write_absolute_reliability(absolute.bins, absolute.details["method"], out_dir / "plots")
    write_json(json_safe(absolute.details), out_dir / "absolute_calibration.json")
    _write_outputs(out_dir, metrics, report, test_rewards, [prompt_of[i] for i in test_ids])
    return metrics


def _champion_metrics(ra: np.ndarray, rb: np.ndarray, champion_a: np.ndarray, champion_b: np.ndarray,
                      label: np.ndarray, prompts: np.ndarray, cfg: EvalConfig, boot: dict) -> dict[str, Any]:
    """The challenger − champion accuracy difference on the same test pairs, its paired CI and the power report."""
    diff = paired_bootstrap_difference(ra, rb, np.asarray(champion_a, np.float64), np.asarray(champion_b, np.float64),
                                       label, prompts, **boot)
    return {"champion_accuracy": diff.champion, "champion_diff": diff.difference, "champion_diff_ci_low": diff.ci_low,
            "champion_diff_ci_high": diff.ci_high, **_champion_power(diff, cfg)}


def _absolute(pairs: pa.Table, ra: np.ndarray, rb: np.ndarray, val_pairs: pa.Table, vra: np.ndarray,
              vrb: np.ndarray, anchor_ids: pa.Array | None, link: str | None, boot: dict) -> AbsoluteCalibration:
    """Absolute calibration on the test pairs against the anchors (the val pairs fit a BT model's map)."""
    anchors = pa.array([], pa.string()) if anchor_ids is None else anchor_ids
    test = anchor_comparisons(pairs, ra, rb, anchors)
    val = anchor_comparisons(val_pairs, vra, vrb, anchors)
    return absolute_calibration(test, val, link, **boot)


def _headline_metrics(overall: Accuracy, by_cat: dict[str, Accuracy], ra: np.ndarray, rb: np.ndarray,
                      label: np.ndarray, cal: CalibrationReport, reward_mean: float, reward_std: float,
                      lb: LengthBias, champion_missing: str | None = None) -> dict[str, Any]:
    """``metrics.json`` before the champion comparison and the gates: accuracy with its CI and by
    category, agreement-aware accuracy and its ceiling, calibration (T; ECE, MCE, Brier, NLL raw and
    after temperature scaling), reward statistics, length bias; and ``test_unmeasured_reason`` when the test split
    has no decided pair (the accuracy, ECE and length-bias gates fail with it as their reason);
    ``length_bias_unmeasured_reason`` when no decided pair has responses of two lengths (that gate's reason);
    ``champion_missing_reason`` when ``champion_missing`` is given (the champion gate's reason)."""
    n = label.size
    return {
        "accuracy": overall.accuracy,
        "accuracy_ci_low": overall.ci_low,
        "accuracy_ci_high": overall.ci_high,
        "accuracy_by_category": {c: a.to_dict() for c, a in by_cat.items()},
        "agreement_aware_accuracy": agreement_aware_accuracy(ra, rb, label),
        "agreement_aware_ceiling": float(np.maximum(label, 1 - label).mean()) if n else float("nan"),
        "n_pairs": overall.n_pairs,
        "n_prompts": overall.n_prompts,
        "ties_excluded": overall.ties_excluded,
        **(cal.fit.summary() if cal.fit else {"temperature": cal.temperature}),
        "ece_raw_ci_low": cal.ece_raw_ci[0],
        "ece_raw_ci_high": cal.ece_raw_ci[1],
        "ece_calibrated_ci_low": cal.ece_calibrated_ci[0],
        "ece_calibrated_ci_high": cal.ece_calibrated_ci[1],
        "reward_mean": reward_mean,
        "reward_std": reward_std,
        "ece_raw": cal.raw.ece,
        "ece_calibrated": cal.calibrated.ece,
        "mce_raw": cal.raw.mce,
        "mce_calibrated": cal.calibrated.mce,
        "brier_raw": cal.raw.brier,
        "brier": cal.calibrated.brier,
        "nll_raw": cal.raw.nll,
        "nll": cal.calibrated.nll,
        **lb.to_dict(),
        "champion_accuracy": None,
    } | ({CHAMPION_MISSING: champion_missing} if champion_missing else {}) | (
        {NO_TEST_PAIRS: reason} if (reason := _unmeasured_reason(n, overall.n_pairs)) else {}) | (
        {LENGTH_UNMEASURED: reason or f"none of the {overall.n_pairs} decided test pairs has two responses of "
                                      "different lengths"} if not lb.n_decisive_pairs else {})


def _unmeasured_reason(n_test_pairs: int, n_decided: int) -> str | None:
    """Why the test split gives no accuracy (the gates show it), or None when it has decided pairs."""
    if n_decided:
        return None
    if n_test_pairs:
        return f"every one of the {n_test_pairs} test pairs is a tie"
    return ("the test split has no pairs: too few prompts for 1 − pairs.train_fraction − pairs.val_fraction to "
            "hold one, or evaluate a file with --data FILE")


def _champion_power(diff: PairedDifference, cfg: EvalConfig) -> dict[str, Any]:
    """The champion verdict at δ (worse / inconclusive / non-inferior) and its power analysis."""
    power = champion_verdict(diff, cfg.champion_delta, cfg.confidence, cfg.champion_power)
    needed = "no finite number of" if power.pairs_needed is None else str(power.pairs_needed)
    note = (f"needs {needed} test pairs for a conclusive answer at δ = {cfg.champion_delta:g} (has {power.n_pairs}; "
            f"detectable at {cfg.champion_power:.0%} power: {power.min_detectable_difference:.3f})")
    return {"champion_verdict": power.verdict, "champion_inconclusive": power.verdict == "inconclusive",
            "champion_power_note": note, "champion_delta": cfg.champion_delta,
            "champion_min_detectable_difference": power.min_detectable_difference,
            "champion_pairs_needed": power.pairs_needed, "champion_n_pairs": power.n_pairs,
            "champion_discordance": diff.discordance, "champion_design_effect": diff.design_effect}


def _chosen_rejected(reward_a: np.ndarray, reward_b: np.ndarray, label: np.ndarray) -> dict[str, np.ndarray]:
    """Rewards of the preferred (``chosen``) and the other (``rejected``) response of each decided pair."""
    decided = ~tie_mask(label)
    a_wins = label[decided] > 0.5
    return {"chosen": np.where(a_wins, reward_a[decided], reward_b[decided]),
            "rejected": np.where(a_wins, reward_b[decided], reward_a[decided])}


def _write_outputs(out_dir: Path, metrics: dict[str, Any], report: GateReport, test_rewards: np.ndarray,
                   test_prompts: list) -> None:
    """``calibration.json`` (T, reward mean and std: what the registry bundle and the scorer use),
    ``reference_rewards.json`` (the test rewards drift is measured against, with each one's prompt id:
    the groups of the drift permutation test), the gate report
    (``gates.json``, ``report.md``) and ``metrics.json``."""
    calibration = {k: metrics[k] for k in ("temperature", "reward_mean", "reward_std")}
    write_json(calibration, out_dir / "calibration.json")
    reference = {"split": "test", "rewards": [float(r) for r in test_rewards],
                 "prompt_ids": [str(p) for p in test_prompts]}
    write_json(reference, out_dir / "reference_rewards.json")
    report.write_json(out_dir / GATES_FILE)
    (out_dir / REPORT_FILE).write_text(report_markdown(metrics, report))
    write_json(metrics, out_dir / METRICS_FILE)
