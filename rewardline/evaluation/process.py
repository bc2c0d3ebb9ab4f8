"""Evaluation of a process reward model (PRM): step-level quality, first-error localisation, best-of-N.

Inputs: the PRM, held-out step-labelled solutions (the ``test`` split by prompt of a
``solutions.parquet``, :func:`rewardline.training.step_data.split_of`) and candidate solutions with
outcome labels grouped by problem (e.g. the GSM8K model solutions, ``solutions`` adapter).

**Step level**, over labelled steps (label ``1`` → correct, ``-1`` → incorrect, ``0`` → as
``neutral_as``, null → left out) with the PRM's ``p_k = P(step correct)``:
accuracy of ``p_k ≥ 0.5``; AUROC of ``p_k`` for correct vs incorrect steps (Mann-Whitney:
``(R₊ − n₊(n₊+1)/2) / (n₊ n₋)`` with ``R₊`` the rank sum of correct steps, ties mid-ranked), with a
bootstrap CI by problem; F1 of error detection (positive = incorrect step, predicted ``p_k < 0.5``).

**First-error localisation** (ProcessBench): on solutions with an incorrect step, the share where
the first step with ``p_k < 0.5`` is the first step labelled incorrect; on solutions whose steps
are all correct, the share with no step below 0.5; ``first_error_f1`` their harmonic mean.

**Best-of-N** on the candidates of each problem ``j`` (outcomes ``c_ji ∈ {0, 1}``), one value per
problem, averaged over problems, 95 % percentile bootstrap CI by problem:

* PRM (for each aggregate ``min | prod | last | mean``, :mod:`rewardline.modeling.step_scores`):
  mean ``c`` over the candidates with the top reward (ties share the pick uniformly);
* random pick: ``mean_i c_ji`` (the expected value, no sampling noise);
* majority vote on ``final_answer``: the most frequent answer's mean ``c``; tied answers share the
  vote uniformly (expected value); candidates without an answer do not vote;
* oracle: ``max_i c_ji``.

``bon_gain_ci_low`` is the lower end of the paired bootstrap CI of PRM (the configured aggregate)
− random pick; a gate requires it above ``min_bon_gain``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field
from scipy.stats import rankdata

from rewardline.config import Section, build, merge_params, section_of
from rewardline.data.ingest import Source
from rewardline.gates import GateReport, GateSpec, evaluate_gates
from rewardline.modeling.step_scores import AGGREGATES, aggregate_steps
from rewardline.report import fmt
from rewardline.training.config import PAIRWISE_KNOBS
from rewardline.training.loop import TrainConfig
from rewardline.training.step_data import NEUTRAL_TARGETS


class PrmConfig(Section):
    """``params.yaml: prm`` — the process-reward-model pipeline (stages ``prm_*`` in ``dvc.yaml``)."""

    section: ClassVar[str] = "prm"

    sources: list[Source] = Field(default_factory=lambda: [
        Source(path="data/raw/gsm8k/train_300.jsonl", format="gsm8k"),
        Source(path="data/raw/gsm8k/model_solutions_train_200.jsonl", format="solutions", step_labels="outcome")])
    candidates: list[Source] = Field(default_factory=lambda: [Source(
        path="data/raw/gsm8k/model_solutions_150.jsonl", format="solutions")])
    train: dict[str, Any] = Field(default_factory=dict)  # train.* keys for the PRM, over the train section
    aggregate: Literal["min", "prod", "last", "mean"] = "min"  # the model's reward; the gated best-of-N
    min_step_auroc: float = Field(0.6, ge=0.0, le=1.0)  # gate: step AUROC on held-out labelled steps >= this
    min_bon_gain: float = -1.0  # gate: CI low of best-of-N accuracy(PRM) - accuracy(random pick) > this
    model_name: str = "process-reward-model"  # MLflow registered model
    bootstrap_samples: int = Field(1000, ge=10)
    seed: int = Field(0, ge=0)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)


def prm_train_config(params: Mapping[str, Any]) -> TrainConfig:
    """The PRM's train config: the ``train`` section with ``prm.train`` merged over it, ``objective: prm``
    and ``prm_aggregate: prm.aggregate``. The train section's Bradley-Terry knobs (``PAIRWISE_KNOBS``: the
    reward model's label smoothing, margin, centering) are not inherited: the PRM's loss has no such term."""
    prm = build(PrmConfig, section_of(params, "prm"), name="prm")
    prm_only = {**prm.train, "objective": "prm", "prm_aggregate": prm.aggregate}
    train = section_of(params, "train")
    if isinstance(train, dict):  # (not a mapping: build names it)
        train = {key: value for key, value in train.items() if key not in PAIRWISE_KNOBS}
    merged = merge_params(train, prm_only)
    # a bad key of prm.train is named prm.train.KEY, not train.KEY (the train section's, which may be fine)
    return build(TrainConfig, merged, name="train", override_origin="params.yaml", override_section="prm.train",
                 overrides={key: merged[key] for key in prm_only})


PRM_GATES: tuple[GateSpec, ...] = (
    GateSpec("min_step_auroc", "step_auroc", "min_step_auroc", ">=",
             "AUROC of step scores, correct vs incorrect held-out labelled steps"),
    GateSpec("min_bon_gain", "bon_gain_ci_low", "min_bon_gain", ">",
             "lower end of the 95 % CI of best-of-N accuracy (PRM) − random pick, by problem"),
)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC of ``scores`` for ``positive`` vs the rest (NaN without both classes)."""
    pos = positive.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ci(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    alpha = 1 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def step_level(scores: list[np.ndarray], labels: list[list[int | None]], prompt_ids: list[str], cfg: PrmConfig,
               neutral_as: str = "correct") -> dict[str, Any]:
    """Accuracy, AUROC (with its CI by problem) and error-detection F1 on the labelled, scored steps."""
    neutral = NEUTRAL_TARGETS[neutral_as]
    p, y, problem = [], [], []
    for s, lab, pid in zip(scores, labels, prompt_ids, strict=True):
        for k, label in enumerate(lab or []):
            target = {1: 1.0, -1: 0.0, 0: neutral}.get(label) if label is not None else None
            if target is not None and k < len(s) and not np.isnan(s[k]):
                p.append(s[k])
                y.append(target)
                problem.append(pid)
    p_arr, y_arr = np.array(p), np.array(y)
    out: dict[str, Any] = {"steps_labelled": len(p), "steps_incorrect": int((y_arr == 0).sum())}
    if not len(p):
        return {**out, "step_accuracy": float("nan"), "step_auroc": float("nan"), "step_f1": float("nan")}
    flagged, wrong = p_arr < 0.5, y_arr == 0
    tp, fp, fn = int((flagged & wrong).sum()), int((flagged & ~wrong).sum()), int((~flagged & wrong).sum())
    codes = np.unique(np.array(problem), return_inverse=True)[1]
    n_prob = int(codes.max()) + 1
    rng = np.random.default_rng(cfg.seed)
    boot = np.empty(cfg.bootstrap_samples)
    members = [np.flatnonzero(codes == j) for j in range(n_prob)]
    for b in range(cfg.bootstrap_samples):
        take = np.concatenate([members[j] for j in rng.integers(0, n_prob, n_prob)])
        boot[b] = auroc(p_arr[take], y_arr[take])
    low, high = _ci(boot, cfg.confidence)
    return {**out, "step_accuracy": float(((p_arr >= 0.5) == (y_arr == 1)).mean()),
            "step_auroc": auroc(p_arr, y_arr), "step_auroc_ci_low": low, "step_auroc_ci_high": high,
            "step_f1": 2 * tp / max(2 * tp + fp + fn, 1), "step_problems": n_prob}


def first_error(scores: list[np.ndarray], labels: list[list[int | None]]) -> dict[str, Any]:
    """ProcessBench-style localisation of the first incorrect step (module docstring)."""
    hits, clean = [], []
    for s, lab in zip(scores, labels, strict=True):
        lab = list(lab or [])
        if any(x is None for x in lab) or len(s) < len(lab) or np.isnan(s[: len(lab)]).any():
            continue  # unknown labels or unscored steps: the first error is not defined
        below = np.flatnonzero(s[: len(lab)] < 0.5)
        predicted = int(below[0]) if len(below) else None
        if -1 in lab:
            hits.append(predicted == lab.index(-1))
        else:
            clean.append(predicted is None)
    acc_err = float(np.mean(hits)) if hits else float("nan")
    acc_ok = float(np.mean(clean)) if clean else float("nan")
    f1 = 2 * acc_err * acc_ok / (acc_err + acc_ok) if (acc_err + acc_ok) > 0 else float("nan")
    return {"first_error_accuracy": acc_err, "first_error_solutions": len(hits), "no_error_accuracy": acc_ok,
            "no_error_solutions": len(clean), "first_error_f1": f1}


def _top_mean(reward: np.ndarray, correct: np.ndarray) -> float:
    """Mean correctness of the candidates with the top reward (NaN rewards never top unless all are)."""
    r = np.where(np.isnan(reward), -np.inf, reward)
    return float(correct[r == r.max()].mean())


def _majority(answers: list[str | None], correct: np.ndarray) -> float:
    """Expected correctness of a majority vote on the final answers, ties shared uniformly."""
    voted = [(a, c) for a, c in zip(answers, correct, strict=True) if a is not None]
    if not voted:
        return float(correct.mean())
    counts: dict[str, list[float]] = {}
    for a, c in voted:
        counts.setdefault(a, []).append(float(c))
    top = max(len(v) for v in counts.values())
    return float(np.mean([np.mean(v) for v in counts.values() if len(v) == top]))


def best_of_n(candidates: pa.Table, scores: list[np.ndarray], cfg: PrmConfig) -> dict[str, Any]:
    """Best-of-N accuracy per method with CIs by problem, and the PRM − random differences (module docstring)."""
    cols = candidates.select(["prompt_id", "outcome", "final_answer"]).to_pydict()
    by_problem: dict[str, list[int]] = {}
    for i, (pid, outcome) in enumerate(zip(cols["prompt_id"], cols["outcome"], strict=True)):
        if outcome is not None:
            by_problem.setdefault(pid, []).append(i)
    rewards = {how: aggregate_steps(scores, how) for how in AGGREGATES}
    per: dict[str, list[float]] = {k: [] for k in ("random", "majority", "oracle", *AGGREGATES)}
    sizes = []
    for idx in by_problem.values():
        c = np.array([cols["outcome"][i] for i in idx], np.float64)
        sizes.append(len(idx))
        per["random"].append(float(c.mean()))
        per["majority"].append(_majority([cols["final_answer"][i] for i in idx], c))
        per["oracle"].append(float(c.max()))
        for how in AGGREGATES:
            per[how].append(_top_mean(rewards[how][idx], c))
    values = {k: np.array(v) for k, v in per.items()}
    n = len(sizes)
    out: dict[str, Any] = {"bon_problems": n, "bon_candidates": int(sum(sizes)),
                           "bon_n": float(np.mean(sizes)) if sizes else float("nan")}
    if not n:
        return out
    draws = np.random.default_rng(cfg.seed).integers(0, n, (cfg.bootstrap_samples, n))
    for k, v in values.items():
        out[f"bon_{k}"] = float(v.mean())
        out[f"bon_{k}_ci_low"], out[f"bon_{k}_ci_high"] = _ci(v[draws].mean(1), cfg.confidence)
    for how in AGGREGATES:
        diff = values[how] - values["random"]
        out[f"bon_{how}_gain"] = float(diff.mean())
        out[f"bon_{how}_gain_ci_low"], out[f"bon_{how}_gain_ci_high"] = _ci(diff[draws].mean(1), cfg.confidence)
    out["bon_gain"] = out[f"bon_{cfg.aggregate}_gain"]
    out["bon_gain_ci_low"] = out[f"bon_{cfg.aggregate}_gain_ci_low"]
    out["bon_gain_ci_high"] = out[f"bon_{cfg.aggregate}_gain_ci_high"]
    return out


def bon_table_markdown(m: Mapping[str, Any]) -> str:
    """The best-of-N table: method, accuracy, 95 % CI (and the gain over random pick for the PRM)."""
    lines = ["| method | best-of-N accuracy | 95 % CI | − random pick (95 % CI) |", "| --- | --- | --- | --- |"]
    for key, label in [("random", "random pick"), ("majority", "majority vote (final answer)"),
                       *[(h, f"PRM, {h} of step scores") for h in AGGREGATES], ("oracle", "oracle")]:
        if f"bon_{key}" not in m:
            continue
        gain = (f"{fmt(m[f'bon_{key}_gain'], 3)} [{fmt(m[f'bon_{key}_gain_ci_low'], 3)}, "
                f"{fmt(m[f'bon_{key}_gain_ci_high'], 3)}]") if key in AGGREGATES else ""
        lines.append(f"| {label} | {fmt(m[f'bon_{key}'], 3)} | [{fmt(m[f'bon_{key}_ci_low'], 3)}, "
                     f"{fmt(m[f'bon_{key}_ci_high'], 3)}] | {gain} |")
    return "\n".join(lines)


def report_markdown(m: Mapping[str, Any], report: GateReport) -> str:
    """``report.md`` of the PRM evaluation."""
    return "\n".join([
        "# Process reward model evaluation", "", report.summary_markdown(), "",
        f"## Step level ({m.get('steps_labelled', 0)} held-out labelled steps, "
        f"{m.get('steps_incorrect', 0)} incorrect, {m.get('step_problems', 0)} problems)", "",
        f"- AUROC {fmt(m.get('step_auroc'), 3)} (95 % CI by problem [{fmt(m.get('step_auroc_ci_low'), 3)}, "
        f"{fmt(m.get('step_auroc_ci_high'), 3)}]), accuracy {fmt(m.get('step_accuracy'), 3)}, "
        f"error-detection F1 {fmt(m.get('step_f1'), 3)}",
        f"- first error located in {fmt(m.get('first_error_accuracy'), 3)} of {m.get('first_error_solutions')} "
        f"solutions with an error; no false alarm in {fmt(m.get('no_error_accuracy'), 3)} of "
        f"{m.get('no_error_solutions')} correct ones (F1 {fmt(m.get('first_error_f1'), 3)})", "",
        f"## Best-of-N ({m.get('bon_problems', 0)} problems, N ≈ {fmt(m.get('bon_n'), 2)} candidates each)", "",
        bon_table_markdown(m), "", "## Gates", "", report.table_markdown(), "",
    ])


def plot_bon(m: Mapping[str, Any], path: Path) -> Path:
    """Bar chart of best-of-N accuracy per method with its CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("random", "majority", *AGGREGATES, "oracle") if f"bon_{k}" in m]
    values = [m[f"bon_{k}"] for k in keys]
    err = [[v - m[f"bon_{k}_ci_low"] for k, v in zip(keys, values, strict=True)],
           [m[f"bon_{k}_ci_high"] - v for k, v in zip(keys, values, strict=True)]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(keys, values, yerr=err, capsize=3, color=["#999"] * 2 + ["#3a7"] * len(AGGREGATES) + ["#999"])
    ax.set_ylabel("best-of-N accuracy")
    ax.set_title(f"best-of-N on {m.get('bon_problems')} problems (95 % CI by problem)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def prm_metrics(model_dir: Path, heldout: pa.Table, candidates: pa.Table, cfg: PrmConfig,
                neutral_as: str = "correct") -> dict[str, Any]:
    """Step-level, first-error and best-of-N metrics of the PRM in ``model_dir``."""
    from rewardline.modeling.device import select_runtime
    from rewardline.modeling.model import RewardModel
    from rewardline.modeling.step_scores import score_steps

    model, tokenizer = RewardModel.load(model_dir, select_runtime("auto", "auto").device)

    def scores(table: pa.Table) -> list[np.ndarray]:
        return score_steps(model, tokenizer, table["prompt"].to_pylist(),
                           [list(s) for s in table["steps"].to_pylist()]) if table.num_rows else []

    held = scores(heldout)
    labels = heldout["step_labels"].to_pylist()
    return {**step_level(held, labels, heldout["prompt_id"].to_pylist(), cfg, neutral_as),
            **first_error(held, labels), **best_of_n(candidates, scores(candidates), cfg),
            "heldout_solutions": heldout.num_rows, "aggregate": cfg.aggregate}


def write_prm_report(metrics: dict[str, Any], out_dir: Path, cfg: PrmConfig) -> dict[str, Any]:
    """Gates, ``metrics.json``, ``gates.json``, ``report.md`` and ``plots/bon_accuracy.png`` in ``out_dir``."""
    from rewardline.data.tables import write_json
    from rewardline.paths import GATES_FILE, METRICS_FILE, REPORT_FILE

    report = evaluate_gates(PRM_GATES, metrics, cfg, "prm_evaluate")
    metrics = {**metrics, **report.metrics_entries()}
    out_dir.mkdir(parents=True, exist_ok=True)
    if "bon_random" in metrics:
        plot_bon(metrics, out_dir / "plots" / "bon_accuracy.png")
    write_json(metrics, out_dir / METRICS_FILE)
    report.write_json(out_dir / GATES_FILE)
    (out_dir / REPORT_FILE).write_text(report_markdown(metrics, report))
    return metrics
