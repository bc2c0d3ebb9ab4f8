"""Benchmark: choose the PRM's ``prm_pair_weight`` μ by K-fold cross-validation over the training problems.

The problems (JSONL lines) of the real-solutions source of the default PRM recipe (``--real``, default
``data/raw/gsm8k/model_solutions_train_200.jsonl``) are permuted with ``numpy.random.default_rng(--seed)``;
fold of a problem = its position in the permutation mod ``--folds``. For every fold ``f`` and candidate μ:

* ingest, as ``prm_ingest`` does (``params.yaml: ingest.*``), ``prm.sources`` with the real-solutions source
  replaced by the problems of the other folds (same format and ``step_labels``);
* train the default PRM recipe, ``train(ING, MODEL, prm_train_config(params).replace(prm_pair_weight=μ))``,
  as ``dvc repro prm_train`` does (its own 80/10/10 split by problem applies inside the training folds);
* score every solution of fold ``f``'s problems (never trained or validated on) with the step aggregate
  (default ``min``) and measure, per problem ``p`` with solutions ``i`` of outcome ``o_i`` and score ``s_i``:

      best_p   = mean of o_i over the top-scored solutions (ties: mean),   random_p = mean_i o_i
      gain     = mean_p (best_p − random_p)                                   (primary)
      pair acc = mean over correct a, wrong b of one problem of 1[s_a > s_b] (+ ½ on ties)   (tie-break)

Pick: the μ with the higher mean over folds of ``gain``; then pair accuracy; then the first μ listed.
Also reported: the pooled gain over all problems (each held out once) with a 95 % percentile bootstrap CI by
problem, and the paired per-problem difference between the μ's. Each finished (fold, μ) run is kept under
``--workdir`` (``fold{f}/mu{μ}/result.json``) and reused on a rerun, so an interrupted run resumes::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_prm_cv.py --mu 1 --mu 8 \\
        --workdir /tmp/prm-cv --out benchmarks/results/prm_cv.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def fold_of(n_problems: int, folds: int, seed: int) -> np.ndarray:
    """Fold index of each of ``n_problems`` problems: position in a seeded permutation mod ``folds``."""
    fold = np.empty(n_problems, np.int64)
    fold[np.random.default_rng(seed).permutation(n_problems)] = np.arange(n_problems) % folds
    return fold


def per_problem(reward: np.ndarray, outcome: np.ndarray, prompt_ids: list[str]) -> dict[str, Any]:
    """Per-problem best-of-N (``best``), expected random pick (``random``) and pair-accuracy terms (sums of
    ``1[s_a > s_b] + ½·1[s_a = s_b]`` and pair counts), in first-seen problem order."""
    groups: dict[str, list[int]] = {}
    for i, pid in enumerate(prompt_ids):
        groups.setdefault(pid, []).append(i)
    best, random, pair_hits, pair_counts = [], [], [], []
    for idx in groups.values():
        r, o = reward[idx], outcome[idx]
        if np.isfinite(r).any():
            top = r == np.nanmax(r)
            best.append(float(o[top].mean()))
        else:
            best.append(float(o.mean()))
        random.append(float(o.mean()))
        diff = r[o == 1][:, None] - r[o == 0][None, :]
        pair_hits.append(float((0.5 * (np.sign(diff) + 1)).sum()))
        pair_counts.append(int(diff.size))
    return {"problems": list(groups), "best": best, "random": random, "pair_hits": pair_hits,
            "pair_counts": pair_counts}


def summary(pp: dict[str, Any]) -> dict[str, float | int | None]:
    """Fold-level metrics from :func:`per_problem`'s lists."""
    best, random = np.array(pp["best"]), np.array(pp["random"])
    pairs = int(np.sum(pp["pair_counts"]))
    return {"problems": len(best), "pairs": pairs, "best_of_n": float(best.mean()), "random": float(random.mean()),
            "gain": float((best - random).mean()),
            "pair_accuracy": float(np.sum(pp["pair_hits"]) / pairs) if pairs else None}


def bootstrap_ci(values: np.ndarray, samples: int = 1000, seed: int = 0) -> list[float]:
    """95 % percentile bootstrap CI of the mean of ``values`` (resampling problems)."""
    idx = np.random.default_rng(seed).integers(0, len(values), (samples, len(values)))
    return [float(q) for q in np.quantile(values[idx].mean(axis=1), [0.025, 0.975])]


def write_fold_files(real: Path, fold: np.ndarray, f: int, fold_dir: Path) -> tuple[Path, Path]:
    """``train_real.jsonl`` (the other folds' problems) and ``heldout_real.jsonl`` (fold ``f``'s) in ``fold_dir``."""
    lines = [line for line in real.read_text().splitlines() if line.strip()]
    if len(lines) != len(fold):
        raise ValueError(f"{real}: {len(lines)} problems, expected {len(fold)}")
    fold_dir.mkdir(parents=True, exist_ok=True)
    train_file, heldout_file = fold_dir / "train_real.jsonl", fold_dir / "heldout_real.jsonl"
    train_file.write_text("".join(line + "\n" for line, k in zip(lines, fold, strict=True) if k != f))
    heldout_file.write_text("".join(line + "\n" for line, k in zip(lines, fold, strict=True) if k == f))
    return train_file, heldout_file


