"""Held-out best-of-N data for ``rewardline bon``: the AlpacaEval instructions a model did NOT train on.

Provenance: allenai/reward-bench at commit 4319b31, ``bon_eval/alpaca_eval_n=16`` (Apache-2.0), the copy in
``/work/shared/data/alpacaeval_bon/annotations/tulu-2-dpo-13b.{0..10}.json.gz``: 486 instructions, samples
0-10 of tulu-2-dpo-13b judged against the gpt-3.5-turbo-0613 reference by GPT-4-turbo (``preference`` in
[1, 2], 2 = the sample preferred). An instruction is held out when its text is not the prompt of any pair in
the model's train split (``<pairs>/train/`` + ``prompts.parquet``; the shipped sample splits by
prompt, so the val and test instructions qualify). Every judged record of a held-out instruction is kept
(fields as in ``data/raw/alpacaeval_bon_k4.json``), in one AlpacaEval annotations JSON list:

    python benchmarks/build_bon_heldout.py --annotations /work/shared/data/alpacaeval_bon/annotations \
        --pairs data/pairs --out /tmp/bon_heldout.json
    rewardline bon --model models/reward-model --data /tmp/bon_heldout.json --format alpaca-eval --out /tmp/bon
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import pyarrow.compute as pc

from rewardline.data.tables import read_table, table_path

FIELDS = ("id", "instruction", "dataset", "output_1", "generator_1", "output_2", "generator_2", "preference",
          "annotator")


def train_prompts(pairs_dir: Path) -> set[str]:
    """Prompt texts of the pairs in ``pairs_dir``'s train split."""
    ids = read_table(table_path(pairs_dir, "train"), columns=["prompt_id"]).column("prompt_id")
    prompts = read_table(table_path(pairs_dir, "prompts"), columns=["prompt_id", "prompt"])
    return set(prompts.filter(pc.is_in(prompts.column("prompt_id"), value_set=pc.unique(ids)))
               .column("prompt").to_pylist())


def held_out_records(annotations: Path, seen: set[str], samples: range) -> list[dict]:
    """Judged records of ``tulu-2-dpo-13b.{i}.json.gz`` (i in ``samples``) whose instruction is not in ``seen``."""
    kept = []
    for i in samples:
        with gzip.open(annotations / f"tulu-2-dpo-13b.{i}.json.gz", "rt") as f:
            for rec in json.load(f):
                if rec.get("preference") in (None, "") or rec["instruction"].strip() in seen:
                    continue
                kept.append({k: rec.get(k) for k in FIELDS})
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotations", type=Path, required=True, help="alpacaeval_bon/annotations directory")
    ap.add_argument("--pairs", type=Path, default=Path("data/pairs"), help="the model's pairs directory")
    ap.add_argument("--samples", type=int, default=11, help="judged samples 0..N-1 per instruction")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    seen = {p.strip() for p in train_prompts(args.pairs)}
    records = held_out_records(args.annotations, seen, range(args.samples))
    args.out.write_text(json.dumps(records))
    instructions = len({r["instruction"] for r in records})
    print(json.dumps({"records": len(records), "instructions": instructions, "train_prompts": len(seen)}))


if __name__ == "__main__":
    main()
