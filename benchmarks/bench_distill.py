"""A reward ensemble, and one model distilled from it, against single models on held-out hh-rlhf (issue 13).

Per outer split (``bench_recipe_grid.py --level outer``'s files) and seed ``s``:

* three **teachers**, the recipe with seeds ``3s``, ``3s+1``, ``3s+2``; each is also a single-model run;
* the **ensemble**: reward ``r̄ = (1/3) Σ_k r_k / σ_k``, each teacher's reward divided by its sd on the training
  responses, so no member dominates;
* a **student**, the recipe (seed ``1000+s``) trained on the same pairs with soft labels
  ``p = α + (1 − α)·σ(Δ̄)``, ``Δ̄`` the teachers' mean reward difference (chosen − rejected) on that training pair
  and ``α`` = ``--alpha`` (0.5: half the human label, half the teachers'; ``p ≥ 1/2`` always): one model of the
  recipe's size and layout, exportable, at four trainings' cost.

Accuracy on the outer test pairs as ``bench_quality.py``; one line per (split, seed) in ``OUT/runs.jsonl``.

    python benchmarks/bench_distill.py --hh /work/shared/data/hh_rlhf_harmless_base_sample.jsonl.gz \
        --seeds 0,1,2,3,4 --workers 8 --out /tmp/distill [--set precision=fp32]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_quality as bq  # noqa: E402  (sibling benchmark scripts)
from bench_recipe_grid import run_jobs, split_files  # noqa: E402


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Teachers, ensemble and student of one (split, seed)."""
    import torch

    torch.set_num_threads(job["threads"])
    train, test = bq.read_hh(Path(job["train"])), bq.read_hh(Path(job["test"]))
    work, seed, overrides = Path(job["work"]), job["seed"], job["overrides"]
    singles, test_r, train_d = [], [], []  # train_d: each teacher's raw r(chosen) - r(rejected), in log-odds
    for k in range(3):
        res = bq.run_rewardline(train, test, work / f"teacher{k}", 3 * seed + k, overrides, 0.0)
        singles.append(res["accuracy"])
        tr_c, tr_r = bq.rewardline_pair_rewards(work / f"teacher{k}" / "model", train)
        te_c, te_r = bq.rewardline_pair_rewards(work / f"teacher{k}" / "model", test)
        sd = float(np.std(np.concatenate([tr_c, tr_r]))) or 1.0
        train_d.append(tr_c - tr_r)
        test_r.append((te_c / sd, te_r / sd))
    ens_c, ens_r = (np.mean([t[i] for t in test_r], axis=0) for i in (0, 1))
    ensemble = bq.held_out_score(ens_c, ens_r, test, seed)["accuracy"]
    delta = np.mean(train_d, axis=0)
    labels = job["alpha"] + (1 - job["alpha"]) / (1 + np.exp(-delta))
    student = bq.run_rewardline(train, test, work / "student", 1000 + seed, overrides, 0.0, labels=labels.tolist())
    return {"salt": job["salt"], "seed": seed, "singles": singles, "single_mean": statistics.fmean(singles),
            "ensemble": ensemble, "student": student["accuracy"], "alpha": job["alpha"],
            "teacher_agreement": float(np.mean(delta > 0)), "student_steps": student["steps"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hh", type=Path, required=True)
    ap.add_argument("--outer-salts", default="bench-quality,bench-quality-replication")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/distill"))
    args = ap.parse_args()
    threads = max(1, (multiprocessing.cpu_count() or 1) // args.workers)
    jobs = []
    for salt in args.outer_salts.split(","):
        train, test = split_files(args.hh, args.out, salt, "outer", 0.25)
        jobs += [{"salt": salt, "seed": int(s), "overrides": args.set, "alpha": args.alpha, "threads": threads,
                  "train": str(train), "test": str(test), "work": str(args.out / "runs" / f"{salt}-{s}")}
                 for s in args.seeds.split(",")]
    runs = run_jobs(run_job, jobs, args.workers, args.out)
    for key in ("single_mean", "ensemble", "student"):
        print(f"{key}: mean {statistics.fmean(r[key] for r in runs):.4f} over {len(runs)} (split, seed) runs")


if __name__ == "__main__":
    main()
