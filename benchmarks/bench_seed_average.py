"""Does averaging seeds help? Reward ensemble and weight average of reward models trained with different seeds.

Issue 13, item 2 (optional): "average the 2-3 best checkpoints or seeds and report whether that helps". Given
``--models`` (model directories of one recipe, one per seed, e.g. ``bench_quality.py``'s
``OUT/rewardline-seedS/model``) and an hh-rlhf-format ``--test`` file, it scores the test pairs with

* each model alone: accuracy of ``r(chosen) > r(rejected)``;
* the **reward ensemble**: ``r̄ = (1/M) Σ_m r_m / σ_m``, each model's reward divided by its stored val reward std
  ``σ_m`` (``reward_config.json``: a BT reward's scale is arbitrary per run; its shift cancels in a difference);
* the **weight average** ("model soup"): one model whose every tensor is the mean of the M models' tensors
  (same backbone and initialisation of the pretrained part; the head was initialised per seed), scored alone,
  so it costs one model at inference where the ensemble costs M.

Accuracies carry the prompt-bootstrap 95 % CI of ``bench_quality.held_out_score``; the weight average is written
to ``--workdir/weight-average``.

    python benchmarks/bench_seed_average.py --test OUT/data/test.jsonl \
        --models OUT/rewardline-seed0/model OUT/rewardline-seed1/model OUT/rewardline-seed2/model \
        --workdir /tmp/seed-average --out /tmp/seed-average/report.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_quality import held_out_score, read_hh, rewardline_pair_rewards  # noqa: E402  (sibling benchmark script)

WEIGHTS = "model.safetensors"


def weight_average(models: list[Path], out: Path) -> Path:
    """A model directory whose weights are the element-wise mean of ``models``' weights (files of the first)."""
    from safetensors.torch import load_file, save_file

    states = [load_file(m / WEIGHTS) for m in models]
    if any(s.keys() != states[0].keys() for s in states):
        raise ValueError("the models do not share one architecture (different tensor names)")
    shutil.copytree(models[0], out, dirs_exist_ok=True)
    save_file({k: sum(s[k].double() for s in states).div(len(states)).to(states[0][k].dtype) for k in states[0]},
              str(out / WEIGHTS), metadata={"format": "pt"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--test", type=Path, required=True, help="hh-rlhf-format held-out file")
    ap.add_argument("--models", type=Path, nargs="+", required=True, help="model directories, one per seed")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/seed-average"))
    ap.add_argument("--out", type=Path, default=None, help="report JSON (default WORKDIR/report.json)")
    args = ap.parse_args()
    test = read_hh(args.test)
    rows: dict[str, dict[str, Any]] = {}
    ensemble = []
    for model in args.models:
        chosen, rejected = rewardline_pair_rewards(model, test)
        sigma = json.loads((model / "reward_config.json").read_text())["reward_std"]
        ensemble.append((chosen / sigma, rejected / sigma))
        rows[str(model)] = held_out_score(chosen, rejected, test, seed=0)
    single = [r["accuracy"] for r in rows.values()]
    rows["reward ensemble"] = held_out_score(np.mean([c for c, _ in ensemble], axis=0),
                                             np.mean([r for _, r in ensemble], axis=0), test, seed=0)
    soup = weight_average(args.models, args.workdir / "weight-average")
    rows["weight average"] = held_out_score(*rewardline_pair_rewards(soup, test), test, seed=0)
    report = {"test": str(args.test), "n_pairs": len(test), "models": [str(m) for m in args.models], "rows": rows,
              "single_mean": float(np.mean(single)), "single_sd": float(np.std(single, ddof=1)) if len(single) > 1
              else 0.0}
    out = args.out or args.workdir / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    for name, r in rows.items():
        print(f"{r['accuracy']:.4f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]  {name}")
    print(f"single models: mean {report['single_mean']:.4f} (sd {report['single_sd']:.4f})")


if __name__ == "__main__":
    main()
