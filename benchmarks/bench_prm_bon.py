"""Benchmark: a trained process reward model on held-out GSM8K data.

* best-of-N on candidate solutions with outcome labels (e.g. the 504 dev problems × 4 GPT-3
  solutions of ``/work/shared/data/gsm8k/model_solutions_dev.jsonl.gz``, ``solutions`` format):
  PRM pick for each aggregate vs random pick, majority vote on the final answer and the oracle,
  95 % CIs by problem (:mod:`rewardline.evaluation.process`);
* step-level AUROC on the held-out (``test`` split by problem) step-labelled solutions of an ingest
  directory (the shipped GSM8K sample with its synthetic carried-forward negatives).

The candidates are ingested with the ``solutions`` adapter into ``--workdir``; ``--exclude FILE``
drops the problems (same question text) of a file the PRM trained on, e.g. the default recipe's
real-solution sample ``data/raw/gsm8k/model_solutions_train_200.jsonl``, so the best-of-N problems are
never trained on. ``--heldout-format`` keeps the held-out solutions of those source formats only
(e.g. ``gsm8k``: the synthetic-negative reference solutions).

    python benchmarks/bench_prm_bon.py --model models/process-reward-model \\
        --candidates /work/shared/data/gsm8k/model_solutions_dev.jsonl.gz \\
        --exclude data/raw/gsm8k/model_solutions_train_200.jsonl \\
        --heldout data/prm/ingested --heldout-format gsm8k --workdir /tmp/prm-bench
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc


def questions(paths: list[Path]) -> set[str]:
    """The ``question`` of every JSONL record of ``paths`` (gzip allowed)."""
    out: set[str] = set()
    for path in paths:
        data = path.read_bytes()
        text = (gzip.decompress(data) if path.suffix == ".gz" else data).decode()
        out |= {json.loads(line)["question"] for line in text.splitlines() if line.strip()}
    return out


def keep(table: pa.Table, column: str, values: set[str], inside: bool) -> pa.Table:
    """The rows of ``table`` whose ``column`` is (``inside``) or is not in ``values``."""
    mask = pc.is_in(table[column], value_set=pa.array(sorted(values), table.schema.field(column).type))
    return table.filter(mask if inside else pc.invert(mask))


def main() -> None:
    from rewardline.data.ingest import IngestConfig, Source, run_ingest
    from rewardline.evaluation.process import PrmConfig, bon_table_markdown, prm_metrics, write_prm_report
    from rewardline.training.loop import TrainConfig
    from rewardline.training.step_data import read_solutions

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--candidates", required=True, help="candidate solutions file (solutions format)")
    ap.add_argument("--heldout", type=Path, required=True, help="ingest directory with solutions.parquet")
    ap.add_argument("--exclude", type=Path, action="append", default=[],
                    help="drop the candidate problems of this file (repeatable): the PRM's training problems")
    ap.add_argument("--heldout-format", action="append", default=[],
                    help="keep held-out solutions of this source format only (repeatable; default all)")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--aggregate", default="min")
    ap.add_argument("--bootstrap-samples", type=int, default=1000)
    args = ap.parse_args()

    cand_dir = args.workdir / "candidates"
    run_ingest(IngestConfig(sources=[Source(path=args.candidates, format="solutions")]), cand_dir)
    split = TrainConfig()  # the default split: the PRM's train split never overlaps "test"
    heldout = read_solutions(args.heldout, "test", split.prm_split_salt, split.prm_train_fraction,
                             split.prm_val_fraction)
    if args.heldout_format:
        heldout = keep(heldout, "source_format", set(args.heldout_format), inside=True)
    candidates = keep(read_solutions(cand_dir), "prompt", questions(args.exclude), inside=False)
    cfg = PrmConfig(aggregate=args.aggregate, bootstrap_samples=args.bootstrap_samples)
    start = time.perf_counter()
    metrics = prm_metrics(args.model, heldout, candidates, cfg)
    metrics["candidate_problems"] = len(set(candidates["prompt_id"].to_pylist()))
    metrics["score_seconds"] = time.perf_counter() - start
    metrics["load_average"] = os.getloadavg()
    metrics = write_prm_report(metrics, args.workdir / "report", cfg)
    print(bon_table_markdown(metrics))
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=1, default=str))


if __name__ == "__main__":
    main()