def run_one(params: dict[str, Any], real: Path, train_file: Path, heldout_file: Path, mu: float, run_dir: Path,
            aggregate: str) -> dict[str, Any]:
    """Ingest, train and score one (fold, μ); the result (also written to ``run_dir/result.json``)."""
    from rewardline.config import build
    from rewardline.data.ingest import IngestConfig, run_ingest
    from rewardline.evaluation.process import PrmConfig, prm_train_config
    from rewardline.modeling.model import RewardModel
    from rewardline.modeling.step_scores import aggregate_steps, score_steps
    from rewardline.training.loop import train
    from rewardline.training.step_data import read_solutions

    prm = build(PrmConfig, params["prm"], name="prm")
    real_sources = [s for s in prm.sources if Path(s.path).resolve() == real.resolve()]
    if len(real_sources) != 1:
        raise ValueError(f"{real} is not one of prm.sources ({[s.path for s in prm.sources]})")
    real_source = real_sources[0]
    sources = [real_source.model_copy(update={"path": str(train_file)}) if s is real_source else s
               for s in prm.sources]
    shared = {k: v for k, v in params["ingest"].items() if k != "sources"}
    ing, heldout_ing = run_dir / "ingest", run_dir / "heldout"
    run_ingest(build(IngestConfig, {**shared, "sources": sources}, name="cv.sources"), ing)
    run_ingest(build(IngestConfig, {**shared, "sources": [real_source.model_copy(update={"path": str(heldout_file)})]},
                     name="cv.heldout"), heldout_ing)
    cfg = prm_train_config(params).replace(prm_pair_weight=mu, checkpoint_dir=str(run_dir / "checkpoints"))
    wall, cpu = time.perf_counter(), time.process_time()
    metrics = train(ing, run_dir / "model", cfg)
    train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
    table = read_solutions(heldout_ing)
    model, tokenizer = RewardModel.load(run_dir / "model")
    steps = [list(s) for s in table["steps"].to_pylist()]
    reward = aggregate_steps(score_steps(model, tokenizer, table["prompt"].to_pylist(), steps), aggregate)
    pp = per_problem(reward, np.array(table["outcome"].to_pylist(), np.float64), table["prompt_id"].to_pylist())
    result = {"mu": mu, **summary(pp), "per_problem": pp,
              "train": {"wall_s": train_wall, "cpu_s": train_cpu,
                        **{k: v for k, v in metrics.items() if isinstance(v, int | float)
                           and (k.startswith(("train_", "val_")) or k in ("steps", "n_sequences"))}},
              "load_average": os.getloadavg()}
    (run_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def combine(results: dict[int, dict[float, dict[str, Any]]], mus: list[float], folds: int) -> dict[str, Any]:
    """Mean over folds, pooled bootstrap CIs, paired differences vs the first μ, and the pick (module docstring)."""
    means: dict[str, dict[str, Any]] = {}
    pooled: dict[float, np.ndarray] = {}
    for mu in mus:
        rows = [results[f][mu] for f in range(folds)]
        gains = np.concatenate([np.array(r["per_problem"]["best"]) - np.array(r["per_problem"]["random"])
                                for r in rows])
        pooled[mu] = gains
        means[str(mu)] = {"gain_mean_over_folds": float(np.mean([r["gain"] for r in rows])),
                          "gain_per_fold": [r["gain"] for r in rows],
                          "pair_accuracy_mean_over_folds": float(np.mean([r["pair_accuracy"] for r in rows])),
                          "pair_accuracy_per_fold": [r["pair_accuracy"] for r in rows],
                          "gain_pooled": float(gains.mean()), "gain_pooled_ci95": bootstrap_ci(gains),
                          "best_of_n_pooled": float(np.mean([x for r in rows for x in r["per_problem"]["best"]])),
                          "random_pooled": float(np.mean([x for r in rows for x in r["per_problem"]["random"]]))}
    first = mus[0]
    for mu in mus[1:]:
        diff = pooled[mu] - pooled[first]
        means[str(mu)][f"gain_minus_mu{first:g}_pooled"] = float(diff.mean())
        means[str(mu)][f"gain_minus_mu{first:g}_pooled_ci95"] = bootstrap_ci(diff)
    pick = max(mus, key=lambda m: (round(means[str(m)]["gain_mean_over_folds"], 12),
                                   round(means[str(m)]["pair_accuracy_mean_over_folds"], 12), -mus.index(m)))
    return {"by_mu": means, "pick": pick}


def main() -> None:
    from rewardline.config import load_params

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--real", type=Path, default=Path("data/raw/gsm8k/model_solutions_train_200.jsonl"),
                    help="the real-solutions source of prm.sources whose problems are split into folds")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--mu", type=float, action="append", required=True, help="candidate prm_pair_weight (repeat)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the fold assignment")
    ap.add_argument("--aggregate", default="min")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    params = load_params(args.params)
    n_problems = sum(1 for line in args.real.read_text().splitlines() if line.strip())
    fold = fold_of(n_problems, args.folds, args.seed)
    results: dict[int, dict[float, dict[str, Any]]] = {}
    for f in range(args.folds):
        train_file, heldout_file = write_fold_files(args.real, fold, f, args.workdir / f"fold{f}")
        for mu in args.mu:
            run_dir = args.workdir / f"fold{f}" / f"mu{mu:g}"
            done = run_dir / "result.json"
            if done.exists():
                result = json.loads(done.read_text())
            else:
                result = run_one(params, args.real, train_file, heldout_file, mu, run_dir, args.aggregate)
            results.setdefault(f, {})[mu] = result
            print(json.dumps({"fold": f, **{k: v for k, v in result.items() if k != "per_problem"}}), flush=True)
    out = {"config": {"real": str(args.real), "folds": args.folds, "mus": args.mu, "seed": args.seed,
                      "aggregate": args.aggregate, "fold_sizes": np.bincount(fold).tolist()},
           "folds": [{"fold": f, **{f"mu{mu:g}": {k: v for k, v in results[f][mu].items() if k != "per_problem"}
                                    for mu in args.mu}} for f in range(args.folds)],
           **combine(results, args.mu, args.folds)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "folds"}, indent=1))


if __name__ == "__main__":
    main()
