"""Evaluation plots: PNG files (matplotlib, Agg) and the same data as DVC-plots-friendly JSON / CSV.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through
``pyplot``: no global state, no display needed, safe in worker threads.

Files (``x`` / ``y`` are the fields to name in ``dvc.yaml: plots``):

* reliability diagram before / after T: ``reliability.png``; ``reliability.json`` with
  x = ``confidence``, y = ``observed``, one row per non-empty bin, ``variant`` = raw | calibrated;
* accuracy by category with 95 % CIs: ``accuracy_by_category.png``; ``accuracy_by_category.json``
  with x = ``category``, y = ``accuracy`` (+ ``ci_low``, ``ci_high``, ``n_pairs``; first row ``all``);
* reward of chosen vs rejected: ``reward_histogram.png``; ``reward_histogram.json`` with
  x = ``reward`` (bin centre), y = ``count``, ``group`` = chosen | rejected;
* absolute calibration (``win_prob`` vs the judge on anchor comparisons, :mod:`rewardline.evaluation.absolute`):
  ``absolute_reliability.png``; ``absolute_reliability.json`` with x = ``confidence``, y = ``observed``
  (one row per non-empty bin, ``count``; empty when there are no anchor comparisons);
* reward vs length: ``reward_vs_length.png``; ``reward_vs_length.csv`` with x = ``length``,
  y = ``reward`` (unique test responses, at most ``max_points``, a seeded sample).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rewardline.data.tables import json_safe
from rewardline.evaluation.calibration import CalibrationMetrics
from rewardline.evaluation.metrics import Accuracy
from rewardline.report import fmt

HIST_BINS = 30


def _figure(width: float = 5.5, height: float = 4.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _write_json(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")
    return path


# -- data --------------------------------------------------------------------------------
def reliability_rows(raw: CalibrationMetrics, calibrated: CalibrationMetrics) -> list[dict]:
    """One row per non-empty bin: ``variant``, ``bin``, ``confidence`` = mean q, ``observed`` = mean y, ``count``."""
    rows = []
    for variant, m in (("raw", raw), ("calibrated", calibrated)):
        for k, (count, conf, obs) in enumerate(zip(m.bin_count, m.bin_confidence, m.bin_observed, strict=True)):
            if count:
                rows.append({"variant": variant, "bin": k, "confidence": conf, "observed": obs, "count": count})
    return rows


def category_rows(by_category: Mapping[str, Accuracy], overall: Accuracy | None = None) -> list[dict]:
    """One row per category (and ``all`` first when ``overall`` is given)."""
    items = ([("all", overall)] if overall is not None else []) + sorted(by_category.items())
    return json_safe([
        {"category": name, "accuracy": a.accuracy, "ci_low": a.ci_low, "ci_high": a.ci_high, "n_pairs": a.n_pairs}
        for name, a in items
    ])


def histogram_rows(chosen: np.ndarray, rejected: np.ndarray, bins: int = HIST_BINS) -> list[dict]:
    """Counts of chosen and rejected rewards over shared equal-width bins; ``reward`` = the bin centre."""
    both = np.concatenate([chosen, rejected])
    if both.size == 0:
        return []
    edges = np.histogram_bin_edges(both, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    rows = []
    for group, values in (("chosen", chosen), ("rejected", rejected)):
        counts, _ = np.histogram(values, bins=edges)
        rows += [{"group": group, "reward": float(c), "count": int(n)} for c, n in zip(centres, counts, strict=True)]
    return rows


def sample_points(rewards: np.ndarray, lengths: np.ndarray, max_points: int = 5000,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` (reward, length) points, a seeded uniform sample without replacement."""
    if rewards.size <= max_points:
        return rewards, lengths
    idx = np.sort(np.random.default_rng(seed).choice(rewards.size, max_points, replace=False))
    return rewards[idx], lengths[idx]


