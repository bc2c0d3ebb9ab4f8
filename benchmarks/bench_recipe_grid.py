"""Recipe candidates against the recipe on nested hh-rlhf splits, many seeds, in parallel (issue 13).

Choosing a recipe on the held-out pairs that ``bench_quality.py`` reports would tune to them. This script chooses on
pairs that benchmark never scores: each outer 80/20 split by prompt (``--outer-salts``, the salts of
``bench_quality.py --split-salt``) keeps its 20 % aside, and its 80 % is split again by prompt
(``--inner-fraction`` 0.25, salt ``bench-quality-inner``) into inner train / inner test. Every candidate (a list
of ``TrainConfig`` overrides in ``--candidates``, the first one the baseline) trains on each inner train file with
each seed and is scored on the inner test file: accuracy of r(chosen) > r(rejected), as ``bench_quality.py``.
``--level outer`` instead trains on the outer 80 % and scores the outer 20 % (the confirmation, run once).

Summary per candidate: mean accuracy over (split, seed) runs, and the paired difference from the baseline (same
split, same seed) with its mean, sd and a 95 % t-interval. ``--trl`` adds TRL 1.16 ``RewardTrainer`` runs with
RewardConfig's defaults (``bench_quality.run_trl``) on the same files and seeds, as the row ``trl``.

    python benchmarks/bench_recipe_grid.py --hh /work/shared/data/hh_rlhf_harmless_base_sample.jsonl.gz \
        --candidates benchmarks/recipe_candidates.yaml --seeds 0,1,2,3,4 --workers 4 --out /tmp/grid \
        [--set precision=fp32] [--trl --trl-set bf16=false] [--level outer --only recipe,NAME]

Each finished run is one line of ``OUT/runs.jsonl`` (a killed grid keeps what it ran); ``OUT/summary.md`` at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))
import bench_quality as bq  # noqa: E402  (sibling benchmark script)

INNER_SALT = "bench-quality-inner"


def split_files(hh: Path, out: Path, salt: str, level: str, inner_fraction: float) -> tuple[Path, Path]:
    """The (train, test) files of one outer split at ``level``: outer = 80 / 20 by prompt with ``salt``; inner =
    that 80 % split again by prompt (``inner_fraction`` to test)."""
    outer_train, outer_test = bq.split_hh(hh, out / "data" / salt, 0.2, salt)
    if level == "outer":
        return outer_train, outer_test
    return bq.split_hh(outer_train, out / "data" / salt / "inner", inner_fraction, INNER_SALT)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One training run (a worker process): ``job`` names files, candidate, overrides, seed and work folder."""
    import torch

    torch.set_num_threads(job["threads"])
    train, test = bq.read_hh(Path(job["train"])), bq.read_hh(Path(job["test"]))
    work = Path(job["work"])
    t0 = time.perf_counter()
    if job["candidate"] == "trl":
        res = bq.run_trl(train, test, work, job["seed"], job["overrides"], job["backbone"])
    else:
        res = bq.run_rewardline(train, test, work, job["seed"], job["overrides"], 0.0)
    return {k: job[k] for k in ("candidate", "salt", "seed", "overrides")} | {
        "accuracy": res["accuracy"], "ci_low": res["ci_low"], "ci_high": res["ci_high"], "n_pairs": res["n_pairs"],
        "steps": res["steps"], "train_seconds": res["train_seconds"], "wall_seconds": time.perf_counter() - t0}


def run_jobs(fn: Callable[[dict[str, Any]], dict[str, Any]], jobs: list[dict[str, Any]], workers: int,
             out: Path) -> list[dict[str, Any]]:
    """``fn(job)`` for every job in ``workers`` spawned processes (no CUDA state forked into them); each result is
    printed and appended to ``out/runs.jsonl`` as it finishes, so a killed run keeps what it ran."""
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn) as pool, (out / "runs.jsonl").open("a") as log:
        for future in as_completed([pool.submit(fn, job) for job in jobs]):
            runs.append(future.result())
            log.write(json.dumps(runs[-1]) + "\n")
            log.flush()
            print(json.dumps(runs[-1]), flush=True)
    return runs


def summarize(runs: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """Per candidate: runs, mean accuracy, and the difference from ``baseline`` paired by (split, seed)."""
    base = {(r["salt"], r["seed"]): r["accuracy"] for r in runs if r["candidate"] == baseline}
    rows = []
    for name in dict.fromkeys(r["candidate"] for r in runs):
        mine = [r for r in runs if r["candidate"] == name]
        diffs = [r["accuracy"] - base[(r["salt"], r["seed"])] for r in mine if (r["salt"], r["seed"]) in base]
        row = {"candidate": name, "runs": len(mine), "mean": statistics.fmean(r["accuracy"] for r in mine),
               "sd": statistics.stdev(r["accuracy"] for r in mine) if len(mine) > 1 else math.nan,
               "train_s": statistics.median(r["train_seconds"] for r in mine)}
        for salt in dict.fromkeys(r["salt"] for r in mine):
            row[f"mean {salt}"] = statistics.fmean(r["accuracy"] for r in mine if r["salt"] == salt)
        if len(diffs) > 1 and name != baseline:
            from scipy.stats import t

            mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
            half = t.ppf(0.975, len(diffs) - 1) * sd / math.sqrt(len(diffs))
            row |= {"diff": mean, "diff_sd": sd, "diff_low": mean - half, "diff_high": mean + half}
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys),
                      *("| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows)]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hh", type=Path, required=True, help="one hh-rlhf file (bench_quality.py --hh)")
    ap.add_argument("--candidates", type=Path, required=True, help="YAML: name -> list of key=value; first = baseline")
    ap.add_argument("--only", default="", help="comma-separated candidate names to run (default: all)")
    ap.add_argument("--outer-salts", default="bench-quality,bench-quality-replication")
    ap.add_argument("--level", choices=("inner", "outer"), default="inner")
    ap.add_argument("--inner-fraction", type=float, default=0.25)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--set", nargs="*", default=[], help="overrides for every rewardline candidate")
    ap.add_argument("--trl", action="store_true", help="add TRL RewardTrainer runs (row 'trl')")
    ap.add_argument("--trl-set", nargs="*", default=[], help="RewardConfig overrides key=value")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/recipe_grid"))
    args = ap.parse_args()

    candidates: dict[str, list[str]] = yaml.safe_load(args.candidates.read_text())
    baseline = next(iter(candidates))
    wanted = [n for n in args.only.split(",") if n] or list(candidates)
    backbone = bq.default_recipe(args.set).backbone
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    jobs = []
    for salt in args.outer_salts.split(","):
        train, test = split_files(args.hh, args.out, salt, args.level, args.inner_fraction)
        for seed in (int(s) for s in args.seeds.split(",")):
            named = [(n, [*args.set, *candidates[n]]) for n in wanted] + ([("trl", args.trl_set)] if args.trl else [])
            for name, overrides in named:
                jobs.append({"candidate": name, "salt": salt, "seed": seed, "overrides": overrides,
                             "train": str(train), "test": str(test), "backbone": backbone, "threads": threads,
                             "work": str(args.out / "runs" / f"{name}-{salt}-{seed}")})
    runs = run_jobs(run_job, jobs, args.workers, args.out)
    table = markdown(summarize(runs, baseline))
    (args.out / "summary.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
