"""Benchmark (issue 14): absolute calibration of ``win_prob`` vs the anchor, four ways, on the same held-out prompts.

Data: the AlpacaEval best-of-16 data (``--data``, the upstream layout: ``model_outputs/`` and
``annotations/``), read by the project's ``alpaca-eval`` adapter: per instruction the judged samples'
K-way ranking and each sample's soft comparison with the reference answer (the anchor). The
project's own stages run on it (ingest → validate → pairs with ``pairs.targets: thurstone``), so the
split is the project's split by prompt (train / val / test).

Models (MiniLM-L6, same steps, seed and data; ``train.objective``):

* ``bt`` — two rows: ``bt+logistic`` (today's evaluate: ``q = σ(w·r + c)``, one global logistic map
  of the reward fitted on the *val* anchor comparisons) and ``bt+isotonic`` (``q = g(r)``, ``g`` the
  isotonic regression of the val anchor labels on the reward, sklearn, clipped at the ends);
* ``thurstone`` — pointwise fit to the probit utilities, ``q = Φ(r)`` (no val fitting);
* ``thurstone+sd`` — the same model as served: ``q = Φ(r / √(1 + s²))``, ``s`` the model's ``residual_sd``
  (the val rmse of r − u, stored by training; :func:`rewardline.modeling.score.win_probability`);
* ``thurstone+valsd`` — ``q = Φ(r / √(1 + s²))`` with ``s ≥ 0`` fitted instead by maximum likelihood of the *val*
  anchor comparisons' (soft) labels (s = 0 allowed, so never worse than Φ(r) on val; :func:`fit_scale_on_val`);
* ``bt+thurstone`` — ``q = Φ(r)``; ``bt+thurstone+sd`` — ``q = Φ(r / √(1 + s²))``;
* ``+anchor`` rows score the anchor too and use the reward *difference* ``Δ = r − r_anchor``:
  ``bt+anchor`` ``q = σ(Δ / T)``, ``T`` the pairwise temperature fitted on all val pairs (what evaluate fits);
  ``thurstone+anchor`` and ``bt+thurstone+anchor`` ``q = Φ(Δ)`` (Thurstone Case V: P(i ≻ j) = Φ(u_i − u_j),
  and u_anchor = 0), nothing fitted. The prompt's level, which one response cannot show, cancels in Δ.
  ``+anchor+sd``: ``q = Φ(Δ / √(1 + 2s²))``, s the model's ``residual_sd`` (Δ's error is the difference of two
  responses' errors, sd s√2 if independent); ``+anchor+valsd``: s√2 replaced by the scale fitted on the val
  anchor comparisons' Δ (:func:`fit_scale_on_val`); ``+anchor+valmap``: ``q = F(a·Δ + b)`` (F = Φ, or σ for
  ``bt``), slope and offset fitted by maximum likelihood on the val anchor comparisons (:func:`fit_map_on_val`),
  which also reports the 5-fold cross-validated val NLL (folds by prompt) of the map against the unfitted
  ``F(Δ)`` (``F(Δ/T)`` for ``bt``): the rule for whether evaluate should fit such a map; ``+anchor+trainmap``: the
  same map fitted instead on the *train* split's anchor comparisons (about 8× the val prompts;
  :func:`fit_map_on_train`), with the evaluated split's NLL of the map and of the unfitted reading.

Columns, on the *test* split only: pairwise accuracy over all test pairs (ties skipped, soft labels as
in evaluate), absolute ECE (15 bins), Brier and AUROC on the test anchor comparisons, each with a 95 %
percentile bootstrap CI resampling *prompts* (1000 draws); plus the Brier skill score vs the test base
rate. Nothing is chosen on test: the BT maps are fitted on val; knobs (``--prior-sd``,
``--pointwise-weight``) are to be compared with ``--split val``.

    nice -n 5 python benchmarks/bench_calibration.py --data /work/shared/data/alpacaeval_bon \
        --workdir /tmp/rl-calib --steps 60 --max-length 128 --seeds 0

Trained models are cached under ``--workdir/models`` (keyed by every knob); every run appends one
line per row to ``--results`` (TSV).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROWS = ("bt+logistic", "bt+isotonic", "bt+anchor", "bt+anchor+valmap", "thurstone", "thurstone+sd", "thurstone+valsd",
        "thurstone+anchor", "thurstone+anchor+sd", "thurstone+anchor+valsd", "thurstone+anchor+valmap", "bt+thurstone",
        "bt+thurstone+sd", "bt+thurstone+anchor", "bt+thurstone+anchor+sd", "bt+thurstone+anchor+valsd",
        "bt+thurstone+anchor+valmap", "bt+anchor+trainmap", "thurstone+anchor+trainmap")
OBJECTIVE_OF_ROW = {row: ("bt+thurstone" if row.startswith("bt+thurstone") else row.split("+")[0]) for row in ROWS}
NEEDS_VAL = ("bt+logistic", "bt+isotonic", "bt+anchor", "thurstone+valsd", "thurstone+anchor+valsd",
             "bt+thurstone+anchor+valsd", "bt+anchor+trainmap", *(row for row in ROWS if row.endswith("+valmap")))
TSV_COLUMNS = ("date", "row", "seed", "split", "steps", "max_length", "lr", "prior_sd", "pointwise_weight",
               "accuracy", "accuracy_ci", "ece", "ece_ci", "brier", "brier_ci", "brier_skill", "auroc", "auroc_ci",
               "n_pairs", "n_anchor", "n_prompts", "train_s", "load_avg", "residual_sd", "target_centre")


def combined_annotations(data: Path, out: Path) -> Path:
    """All judged records of ``data/annotations/*.json.gz`` in one AlpacaEval annotations file
    (the best-of-K layout): the adapter then ranks each instruction's samples K-way besides
    comparing each with the reference. The records are copied unchanged; the adapter parses them."""
    if not out.exists():
        records = []
        for path in sorted((data / "annotations").glob("*.json.gz")):
            with gzip.open(path, "rt") as f:
                records += json.load(f)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(records))
    return out


def prepare(data: Path, workdir: Path, prior_sd: float, anchor_labels: str = "score",
            prior_centre: str = "prompt") -> tuple[Path, dict]:
    """ingest → validate → pairs (``targets: thurstone``) with the project's library; cached per prior sd,
    ``pairs.anchor_labels`` and ``pairs.target_prior_centre``."""
    from rewardline.data.ingest import IngestConfig, Source, run_ingest
    from rewardline.pairs.expand import PairsConfig, run_pairs
    from rewardline.validation.validate import ValidateConfig, run_validate

    root = workdir / f"data-sd{prior_sd:g}-{anchor_labels}-{prior_centre}"
    stats_path = root / "prepare.json"
    if stats_path.exists():
        return root / "pairs", json.loads(stats_path.read_text())
    source = combined_annotations(data, workdir / "annotations_all.json")
    ingest = run_ingest(IngestConfig([Source(str(source), "alpaca-eval")]), root / "ingested")
    # one judge: agreement is not measurable, so the alpha gate cannot apply
    run_validate(root / "ingested", root / "validated", ValidateConfig(min_alpha=-1.0))
    config = PairsConfig(targets="thurstone", target_prior_sd=prior_sd, anchor_labels=anchor_labels,
                         target_prior_centre=prior_centre)
    pairs = run_pairs(root / "validated", root / "pairs", config)
    stats = {"rows_in": ingest["rows_in"], "rows_quarantined": ingest["rows_quarantined"],
             "prompts": ingest["prompts"], "pairs": pairs["pairs"], "targets": pairs["targets"],
             **{f"prompts_{s}": pairs[f"prompts_{s}"] for s in ("train", "val", "test")}}
    stats_path.write_text(json.dumps(stats))
    return root / "pairs", stats


def model_key(objective: str, seed: int, args: argparse.Namespace) -> str:
    extra = f"-w{args.pointwise_weight:g}" if objective == "bt+thurstone" else ""
    extra += "-cprompt" if args.target_centre == "prompt" and objective != "bt" else ""
    if args.recipe:  # params.yaml's train section: its max_length, lr, freezing; one epoch
        return f"{objective}-s{seed}-recipe-sd{args.prior_sd:g}{extra}".replace("+", "_")
    return (f"{objective}-s{seed}-L{args.max_length}-n{args.steps}-lr{args.lr:g}-sd{args.prior_sd:g}{extra}"
            .replace("+", "_"))


def trained_model(pairs_dir: Path, objective: str, seed: int, args: argparse.Namespace) -> tuple[Path, dict]:
    """Train (or reuse the cached) MiniLM reward model with ``objective``; its dir and training metrics (with
    ``config``, the TrainConfig, for models trained since it was recorded)."""
    from bench_quality import default_recipe  # sibling benchmark script: params.yaml's train section

    from rewardline.training.loop import TrainConfig, train

    out = args.workdir / "models" / model_key(objective, seed, args)
    done = out / "bench_train.json"
    if not done.exists():
        run = {"objective": objective, "seed": seed, "pointwise_weight": args.pointwise_weight, "progress": False,
               "target_centre": args.target_centre,
               "checkpoint_every": 0, "cache_dir": str(args.workdir / "tokenized"),
               "checkpoint_dir": str(out.parent / f"{out.name}.checkpoints")}  # not the pipeline's: runs side by side
        if args.recipe:
            cfg = default_recipe([]).replace(**run)
        else:
            cfg = TrainConfig(**run, max_length=args.max_length, max_steps=args.steps, lr=args.lr)
        metrics = train(pairs_dir, out, cfg)
        done.write_text(json.dumps({**metrics, "config": cfg.model_dump()}, default=str))
    return out, json.loads(done.read_text())


def prompt_bootstrap_auroc(q: np.ndarray, y: np.ndarray, prompts: np.ndarray, samples: int, seed: int,
                           confidence: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the AUROC of ``q`` vs ``1[y > 0.5]`` (decided comparisons), resampling prompts:
    a resample weights each comparison by how often its prompt was drawn (``sample_weight``)."""
    from sklearn.metrics import roc_auc_score

    from rewardline.evaluation.metrics import TIE_TOL, bootstrap_counts, prompt_codes

    decided = np.abs(y - 0.5) > TIE_TOL
    q, preferred, codes = q[decided], y[decided] > 0.5, prompt_codes(prompts[decided])[0]
    counts = bootstrap_counts(int(codes.max()) + 1, samples, seed)
    values = []
    for draw in counts:
        weight = draw[codes]
        if preferred[weight > 0].all() or not preferred[weight > 0].any():
            continue
        values.append(roc_auc_score(preferred, q, sample_weight=weight))
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))


def fit_scale_on_val(reward: np.ndarray, label: np.ndarray) -> float:
    """``s = argmin_{s ≥ 0} −mean[y log q + (1 − y) log(1 − q)]``, ``q = Φ(r / √(1 + s²))``, on the val anchor
    comparisons (bounded scalar search on [0, 20], kept only when it beats s = 0)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import ndtr

    def nll(s: float) -> float:
        return _nll(ndtr(reward / np.sqrt(1.0 + s * s)), label)

    best = minimize_scalar(nll, bounds=(0.0, 20.0), method="bounded")
    return float(best.x) if best.fun < nll(0.0) else 0.0


def _nll(q: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of soft labels ``y`` under ``q`` (clipped to [1e-12, 1 − 1e-12])."""
    q = np.clip(q, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def ece_floor(q: np.ndarray, draws: int = 500, seed: int = 0) -> float:
    """Mean ECE of a *perfectly calibrated* predictor with these ``q`` on this many comparisons: labels drawn
    ``y ~ Bernoulli(q)``, ECE as reported (15 bins), averaged over ``draws``. The sampling floor of the metric
    (the judge's soft labels vary less than 0/1 ones, so for them the floor is somewhat lower)."""
    from scipy.special import logit

    from rewardline.evaluation.calibration import calibration_metrics

    q = np.clip(q, 1e-6, 1 - 1e-6)
    rng = np.random.default_rng(seed)
    return float(np.mean([calibration_metrics(logit(q), rng.binomial(1, q).astype(np.float64)).ece
                          for _ in range(draws)]))


def fit_map_on_val(delta: np.ndarray, label: np.ndarray, prompts: np.ndarray, link: str, scale: float = 1.0,
                   folds: int = 5) -> dict:
    """``(a, b)`` of ``q = F(a·Δ + b)`` by maximum likelihood of the val anchor comparisons' soft labels (F = Φ for
    probit, σ for logit; start ``a = 1/scale``), and the ``folds``-fold cross-validated val NLL by prompt of the
    map and of the unfitted ``F(Δ / scale)`` (prompts permuted with seed 0)."""
    cdf = link_cdf(link)
    unique = np.unique(prompts)
    np.random.default_rng(0).shuffle(unique)
    cv_map = cv_raw = 0.0
    for held in np.array_split(unique, folds):
        out = np.isin(prompts, held)
        a, b = fit_slope_offset(delta[~out], label[~out], cdf, scale)
        cv_map += _nll(cdf(a * delta[out] + b), label[out]) * out.sum()
        cv_raw += _nll(cdf(delta[out] / scale), label[out]) * out.sum()
    a, b = fit_slope_offset(delta, label, cdf, scale)
    return {"slope": float(a), "offset": float(b), "cv_nll_map": cv_map / delta.size,
            "cv_nll_unfitted": cv_raw / delta.size, "cdf": cdf}


def link_cdf(link: str):
    """F of a link: Φ for probit, σ for logit."""
    from scipy.special import expit, ndtr

    return ndtr if link == "probit" else expit


def fit_slope_offset(delta: np.ndarray, label: np.ndarray, cdf, scale: float = 1.0) -> np.ndarray:
    """``(a, b) = argmin NLL(F(a·Δ + b); y)`` of soft labels ``y`` (Nelder–Mead from ``a = 1/scale, b = 0``)."""
    from scipy.optimize import minimize

    return minimize(lambda ab: _nll(cdf(ab[0] * delta + ab[1]), label), [1.0 / scale, 0.0], method="Nelder-Mead").x


def fit_map_on_train(train, held, link: str, scale: float = 1.0) -> dict:
    """``q = F(a·Δ + b)`` fitted on the *train* anchor comparisons (``train``; F = Φ for probit, σ for logit), and
    on the evaluated ones (``held``) the NLL of the map and of the unfitted ``F(Δ / scale)``: the rule's figures."""
    cdf = link_cdf(link)
    a, b = fit_slope_offset(train.reward - train.anchor_reward, train.label, cdf, scale)
    delta = held.reward - held.anchor_reward
    return {"slope": float(a), "offset": float(b), "n_train_anchor": int(train.label.size),
            "nll_map": _nll(cdf(a * delta + b), held.label), "nll_unfitted": _nll(cdf(delta / scale), held.label),
            "cdf": cdf}


def win_probabilities(row: str, test, val, link: str | None, residual_sd: float = 0.0,
                      temperature: float = 1.0) -> np.ndarray:
    """``q`` of each anchor comparison of the evaluated split, by the row's method (module docstring)."""
    from scipy.special import expit
    from sklearn.isotonic import IsotonicRegression

    from rewardline.evaluation.absolute import fit_logistic_map
    from rewardline.modeling.score import win_probability

    if row == "bt+anchor":
        return expit((test.reward - test.anchor_reward) / temperature)
    if row.startswith(("thurstone", "bt+thurstone")):
        if link is None:
            raise ValueError(f"{row}: the model has no link (not trained on utility targets)")
        x = test.reward - test.anchor_reward if "+anchor" in row else test.reward
        return win_probability(x, link, row_scale(row, val, residual_sd))
    if row == "bt+logistic":
        w, c = fit_logistic_map(val.reward, val.label)
        return expit(w * test.reward + c)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    return iso.fit(val.reward, val.label).predict(test.reward)


def valmap(row: str, val, link: str | None, temperature: float) -> dict:
    """:func:`fit_map_on_val` for a ``+anchor+valmap`` row: logit with the pairwise ``T`` for bt, else probit."""
    bt = OBJECTIVE_OF_ROW[row] == "bt"
    return fit_map_on_val(val.reward - val.anchor_reward, val.label, val.prompt_ids, "logit" if bt else link,
                          temperature if bt else 1.0)


def row_scale(row: str, val, residual_sd: float) -> float:
    """The s a row applies in Φ(x / √(1 + s²)) (0: none)."""
    if row.endswith("+valsd"):
        x = val.reward - val.anchor_reward if "+anchor" in row else val.reward
        return fit_scale_on_val(x, val.label)
    if row.endswith("+sd"):
        return float(np.sqrt(2.0) * residual_sd if "+anchor" in row else residual_sd)
    return 0.0


def scored_splits(model_dir: Path, pairs_dir: Path, splits: tuple[str, ...]) -> dict[str, tuple]:
    """Per split: (pairs, reward_a, reward_b) of :func:`rewardline.evaluation.run.score_pairs`; the rewards are
    cached beside the model (``bench_scores-<data>.npz``), so further rows on a cached model cost no scoring."""
    from rewardline.data.tables import read_split
    from rewardline.evaluation.run import score_pairs

    cache = model_dir / f"bench_scores-{pairs_dir.parent.name}.npz"
    held = dict(np.load(cache)) if cache.exists() else {}
    missing = tuple(s for s in splits if f"{s}_a" not in held)
    if missing:
        for split, (_, reward_a, reward_b, *_) in score_pairs(model_dir, pairs_dir, missing).items():
            held[f"{split}_a"], held[f"{split}_b"] = reward_a, reward_b
        np.savez(cache, **held)
    return {s: (read_split(pairs_dir, s), held[f"{s}_a"], held[f"{s}_b"]) for s in splits}


def evaluate_model(model_dir: Path, pairs_dir: Path, rows: list[str], split: str, samples: int) -> dict[str, dict]:
    """Each row's accuracy, ECE, Brier, Brier skill and AUROC with prompt-bootstrap CIs on ``split``."""
    from rewardline.evaluation.absolute import anchor_comparisons, calibration_of
    from rewardline.evaluation.calibration import fit_temperature
    from rewardline.evaluation.metrics import accuracy_with_ci
    from rewardline.evaluation.run import anchor_ids, model_calibration

    needs_val = any(row in NEEDS_VAL for row in rows)  # the BT maps fit on val
    needs_train = any(row.endswith("+trainmap") for row in rows)
    scored = scored_splits(model_dir, pairs_dir,
                           tuple(dict.fromkeys(("val",) * needs_val + ("train",) * needs_train + (split,))))
    anchors = anchor_ids(pairs_dir)
    val = anchor_comparisons(*scored["val"][:3], anchors) if needs_val else None
    temperature = 1.0  # of σ((r_a − r_b) / T), fitted on every val pair (bt+anchor)
    if needs_val:
        val_pairs, va, vb = scored["val"][:3]
        temperature = fit_temperature(va - vb, val_pairs["label"].to_numpy(zero_copy_only=False).astype(np.float64))
    held_out = anchor_comparisons(*scored[split][:3], anchors)
    pairs, ra, rb = scored[split][:3]
    prompts = np.asarray(pairs["prompt_id"].to_pylist(), dtype=object)
    accuracy = accuracy_with_ci(ra, rb, pairs["label"].to_numpy(zero_copy_only=False), prompts, samples)
    calibration = model_calibration(model_dir)
    link, residual_sd = calibration["link"], calibration["residual_sd"]
    out = {}
    for row in rows:
        fitted = valmap(row, val, link, temperature) if row.endswith("+valmap") else {}
        if row.endswith("+trainmap"):
            bt = OBJECTIVE_OF_ROW[row] == "bt"
            fitted = fit_map_on_train(anchor_comparisons(*scored["train"][:3], anchors), held_out,
                                      "logit" if bt else link, temperature if bt else 1.0)
        if fitted:  # q = F(a·Δ + b), the map fitted on val or train
            q = fitted.pop("cdf")(fitted["slope"] * (held_out.reward - held_out.anchor_reward) + fitted["offset"])
        else:
            q = win_probabilities(row, held_out, val, link, residual_sd, temperature)
        details, _ = calibration_of(q, held_out.label, held_out.prompt_ids, samples)
        q_clipped = np.clip(q, 1e-12, 1 - 1e-12)
        out[row] = {"accuracy": accuracy.accuracy, "accuracy_ci": [accuracy.ci_low, accuracy.ci_high],
                    "n_pairs": accuracy.n_pairs, "n_prompts": accuracy.n_prompts, "n_anchor": details["n"],
                    **{k: details[k] for k in ("ece", "ece_ci", "brier", "brier_ci", "brier_skill", "auroc",
                                               "base_rate")},
                    "residual_sd": row_scale(row, val, residual_sd), "ece_floor": ece_floor(q),
                    **fitted,
                    "auroc_ci": list(prompt_bootstrap_auroc(q_clipped, held_out.label, held_out.prompt_ids,
                                                            samples, 0))}
    return out


def target_diagnostic(pairs_dir: Path, samples: int) -> dict:
    """Φ(u) of the fitted *targets* against the val anchor comparisons they were fitted to (in-sample):
    how calibrated a model that reproduced its targets exactly could be, per prior sd (val only). ``ece``,
    ``brier``, ... score Φ(u) against the pair labels (0/1 with ``--anchor-labels rank``); ``judge_*`` against
    the judge's probability ``preference − 1`` of each comparison, whatever the labels."""
    import pyarrow.compute as pc
    from scipy.special import ndtr

    from rewardline.data.tables import TARGETS, read_split, read_table, table_path
    from rewardline.evaluation.absolute import anchor_comparisons, calibration_of
    from rewardline.evaluation.run import anchor_ids

    targets = read_table(table_path(pairs_dir, TARGETS), columns=["response_id", "utility"])
    val = read_split(pairs_dir, "val")
    index = {r: u for r, u in zip(targets["response_id"].to_pylist(), targets["utility"].to_numpy(), strict=True)}
    ua = np.array([index[r] for r in val["response_a_id"].to_pylist()])
    ub = np.array([index[r] for r in val["response_b_id"].to_pylist()])
    anchors = anchor_ids(pairs_dir)
    comparisons = anchor_comparisons(val, ua, ub, anchors)
    q = ndtr(comparisons.reward)
    details, _ = calibration_of(q, comparisons.label, comparisons.prompt_ids, samples)
    judge = judge_probabilities(pairs_dir.parent / "validated", anchors)
    non_anchor = np.where(np.asarray(pc.is_in(val["response_a_id"], value_set=anchors), bool),
                          np.asarray(val["response_b_id"].to_pylist(), object),
                          np.asarray(val["response_a_id"].to_pylist(), object))
    one = np.asarray(pc.is_in(val["response_a_id"], value_set=anchors), bool) ^ np.asarray(
        pc.is_in(val["response_b_id"], value_set=anchors), bool)
    y_judge = np.array([judge[r] for r in non_anchor[one]])
    vs_judge, _ = calibration_of(q, y_judge, comparisons.prompt_ids, samples)
    return {"n_anchor": details["n"], "mean_q": float(q.mean()), "base_rate": details["base_rate"],
            "utility_sd": float(comparisons.reward.std()),
            **{k: details[k] for k in ("ece", "ece_ci", "brier", "brier_skill", "auroc")},
            **{f"judge_{k}": vs_judge[k] for k in ("base_rate", "ece", "ece_ci", "brier", "brier_skill")}}


def judge_probabilities(validated: Path, anchors) -> dict[str, float]:
    """Per non-anchor response: the mean judge probability ``score`` of its K = 2 rankings against an anchor
    (AlpacaEval: ``preference − 1``), read from the validated rankings (whatever ``pairs.anchor_labels``)."""
    import pyarrow.compute as pc

    from rewardline.data.tables import read_table, table_path

    rankings = read_table(table_path(validated, "rankings"), columns=["ranking_id", "response_id", "score"])
    rid = np.asarray(rankings["ranking_id"].to_pylist(), object)
    is_anchor = np.asarray(pc.is_in(rankings["response_id"], value_set=anchors), bool)
    _, code, size = np.unique(rid, return_inverse=True, return_counts=True)
    with_anchor = np.bincount(code, is_anchor)[code] > 0
    rows = np.flatnonzero((size[code] == 2) & with_anchor & ~is_anchor)
    score = rankings["score"].to_numpy(zero_copy_only=False)
    ids = np.asarray(rankings["response_id"].to_pylist(), object)
    sums: dict[str, list[float]] = {}
    for r in rows:
        sums.setdefault(ids[r], []).append(float(score[r]))
    return {k: float(np.mean(v)) for k, v in sums.items()}


def _fmt(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:.4f}" for v in value) + "]"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def append_tsv(path: Path, lines: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a") as f:
        if new:
            f.write("\t".join(TSV_COLUMNS) + "\n")
        for line in lines:
            f.write("\t".join(_fmt(line.get(c, "")) for c in TSV_COLUMNS) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="AlpacaEval best-of-16 directory (annotations/)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rl-calib"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--prior-sd", type=float, default=2.0, help="pairs.target_prior_sd")
    parser.add_argument("--pointwise-weight", type=float, default=1.0, help="train.pointwise_weight (bt+thurstone)")
    parser.add_argument("--target-centre", choices=["anchor", "prompt"], default="prompt",
                        help="train.target_centre (prompt: the pointwise objectives regress u − the prompt mean u)")
    parser.add_argument("--recipe", action="store_true",
                        help="train params.yaml's recipe (its max_length, lr, freezing; one epoch) instead of "
                             "--max-length / --steps / --lr")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--split", choices=["val", "test"], default="test",
                        help="val: to choose knobs (the BT maps are then fitted and scored on val)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "calibration_runs.tsv")
    parser.add_argument("--anchor-labels", choices=["score", "rank"], default="score", help="pairs.anchor_labels")
    parser.add_argument("--prior-centre", choices=["anchor", "prompt"], default="prompt",
                        help="pairs.target_prior_centre")
    parser.add_argument("--target-diagnostic", type=float, nargs="+", metavar="SD",
                        help="no training: Φ(u) of the fitted targets vs the val anchor labels, per prior sd")
    args = parser.parse_args()
    for sd in args.target_diagnostic or []:
        pairs_dir = prepare(args.data, args.workdir, sd, args.anchor_labels, args.prior_centre)[0]
        print(json.dumps({"prior_sd": sd, "anchor_labels": args.anchor_labels,
                          "prior_centre": args.prior_centre,
                          **target_diagnostic(pairs_dir, args.bootstrap)}, default=float), flush=True)
    if args.target_diagnostic:
        return
    pairs_dir, data_stats = prepare(args.data, args.workdir, args.prior_sd, args.anchor_labels, args.prior_centre)
    report: dict = {"data": data_stats, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "runs": []}
    for seed in args.seeds:
        for objective in dict.fromkeys(OBJECTIVE_OF_ROW[r] for r in args.rows):
            model_dir, trained = trained_model(pairs_dir, objective, seed, args)
            cfg = trained.get("config", {"max_steps": args.steps, "max_length": args.max_length, "lr": args.lr})
            rows = [r for r in args.rows if OBJECTIVE_OF_ROW[r] == objective]
            for row, metrics in evaluate_model(model_dir, pairs_dir, rows, args.split, args.bootstrap).items():
                line = {"date": time.strftime("%Y-%m-%dT%H:%M"), "row": row, "seed": seed, "split": args.split,
                        "steps": trained.get("steps", cfg["max_steps"]), "max_length": cfg["max_length"],
                        "lr": cfg["lr"], "prior_sd": args.prior_sd, "pointwise_weight": args.pointwise_weight,
                        "target_centre": args.target_centre, "train_s": float(trained["train_seconds"]),
                        "val_accuracy": trained.get("val_accuracy"), "load_avg": os.getloadavg()[0], **metrics}
                report["runs"].append(line)
                append_tsv(args.results, [line])
                print(json.dumps(line, default=float), flush=True)
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
