"""How far a held-out prompt set's anchor base rate moves, and what that does to absolute ECE (issue 14).

No model is trained. The question is what any ``win_prob`` that cannot tell *which prompts* have a strong
reference answer must get wrong on a held-out prompt set. For comparisons i with labels y_i in [0, 1] (the
judge's probability that the sample beats the reference) and predictions q_i, binned ECE is bounded below by
the level error:

    ECE = Σ_b (n_b / n) |ȳ_b − q̄_b|  ≥  |Σ_b (n_b / n)(ȳ_b − q̄_b)|  =  |ȳ − q̄|        (triangle inequality)

A model fitted on the other prompts learns, at best, their share ȳ_rest, so on a test set of m prompts its
level error is |ȳ_test − ȳ_rest| unless it predicts each prompt's reference strength. This script draws
random splits of the shared AlpacaEval prompts by prompt (test = m prompts, rest = the others), vectorised
over draws, and reports the distribution of that lower bound for several m.

Data: the AlpacaEval best-of-16 annotations (allenai/reward-bench at 4319b31, ``bon_eval/alpaca_eval_n=16``,
Apache-2.0; the copy in ``/work/shared/data/alpacaeval_bon/annotations``), ``preference`` in [1, 2] with
2 = the sample preferred, so y = preference − 1, as the ``alpaca-eval`` adapter's soft anchor labels.

    python benchmarks/bench_anchor_base_rate.py --annotations /work/shared/data/alpacaeval_bon/annotations \
        --test-prompts 48 97 243 --out benchmarks/results/anchor_base_rate.json
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np


def per_prompt_sums(annotations: Path) -> tuple[np.ndarray, np.ndarray]:
    """Σ y and the number of judged comparisons per instruction, over every ``*.json.gz`` in ``annotations``."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for path in sorted(annotations.glob("*.json.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for record in json.load(handle):
                if record.get("preference") is None:
                    continue
                key = record["instruction"]
                sums[key] = sums.get(key, 0.0) + float(record["preference"]) - 1.0
                counts[key] = counts.get(key, 0) + 1
    keys = sorted(sums)
    return np.array([sums[k] for k in keys]), np.array([counts[k] for k in keys], dtype=float)


def level_errors(sums: np.ndarray, counts: np.ndarray, test_prompts: int, draws: int, seed: int) -> np.ndarray:
    """|ȳ_test − ȳ_rest| over ``draws`` random splits by prompt with ``test_prompts`` prompts in test."""
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((draws, sums.size)), axis=1)
    in_test = np.zeros((draws, sums.size), dtype=bool)
    np.put_along_axis(in_test, order[:, :test_prompts], True, axis=1)
    test_share = (in_test @ sums) / (in_test @ counts)
    rest_share = (~in_test @ sums) / (~in_test @ counts)
    return np.abs(test_share - rest_share)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=Path, required=True, help="folder of AlpacaEval *.json.gz files")
    parser.add_argument("--test-prompts", type=int, nargs="+", default=[48, 97, 243])
    parser.add_argument("--draws", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    sums, counts = per_prompt_sums(args.annotations)
    result = {"prompts": int(sums.size), "comparisons": int(counts.sum()),
              "population_share": float(sums.sum() / counts.sum()),
              "per_prompt_share_sd": float(np.std(sums / counts)), "draws": args.draws, "by_test_size": []}
    for m in args.test_prompts:
        err = level_errors(sums, counts, m, args.draws, args.seed)
        result["by_test_size"].append({
            "test_prompts": m, "median_level_error": float(np.median(err)),
            "p90_level_error": float(np.quantile(err, 0.9)),
            "share_of_splits_with_level_error_over_0.05": float(np.mean(err > 0.05)),
            "share_of_splits_with_level_error_over_0.03": float(np.mean(err > 0.03))})
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
