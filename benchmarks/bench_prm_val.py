"""Benchmark: PRM selection metrics on the training problems a PRM did not train on.

The ``val`` (and ``val`` + ``test``) split by problem of an ingest directory (the PRM recipe's split,
``train.prm_split_salt`` and fractions at their defaults), per source format: within-problem pair accuracy
``P(s_a > s_b)`` over every (correct ``a``, wrong ``b``) pair of solutions of one problem (ties count ½) and
best-of-N accuracy of the top-scored solution (ties: mean) against a random pick, with ``s`` the step
aggregate (default ``min``). Used to choose a PRM recipe without looking at the held-out dev problems::

    python benchmarks/bench_prm_val.py --model MODEL --ingest data/prm/ingested --out val.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa


def problem_metrics(reward: np.ndarray, outcome: np.ndarray, problems: list[list[int]]) -> dict[str, float | int]:
    """Pair accuracy and best-of-N vs random over ``problems`` (lists of row indices)."""
    pairs, best, random = [], [], []
    for idx in problems:
        r, o = reward[idx], outcome[idx]
        diff = r[o == 1][:, None] - r[o == 0][None, :]
        pairs += (0.5 * (np.sign(diff) + 1)).ravel().tolist()
        best.append(float(o[r == np.nanmax(r)].mean()) if np.isfinite(r).any() else float(o.mean()))
        random.append(float(o.mean()))
    return {"problems": len(problems), "pairs": len(pairs), "pair_accuracy": float(np.mean(pairs)) if pairs else None,
            "best_of_n": float(np.mean(best)), "random": float(np.mean(random))}


def main() -> None:
    from rewardline.modeling.model import RewardModel
    from rewardline.modeling.step_scores import aggregate_steps, score_steps
    from rewardline.training.loop import TrainConfig
    from rewardline.training.step_data import read_solutions

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--ingest", type=Path, required=True, help="ingest directory with solutions.parquet")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--aggregate", default="min")
    args = ap.parse_args()

    cfg = TrainConfig()
    parts = []
    for split in ("val", "test"):
        part = read_solutions(args.ingest, split, cfg.prm_split_salt, cfg.prm_train_fraction, cfg.prm_val_fraction)
        parts.append(part.append_column("split", pa.array([split] * part.num_rows, pa.string())))
    table = pa.concat_tables(parts)
    model, tokenizer = RewardModel.load(args.model)
    steps = [list(s) for s in table["steps"].to_pylist()]
    reward = aggregate_steps(score_steps(model, tokenizer, table["prompt"].to_pylist(), steps), args.aggregate)
    cols = table.select(["prompt_id", "outcome", "source_format", "split"]).to_pydict()
    outcome = np.array(cols["outcome"], np.float64)
    out = {}
    for name, splits in (("val", {"val"}), ("val+test", {"val", "test"})):
        for fmt in sorted(set(cols["source_format"])):
            by: dict[str, list[int]] = {}
            for i, (pid, f, s) in enumerate(zip(cols["prompt_id"], cols["source_format"], cols["split"], strict=True)):
                if f == fmt and s in splits:
                    by.setdefault(pid, []).append(i)
            out[f"{name}_{fmt}"] = problem_metrics(reward, outcome, list(by.values()))
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
