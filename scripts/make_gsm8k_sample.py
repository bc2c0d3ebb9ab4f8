"""Build the shipped GSM8K sample (``data/raw/gsm8k/``) and the GSM8K test fixtures from the shared extract.

    python scripts/make_gsm8k_sample.py --shared DIR [--out data/raw/gsm8k] [--fixtures tests/fixtures]

DIR holds ``gsm8k/train.jsonl.gz`` and ``gsm8k/model_solutions_dev.jsonl.gz`` (openai/grade-school-math,
MIT). Problems are ordered by ``hash64(SALT + question)`` (:mod:`rewardline.data.hashing`) and taken
first-N in that order, records verbatim:

* ``train_300.jsonl``: the first 300 training problems (reference solutions): the PRM's training data;
* ``model_solutions_150.jsonl``: the first 150 model-solution problems (4 GPT-3 solutions each): the
  held-out best-of-4 evaluation set (GSM8K *test* problems: disjoint from the training problems);
* ``model_solutions_train_200.jsonl``: model-solution problems 251..450 (4 GPT-3 solutions each): the
  PRM's real-solution training data (``prm.sources``, step labels from the outcome); disjoint from the
  150 evaluation problems and the 100 fixture problems;
* ``tests/fixtures/gsm8k_train_20.jsonl``: training problems 301..320 in that order;
* ``tests/fixtures/gsm8k_model_solutions_100.jsonl.gz``: model-solution problems 151..250.

Deterministic: rerunning reproduces the files byte for byte (gzip with mtime 0).
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import orjson

from rewardline.data.hashing import hash64

SALT = "rewardline-gsm8k-v1|"


def ordered(path: Path) -> list[bytes]:
    """The file's JSONL lines in hash order of their question."""
    lines = [line for line in gzip.decompress(path.read_bytes()).split(b"\n") if line.strip()]
    keys = hash64([SALT + orjson.loads(line)["question"] for line in lines])
    return [lines[i] for i in np.argsort(keys, kind="stable")]


def write(lines: list[bytes], path: Path) -> None:
    data = b"\n".join(lines) + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    print(f"{path}: {len(lines)} records, {path.stat().st_size:,} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, required=True, help="folder holding gsm8k/")
    parser.add_argument("--out", type=Path, default=Path("data/raw/gsm8k"))
    parser.add_argument("--fixtures", type=Path, default=Path("tests/fixtures"))
    args = parser.parse_args()
    train = ordered(args.shared / "gsm8k" / "train.jsonl.gz")
    solutions = ordered(args.shared / "gsm8k" / "model_solutions_dev.jsonl.gz")
    write(train[:300], args.out / "train_300.jsonl")
    write(solutions[:150], args.out / "model_solutions_150.jsonl")
    write(solutions[250:450], args.out / "model_solutions_train_200.jsonl")
    write(train[300:320], args.fixtures / "gsm8k_train_20.jsonl")
    write(solutions[150:250], args.fixtures / "gsm8k_model_solutions_100.jsonl.gz")


if __name__ == "__main__":
    main()
