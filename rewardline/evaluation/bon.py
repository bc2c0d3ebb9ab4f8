"""Best-of-N analysis: exact expected gold of the proxy's pick vs N, Gao et al.'s fit, gates.

Best-of-N samples N candidates for a prompt and returns the one the *proxy* reward model
scores highest. How much *gold* (a judge's preference, correctness, a gold RM's score)
that buys, and whether it peaks and falls as N grows (over-optimisation, Gao et al. 2022),
is measured here without sampling: every expectation over uniformly random N-subsets of a
prompt's k candidates is computed exactly from order statistics.

Order statistics. Sort a prompt's k candidates ascending by a key (1-based positions
i = 1..k). A uniformly random N-subset has its key-maximum at position i with probability

    w_N(i) = C(i−1, N−1) / C(k, N)        (i ≥ N; 0 otherwise; Σ_i w_N(i) = 1, hockey stick)

(the other N−1 members are any of the i−1 candidates below i). Hence, per prompt,

    gold(N)   = Σ_i w_N(i) · ḡ_i        ḡ = gold, sorted by proxy, averaged over proxy ties (below)
    proxy(N)  = Σ_i w_N(i) · r_i        r = proxy, sorted by proxy
    oracle(N) = Σ_i w_N(i) · g_(i)      g_(i) = gold sorted by gold (the best gold of an N-subset)
    random    = mean_i g_i              (= gold(1): a uniformly random pick)

Proxy ties: best-of-N returns a uniformly random one of the subset's tied maxima. That is
the same as ordering the tied candidates by a uniformly random permutation and taking the
max of the resulting strict order; averaging over that permutation replaces the gold at
each position of a tie block by the block's mean gold, ḡ_i = mean{g_j : r_j = r_i}. (Ties
do not matter for proxy(N) and oracle(N): the values at tied positions are equal.)

Prompts with k < N candidates are excluded from N (``prompts_by_n`` reports the counts);
the curves are means over the included prompts. ``gain(N)`` is the paired per-prompt
``gold(N) − gold(1)`` averaged over the prompts included at N (with equal k everywhere it
is just ``gold_by_n[N] − gold_by_n[1]``). 95 % CIs: percentile bootstrap over prompts,
one multinomial resample of the prompts shared by every N and every curve (seeded).

KL of best-of-N to the policy (Stiennon et al. 2020; Gao et al. 2022, eq. 1):

    KL_bon(N) = log N − (N − 1) / N

Gao et al.'s best-of-N functional form, fitted by least squares on the gains with
d = sqrt(KL_bon):

    gain(d) = d (α − β d),  peak at d* = α / (2β) when β > 0 (gain α² / 4β), N* = KL_bon⁻¹(d*²)

Gates (``params.yaml: evaluate``): ``min_bon_gain`` — lower CI end of gain(N_max) > threshold;
``max_overoptimization`` — max_N gold(N) − gold(N_max) ≤ threshold, both on the prompts with N_max candidates
(so every N is compared on the same prompts when prompts have different numbers of candidates).

Inputs (:func:`load_candidates`): JSONL ``{prompt, response, gold}``; AlpacaEval annotation
records (``instruction``, ``output_2`` = the sample, ``preference`` in [1, 2]; gold =
P(sample beats the reference ``output_1``) = preference − 1); GSM8K model-solution rows
(``question``, ``solutions`` = [{``solution``, ``is_correct``}]; gold = 1 if correct).
Files may be gzipped, JSONL or one JSON list; a directory means its files, sorted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator
from scipy.special import gammaln

from rewardline.config import Section
from rewardline.data.tables import json_safe, write_json
from rewardline.evaluation.candidates import Candidates, load_candidates
from rewardline.gates import GateReport, GateSpec, evaluate_gates
from rewardline.ops.atomic import writes_output
from rewardline.paths import GATES_FILE, METRICS_FILE, REPORT_FILE
from rewardline.report import fmt


class BonConfig(Section):
    """Gates and bootstrap settings; read from ``params.yaml: evaluate`` (keys this class lacks are ignored)."""

    section: ClassVar[str] = "evaluate"

    min_bon_gain: float = 0.0  # gate: lower CI end of gold(N_max) − gold(1) > this
    max_overoptimization: float = Field(0.05, ge=0.0)  # gate: peak gold − gold(N_max) ≤ this
    bootstrap_samples: int = Field(1000, ge=1)
    seed: int = Field(0, ge=0)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    max_n: int = Field(0, ge=0)  # >= 2: stop the curves at this N; 0: at the most candidates of any prompt

    @field_validator("max_n")
    @classmethod
    def _measures_something(cls, value: int) -> int:
        if value == 1:
            raise ValueError("1 measures nothing (best-of-1 is a random pick, so its gain is 0 by definition); "
                             "expected 0 (every candidate) or a number >= 2")
        return value


# -- exact best-of-N expectations ---------------------------------------------------------
def kl_bon(n: np.ndarray | int) -> np.ndarray:
    """KL(best-of-N ‖ policy) = log N − (N − 1)/N (nats)."""
    n = np.asarray(n, np.float64)
    return np.log(n) - (n - 1.0) / n


def log_n_for_kl(kl: float) -> float:
    """log N of the (real) N ≥ 1 with KL_bon(N) = ``kl``: bisection on L = log N, where
    KL_bon = L − 1 + e^(−L) is increasing; in [0, kl + 1] since KL_bon(e^(kl+1)) > kl."""
    if kl <= 0:
        return 0.0
    lo, hi = 0.0, kl + 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mid - 1.0 + math.exp(-mid) < kl else (lo, mid)
    return 0.5 * (lo + hi)


def n_for_kl(kl: float) -> float | None:
    """N with KL_bon(N) = ``kl``; None when it overflows a float (kl > ~700)."""
    log_n = log_n_for_kl(kl)
    return math.exp(log_n) if log_n < 700 else None


def order_statistic_weights(k: int, n_max: int) -> np.ndarray:
    """``W[N−1, i−1] = C(i−1, N−1) / C(k, N)``: P(position i of k, ascending, is the max of a random
    N-subset); rows N > k are 0. Shape ``[n_max, k]``; computed in log space (log-gamma)."""
    n = np.arange(1, n_max + 1, dtype=np.float64)[:, None]
    i = np.arange(1, k + 1, dtype=np.float64)[None, :]
    valid = (i >= n) & (n <= k)
    a, b = np.where(valid, i - 1, 0), np.where(valid, n - 1, 0)
    log_w = (gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)
             - (gammaln(k + 1) - gammaln(np.minimum(n, k) + 1) - gammaln(k - np.minimum(n, k) + 1)))
    return np.where(valid, np.exp(log_w), 0.0)


@dataclass
class BonCurves:
    """Per-prompt exact expectations; columns are N = 1..n_max, NaN where the prompt has k < N."""

    k: np.ndarray  # [P] candidates per prompt
    pick_gold: np.ndarray  # [P, n_max] E[gold of the proxy's pick]
    pick_proxy: np.ndarray  # [P, n_max] E[proxy of the pick] = E[max proxy]
    oracle_gold: np.ndarray  # [P, n_max] E[max gold]
    mean_gold: np.ndarray  # [P] gold of a random pick
    proxy_tied: int  # candidates whose proxy equals another candidate's of the same prompt


def bon_curves(prompt_index: np.ndarray, proxy: np.ndarray, gold: np.ndarray, n_max: int = 0) -> BonCurves:
    """Exact best-of-N expectations per prompt (module docstring), vectorised over prompts of equal k.

    ``n_max`` = 0: up to the largest k.
    """
    prompt_index = np.asarray(prompt_index, np.int64)
    proxy, gold = np.asarray(proxy, np.float64), np.asarray(gold, np.float64)
    if not (prompt_index.shape == proxy.shape == gold.shape) or prompt_index.ndim != 1:
        raise ValueError("prompt_index, proxy and gold must be 1-D arrays of equal length")
    if not (np.isfinite(proxy).all() and np.isfinite(gold).all()):
        raise ValueError("proxy and gold must be finite")
    n_prompts = int(prompt_index.max()) + 1 if prompt_index.size else 0
    k = np.bincount(prompt_index, minlength=n_prompts)
    n_max = int(k.max()) if n_max <= 0 else min(int(n_max), int(k.max()))

    # Proxy order within each prompt; tie blocks = runs of equal (prompt, proxy).
    by_proxy = np.lexsort((proxy, prompt_index))
    p_sorted, r_sorted, g_by_proxy = prompt_index[by_proxy], proxy[by_proxy], gold[by_proxy]
    new_block = np.r_[True, (p_sorted[1:] != p_sorted[:-1]) | (r_sorted[1:] != r_sorted[:-1])]
    block = np.cumsum(new_block) - 1
    block_size = np.bincount(block)
    g_tie_mean = (np.bincount(block, weights=g_by_proxy) / block_size)[block]
    by_gold = np.lexsort((gold, prompt_index))
    g_sorted = gold[by_gold]  # candidates of a prompt are contiguous in all three orders, same offsets
    start = np.r_[0, np.cumsum(k)[:-1]]

    shape = (n_prompts, n_max)
    pick_gold, pick_proxy, oracle = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    for size in np.unique(k):  # one matrix product per distinct prompt size
        rows = np.flatnonzero(k == size)
        cols = start[rows][:, None] + np.arange(size)[None, :]  # [prompts of this size, size]
        weights = order_statistic_weights(int(size), min(n_max, int(size))).T  # [size, N]
        n_cols = weights.shape[1]
        pick_gold[rows, :n_cols] = g_tie_mean[cols] @ weights
        pick_proxy[rows, :n_cols] = r_sorted[cols] @ weights
        oracle[rows, :n_cols] = g_sorted[cols] @ weights
    mean_gold = np.bincount(prompt_index, weights=gold, minlength=n_prompts) / np.maximum(k, 1)
    return BonCurves(k, pick_gold, pick_proxy, oracle, mean_gold, int(block_size[block_size > 1].sum()))


# -- aggregation, bootstrap, fit ------------------------------------------------------------
def fit_bon(sqrt_kl: np.ndarray, gain: np.ndarray) -> dict[str, Any] | None:
    """Least squares of gain = α d − β d² (no intercept; d = sqrt KL_bon). None with < 2 points d > 0."""
    d, y = np.asarray(sqrt_kl, np.float64), np.asarray(gain, np.float64)
    use = np.isfinite(y) & (d > 0)
    if use.sum() < 2:
        return None
    design = np.stack([d[use], -d[use] ** 2], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, y[use], rcond=None)
    residual = y[use] - design @ np.array([alpha, beta])
    fit: dict[str, Any] = {"alpha": float(alpha), "beta": float(beta), "points": int(use.sum()),
                           "rmse": float(np.sqrt(np.mean(residual**2))),
                           "d_peak": None, "kl_peak": None, "log_n_peak": None, "n_peak": None, "gain_peak": None}
    if alpha > 0 and beta > 1e-9 * alpha:  # β at round-off level (a straight line) is no peak
        d_peak = alpha / (2 * beta)
        fit.update(d_peak=float(d_peak), kl_peak=float(d_peak**2), log_n_peak=log_n_for_kl(d_peak**2),
                   n_peak=n_for_kl(d_peak**2),
                   gain_peak=float(alpha**2 / (4 * beta)))
    return fit


def _by_n(values: np.ndarray) -> dict[str, float | None]:
    """``{"1": v_1, "2": v_2, ...}`` with NaN as None (JSON)."""
    return json_safe({str(n): v for n, v in enumerate(values.tolist(), start=1)})


def _ci_by_n(low: np.ndarray, high: np.ndarray) -> dict[str, list[float | None]]:
    """``{"1": [low_1, high_1], ...}`` with NaN as None (JSON)."""
    pairs = zip(low.tolist(), high.tolist(), strict=True)
    return json_safe({str(n): list(pair) for n, pair in enumerate(pairs, start=1)})


def summarize(curves: BonCurves, config: BonConfig) -> dict[str, Any]:
    """Means over prompts per N, bootstrap CIs by prompt, gains, the fit and the observed peak."""
    n_prompts, n_max = curves.pick_gold.shape
    n = np.arange(1, n_max + 1)
    included = curves.k[:, None] >= n[None, :]  # [P, n_max]
    per_prompt = {
        "gold": curves.pick_gold,
        "proxy": curves.pick_proxy,
        "random": np.where(included, curves.mean_gold[:, None], np.nan),
        "oracle": curves.oracle_gold,
        "gain": curves.pick_gold - curves.mean_gold[:, None],
    }
    counts = included.sum(0)
    means = {name: np.where(included, x, 0.0).sum(0) / np.maximum(counts, 1) for name, x in per_prompt.items()}
    means = {name: np.where(counts > 0, m, np.nan) for name, m in means.items()}

    # Percentile bootstrap by prompt: resample b draws P prompts with replacement (multinomial counts),
    # mean_b(N) = Σ_p c_bp x_pN / Σ_p c_bp [k_p ≥ N], for every curve and N at once.
    rng = np.random.default_rng(config.seed)
    draws = rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=config.bootstrap_samples)
    draws = draws.astype(np.float64)
    denominator = draws @ included.astype(np.float64)  # [B, n_max]
    tail = 100 * (1 - config.confidence) / 2
    low, high = {}, {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, x in per_prompt.items():
            boot = (draws @ np.where(included, x, 0.0)) / denominator  # NaN where a resample has no prompt at N
            low[name], high[name] = np.nanpercentile(boot, [tail, 100 - tail], axis=0)

    kl = kl_bon(n)
    sqrt_kl = np.sqrt(kl)
    fit = fit_bon(sqrt_kl, means["gain"])
    # The drop past the peak compares every N on the same prompts, those with N_max candidates: with uneven
    # candidate counts gold_by_n averages a different set of prompts at each N, and a dip between such means
    # can come from the prompts that leave, not from the proxy. gold(N_max) is the same either way.
    gold = means["gold"]
    same = curves.pick_gold[curves.k >= n_max].mean(0)
    n_peak = int(np.argmax(same)) + 1
    observed = {"n_peak": n_peak, "gold_peak": float(same[n_peak - 1]), "gold_n_max": float(same[-1]),
                "overoptimization": float(same.max() - same[-1]), "peaked_before_n_max": n_peak < n_max}
    metrics: dict[str, Any] = {
        "n_max": int(n_max),
        "prompts": int(n_prompts),
        "candidates": int(curves.k.sum()),
        "candidates_per_prompt": {str(size): int(c) for size, c in zip(*np.unique(curves.k, return_counts=True),
                                                                         strict=True)},
        "proxy_tied_candidates": curves.proxy_tied,
        "prompts_by_n": {str(i): int(c) for i, c in zip(n, counts, strict=True)},
        "kl_bon": _by_n(kl),
        "sqrt_kl_bon": _by_n(sqrt_kl),
        "gold_by_n": _by_n(gold),
        "proxy_by_n": _by_n(means["proxy"]),
        "random_gold": _by_n(means["random"]),
        "oracle_gold": _by_n(means["oracle"]),
        "gain_by_n": _by_n(means["gain"]),
        "fit_gain_by_n": _by_n(sqrt_kl * (fit["alpha"] - fit["beta"] * sqrt_kl)) if fit else None,
        "fit": fit,
        "observed_peak": observed,
        "gain_n_max": float(means["gain"][-1]),
        "gain_n_max_ci": [float(low["gain"][-1]), float(high["gain"][-1])],
        "bootstrap": {"samples": config.bootstrap_samples, "seed": config.seed, "confidence": config.confidence,
                      "unit": "prompt"},
    }
    for name in per_prompt:
        metrics[f"{name}_ci"] = _ci_by_n(low[name], high[name])
    return metrics


#: The gates of ``rewardline bon`` (thresholds in ``params.yaml: evaluate``), checked by :mod:`rewardline.gates`.
BON_GATES: tuple[GateSpec, ...] = (
    GateSpec("min_bon_gain", "gain_n_max_ci_low", "min_bon_gain", ">",
             "lower end of the CI of gold(N_max) − gold(1), the gain of picking by the model"),
    GateSpec("max_overoptimization", "overoptimization", "max_overoptimization", "<=",
             "peak gold over N − gold(N_max), the drop past the peak (Goodhart)"),
)


def check_bon_gates(metrics: dict[str, Any], min_bon_gain: float, max_overoptimization: float) -> dict[str, dict]:
    """:data:`BON_GATES` on :func:`summarize`'s metrics: ``{gate: {value, threshold, op, passed, ...}}``.

    ``min_bon_gain``: lower CI end of gain(N_max) = gold(N_max) − gold(1) > threshold.
    ``max_overoptimization``: max_N gold(N) − gold(N_max) ≤ threshold. An unmeasurable value fails.
    """
    config = BonConfig(min_bon_gain=min_bon_gain, max_overoptimization=max_overoptimization)
    return bon_gate_report(metrics, config).table()


def bon_gate_report(metrics: dict[str, Any], config: BonConfig) -> GateReport:
    """:data:`BON_GATES` checked on the metrics' CI low of the gain at N_max and the drop past the peak."""
    flat = {"gain_n_max_ci_low": metrics["gain_n_max_ci"][0],
            "overoptimization": metrics["observed_peak"]["overoptimization"]}
    return evaluate_gates(BON_GATES, flat, config, stage="bon")