# -- figures -----------------------------------------------------------------------------
def plot_reliability(raw: CalibrationMetrics, calibrated: CalibrationMetrics, temperature: float, path: Path) -> Path:
    """Observed preference rate vs mean predicted probability per bin, before and after temperature scaling."""
    fig = _figure(5.0, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for m, name, marker in ((raw, f"raw (ECE {fmt(raw.ece, 3)})", "o"),
                            (calibrated, f"T = {temperature:.3g} (ECE {fmt(calibrated.ece, 3)})", "s")):
        keep = [i for i, c in enumerate(m.bin_count) if c]
        ax.plot([m.bin_confidence[i] for i in keep], [m.bin_observed[i] for i in keep], marker=marker, label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(a ≻ b)", ylabel="observed preference for a",
           title="Reliability (test, random orientation)")
    ax.legend(loc="upper left")
    return _save(fig, path)


def absolute_reliability_rows(bins: CalibrationMetrics | None) -> list[dict]:
    """One row per non-empty bin of the absolute calibration: ``bin``, ``confidence``, ``observed``, ``count``."""
    if bins is None:
        return []
    return [{"bin": k, "confidence": conf, "observed": obs, "count": count}
            for k, (count, conf, obs) in enumerate(zip(bins.bin_count, bins.bin_confidence, bins.bin_observed,
                                                       strict=True)) if count]


def write_absolute_reliability(bins: CalibrationMetrics | None, method: str, plots_dir: Path) -> dict[str, Path]:
    """``absolute_reliability.png`` (observed win rate against the anchor vs mean win_prob per bin) and its JSON."""
    rows = absolute_reliability_rows(bins)
    fig = _figure(5.0, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    if rows:
        ax.plot([r["confidence"] for r in rows], [r["observed"] for r in rows], marker="o",
                label=f"{method} (ECE {fmt(bins.ece, 3)}, n = {bins.n})")
    else:
        ax.text(0.5, 0.5, "no anchor comparisons", ha="center", va="center")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted win_prob (beats the anchor)",
           ylabel="observed: judge prefers it to the anchor", title="Absolute calibration (test)")
    ax.legend(loc="upper left")
    return {"absolute_reliability.png": _save(fig, plots_dir / "absolute_reliability.png"),
            "absolute_reliability.json": _write_json(rows, plots_dir / "absolute_reliability.json")}


def plot_accuracy_by_category(rows: list[dict], path: Path) -> Path:
    """Bar per category with its bootstrap CI as error bars; a dashed line at chance (0.5)."""
    fig = _figure(max(5.0, 0.6 * len(rows) + 2), 4.0)
    ax = fig.add_subplot()
    names = [r["category"] for r in rows]
    acc = np.array([np.nan if r["accuracy"] is None else r["accuracy"] for r in rows], dtype=float)
    low = np.array([np.nan if r["ci_low"] is None else r["ci_low"] for r in rows], dtype=float)
    high = np.array([np.nan if r["ci_high"] is None else r["ci_high"] for r in rows], dtype=float)
    yerr = np.nan_to_num(np.vstack([acc - low, high - acc]), nan=0.0).clip(min=0)
    ax.bar(range(len(rows)), np.nan_to_num(acc), yerr=yerr, capsize=3, color="tab:blue")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(rows)), [f"{n}\n(n={r['n_pairs']})" for n, r in zip(names, rows, strict=True)],
                  rotation=30, ha="right", fontsize=8)
    ax.set(ylim=(0, 1), ylabel="pairwise accuracy", title="Accuracy by category (95 % CI by prompt)")
    return _save(fig, path)


def plot_reward_histogram(chosen: np.ndarray, rejected: np.ndarray, path: Path, bins: int = HIST_BINS) -> Path:
    """Overlaid histograms of the reward of the majority-chosen and the rejected response."""
    fig = _figure()
    ax = fig.add_subplot()
    both = np.concatenate([chosen, rejected])
    edges = np.histogram_bin_edges(both, bins=bins) if both.size else bins
    ax.hist(chosen, bins=edges, alpha=0.6, label=f"chosen (n={chosen.size})")
    ax.hist(rejected, bins=edges, alpha=0.6, label=f"rejected (n={rejected.size})")
    ax.set(xlabel="reward", ylabel="pairs", title="Reward of chosen vs rejected responses (test)")
    ax.legend()
    return _save(fig, path)


def plot_reward_vs_length(rewards: np.ndarray, lengths: np.ndarray, spearman: float, path: Path) -> Path:
    """Scatter of reward against response length, Spearman's ρ in the title."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(lengths, rewards, s=6, alpha=0.4)
    ax.set(xlabel="response length", ylabel="reward", title=f"Reward vs length (Spearman ρ = {fmt(spearman, 3)})")
    return _save(fig, path)


# -- everything --------------------------------------------------------------------------
def write_plots(
    plots_dir: Path,
    *,
    raw: CalibrationMetrics,
    calibrated: CalibrationMetrics,
    temperature: float,
    overall: Accuracy,
    by_category: Mapping[str, Accuracy],
    chosen: np.ndarray,
    rejected: np.ndarray,
    rewards: np.ndarray,
    lengths: np.ndarray,
    spearman: float,
    max_points: int = 5000,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the four PNGs and their data files into ``plots_dir``; returns {name: path}."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    cats = category_rows(by_category, overall)
    r, n = sample_points(np.asarray(rewards, float), np.asarray(lengths, float), max_points, seed)
    paths = {
        "reliability.png": plot_reliability(raw, calibrated, temperature, plots_dir / "reliability.png"),
        "reliability.json": _write_json(reliability_rows(raw, calibrated), plots_dir / "reliability.json"),
        "accuracy_by_category.png": plot_accuracy_by_category(cats, plots_dir / "accuracy_by_category.png"),
        "accuracy_by_category.json": _write_json(cats, plots_dir / "accuracy_by_category.json"),
        "reward_histogram.png": plot_reward_histogram(chosen, rejected, plots_dir / "reward_histogram.png"),
        "reward_histogram.json": _write_json(histogram_rows(chosen, rejected), plots_dir / "reward_histogram.json"),
        "reward_vs_length.png": plot_reward_vs_length(r, n, spearman, plots_dir / "reward_vs_length.png"),
    }
    csv_path = plots_dir / "reward_vs_length.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["length", "reward"])
        writer.writerows(zip(n.tolist(), r.tolist(), strict=True))
    paths["reward_vs_length.csv"] = csv_path
    return paths
