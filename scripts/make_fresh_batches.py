"""Build the fresh-sample inbox batches of the retraining tests (tests/fixtures/fresh_batches) from real data.

    python scripts/make_fresh_batches.py --shared DIR [--out tests/fixtures/fresh_batches]

DIR holds ``alpacaeval_bon/`` (allenai/reward-bench @ 4319b31, bon_eval/alpaca_eval_n=16,
Apache-2.0; see data/README.md). The training sample uses policy samples 0..6 of every
instruction; these batches use samples 7..10, never trained on, judged by the same
GPT-4-turbo judge, as the "next round" of the policy's samples:

* ``batch-01-in-distribution``: 24 instructions drawn at random (seeded) from all sources;
* ``batch-02-shifted-terse``: the 24 instructions whose four fresh samples are shortest
  on average, as if the policy had turned terse: other prompt sources dominate
  (selfinstruct) and the responses are several times shorter than in training.

Each batch is written with :func:`rewardline.retraining.inbox.write_batch` (data files, then the
manifest with their sha256). Labels: the judge's ``preference`` (P(sample beats the
reference answer)) ranks the 4 samples of an instruction (dense rank, best = 1);
score = preference − 1. Deterministic: reruns are byte-identical.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import orjson

from rewardline.retraining.inbox import write_batch

SAMPLES = (7, 8, 9, 10)
N_PROMPTS = 24
SEED = 20240612


def annotations(shared: Path, sample: int) -> list[dict]:
    path = shared / "alpacaeval_bon" / "annotations" / f"tulu-2-dpo-13b.{sample}.json.gz"
    return orjson.loads(gzip.decompress(path.read_bytes()))


def jsonl(records: list[dict]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def batch_files(batch_id: str, rows: list[list[dict]]) -> tuple[bytes, bytes]:
    """(samples.jsonl, rankings.jsonl) for instructions given as their judged sample rows."""
    samples, rankings = [], []
    for group in rows:
        first = group[0]
        prompt_id = f"{batch_id}:{first['id']}"
        scores = [r["preference"] - 1.0 for r in group]
        distinct = sorted(set(scores), reverse=True)
        responses = []
        for r, s in zip(group, scores, strict=True):
            samples.append({"prompt_id": prompt_id, "prompt": first["instruction"], "category": first["dataset"],
                            "response_id": r["generator_2"], "response": r["output_2"], "source": r["generator_2"]})
            responses.append({"response_id": r["generator_2"], "text": r["output_2"], "source": r["generator_2"],
                              "rank": distinct.index(s) + 1, "score": round(s, 6)})
        rankings.append({"prompt_id": prompt_id, "prompt": first["instruction"], "category": first["dataset"],
                         "annotator_id": first["annotator"], "responses": responses})
    return jsonl(samples), jsonl(rankings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, required=True, help="directory with the real data extracts")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/fresh_batches"))
    args = parser.parse_args()
    per_sample = [annotations(args.shared, s) for s in SAMPLES]
    ids = [r["id"] for r in per_sample[0]]
    assert all([r["id"] for r in rows] == ids for rows in per_sample), "annotation files are not aligned"
    pref = np.array([[rows[i]["preference"] for rows in per_sample] for i in range(len(ids))])
    length = np.array([[len(rows[i]["output_2"]) for rows in per_sample] for i in range(len(ids))]).mean(1)
    separated = np.flatnonzero(pref.max(1) - pref.min(1) > 0)  # the judge ranked the samples apart
    chosen = {
        "batch-01-in-distribution": np.sort(np.random.default_rng(SEED).choice(separated, N_PROMPTS, replace=False)),
        "batch-02-shifted-terse": np.sort(separated[np.argsort(length[separated], kind="stable")[:N_PROMPTS]]),
    }
    for batch_id, index in chosen.items():
        samples, rankings = batch_files(batch_id, [[rows[i] for rows in per_sample] for i in index])
        write_batch(str(args.out), batch_id, samples, rankings)
        cats = sorted({per_sample[0][i]["dataset"] for i in index})
        print(f"{batch_id}: {len(index)} prompts, mean sample length {length[index].mean():.0f} chars, "
              f"sources {cats}, {len(samples) + len(rankings)} bytes")


if __name__ == "__main__":
    main()