# -- outputs ---------------------------------------------------------------------------------
def report_markdown(metrics: dict[str, Any]) -> str:
    """The table N | KL | gold | CI | random | oracle | proxy, the fit and the gates."""
    lines = [
        "# Best-of-N",
        "",
        f"{metrics['prompts']} prompts, {metrics['candidates']} candidates "
        f"(candidates per prompt: {metrics['candidates_per_prompt']}); exact expectations over random "
        "N-subsets (order statistics); CIs: percentile bootstrap by prompt "
        f"({metrics['bootstrap']['samples']} resamples, {metrics['bootstrap']['confidence']:.0%}). "
        f"Proxy ties ({metrics['proxy_tied_candidates']} candidates) are broken uniformly at random: "
        "the gold of a tie block is its mean.",
        "",
        "| N | prompts | KL | gold | CI | random | oracle | proxy |",
        "| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for n in metrics["gold_by_n"]:
        lo, hi = metrics["gold_ci"][n]
        lines.append(f"| {n} | {metrics['prompts_by_n'][n]} | {fmt(metrics['kl_bon'][n], 3)} | "
                     f"{fmt(metrics['gold_by_n'][n])} | [{fmt(lo)}, {fmt(hi)}] | "
                     f"{fmt(metrics['random_gold'][n])} | {fmt(metrics['oracle_gold'][n])} | "
                     f"{fmt(metrics['proxy_by_n'][n])} |")
    fit, peak = metrics["fit"], metrics["observed_peak"]
    lines += ["", f"Gain at N = {metrics['n_max']}: {fmt(metrics['gain_n_max'])} "
              f"(CI [{fmt(metrics['gain_n_max_ci'][0])}, {fmt(metrics['gain_n_max_ci'][1])}]). "
              f"Observed peak of gold at N = {peak['n_peak']} ({fmt(peak['gold_peak'])}); "
              f"{'peaked before' if peak['peaked_before_n_max'] else 'still rising (or flat) at'} "
              f"N_max = {metrics['n_max']}.", ""]
    if fit:
        if fit["d_peak"] is None:
            peak_text = "no interior peak (β ≤ 0 or α ≤ 0)."
        else:
            where = (f"N* ≈ {fit['n_peak']:.3g}" if fit["n_peak"] is not None
                     else f"log N* ≈ {fit['log_n_peak']:.4g}")
            peak_text = (f"peak d* = {fit['d_peak']:.3f} (KL {fit['kl_peak']:.3f}, {where}, "
                         f"gain {fit['gain_peak']:.4f}).")
        lines.append(f"Fit gain(d) = d(α − βd), d = sqrt(KL): α = {fit['alpha']:.4f}, β = {fit['beta']:.4f}, "
                     f"RMSE {fit['rmse']:.4f} over {fit['points']} points; {peak_text}")
    else:
        lines.append("Fit: not enough points (needs N_max ≥ 3).")
    if "gates" in metrics:
        lines += ["", GateReport.from_dict(metrics, stage="bon").to_markdown().rstrip()]
    return "\n".join(lines) + "\n"


def write_csv(metrics: dict[str, Any], path: Path) -> Path:
    """One row per N (DVC plots: x = ``sqrt_kl``, y = ``gold`` / ``proxy`` / ``random`` / ``oracle``)."""
    header = ["n", "prompts", "kl", "sqrt_kl", "gold", "gold_ci_low", "gold_ci_high", "proxy", "random", "oracle",
              "gain", "fit_gain"]
    rows = [",".join(header)]
    for n in metrics["gold_by_n"]:
        values = [n, metrics["prompts_by_n"][n], metrics["kl_bon"][n], metrics["sqrt_kl_bon"][n],
                  metrics["gold_by_n"][n], *metrics["gold_ci"][n], metrics["proxy_by_n"][n],
                  metrics["random_gold"][n], metrics["oracle_gold"][n], metrics["gain_by_n"][n],
                  (metrics["fit_gain_by_n"] or {}).get(n)]
        rows.append(",".join("" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)) for v in values))
    path.write_text("\n".join(rows) + "\n")
    return path


def write_plot(metrics: dict[str, Any], path: Path) -> Path:
    """Gold (CI band, random, oracle, fit = gold(1) + d(α − βd)) and, on a second axis, proxy vs sqrt(KL_bon)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ns = list(metrics["gold_by_n"])
    x = np.array([metrics["sqrt_kl_bon"][n] for n in ns])

    def series(key: str) -> np.ndarray:
        return np.array([np.nan if metrics[key][n] is None else metrics[key][n] for n in ns])

    fig = Figure(figsize=(6.5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ci = np.array([[np.nan if v is None else v for v in metrics["gold_ci"][n]] for n in ns])
    ax.fill_between(x, ci[:, 0], ci[:, 1], color="C0", alpha=0.2, label="gold 95 % CI")
    ax.plot(x, series("gold_by_n"), "o-", color="C0", label="gold of proxy's pick")
    ax.plot(x, series("random_gold"), "--", color="grey", label="random pick")
    ax.plot(x, series("oracle_gold"), ":", color="C2", label="oracle (best gold)")
    if metrics["fit_gain_by_n"]:
        gold_1 = metrics["gold_by_n"]["1"]
        ax.plot(x, gold_1 + series("fit_gain_by_n"), "-", color="C3", lw=1, label="fit d(α − βd)")
    ax.set_xlabel("sqrt(KL_bon)  (nats^½)")
    ax.set_ylabel("gold")
    proxy_ax = ax.twinx()
    proxy_ax.plot(x, series("proxy_by_n"), "s-", color="C1", ms=3, label="proxy of pick")
    proxy_ax.set_ylabel("proxy reward", color="C1")
    handles = ax.get_legend_handles_labels()[0] + proxy_ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7, loc="best")
    top = ax.secondary_xaxis("top", functions=(lambda d: d, lambda d: d))
    top.set_xticks(x[:: max(1, len(x) // 8)], labels=ns[:: max(1, len(x) // 8)])
    top.set_xlabel("N")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def candidate_rewards(model_dir: Path | str, candidates: Candidates) -> np.ndarray:
    """The model's reward of every candidate: for a process reward model its configured step aggregate
    (``step_aggregate``, e.g. ``min_k p_k``) over the response's lines as steps
    (:func:`rewardline.modeling.step_scores.score_solution_texts`), else the sequence reward."""
    from rewardline.modeling.score import score_texts
    from rewardline.modeling.step_scores import is_process_model, score_solution_texts

    if is_process_model(model_dir):
        return score_solution_texts(model_dir, candidates.prompts, candidates.responses).astype(np.float64)
    return score_texts(model_dir, candidates.prompts, candidates.responses).astype(np.float64)


# locked; written to a staging folder, published whole (nothing else in out_dir is kept); an --out holding an input is
# refused
@writes_output("out_dir", inputs=lambda args: [p for p in (*args["sources"], args["model_dir"],
                                                            args.get("gold_model_dir")) if p and Path(p).exists()])
def bon_from_sources(
    model_dir: Path | str,
    sources: list[Path | str],
    out_dir: Path | str,
    config: BonConfig,
    fmt: str = "auto",
    gold_model_dir: Path | str | None = None,
) -> dict[str, Any]:
    """Load candidates, score them with the proxy model (and the gold model: Gao et al.'s synthetic
    setup, gold = a second RM's score), and :func:`run_bon`. Raises :class:`BadInput` on bad records."""
    candidates = load_candidates(sources, fmt)
    proxy = candidate_rewards(model_dir, candidates)
    gold = candidate_rewards(gold_model_dir, candidates) if gold_model_dir is not None else None
    info = {"model": str(model_dir), "sources": candidates.origins,
            "gold": f"model {gold_model_dir}" if gold_model_dir is not None else "from the data"}
    return run_bon(candidates, proxy, out_dir, config, gold, info)


def run_bon(
    candidates: Candidates,
    proxy: np.ndarray,
    out_dir: Path | str,
    config: BonConfig,
    gold: np.ndarray | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Curves, fit, gates → ``out_dir``/{metrics.json, report.md, bon.csv, bon.png}; returns the metrics.

    ``gold`` replaces ``candidates.gold`` (e.g. a gold model's scores). Does not raise on a failed gate."""
    gold_values = candidates.gold if gold is None else np.asarray(gold, np.float64)
    if np.bincount(candidates.prompt_index).max() < 2:
        raise ValueError("best-of-N needs a prompt with at least 2 candidates; every prompt has 1")
    curves = bon_curves(candidates.prompt_index, proxy, gold_values, config.max_n)
    metrics = summarize(curves, config)
    gates = bon_gate_report(metrics, config)
    metrics.update(gates.metrics_entries())
    metrics["config"] = config.model_dump()
    metrics.update(info or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(json_safe(metrics), out / METRICS_FILE)  # strict JSON: NaN → null
    gates.write_json(out / GATES_FILE)
    (out / REPORT_FILE).write_text(report_markdown(metrics))
    write_csv(metrics, out / "bon.csv")
    write_plot(metrics, out / "bon.png")
    return metrics
