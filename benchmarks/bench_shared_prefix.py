"""Shared-prefix vs per-response encoding: training steps and scoring of a small decoder reward model.

A random-init Qwen2-like decoder (``--layers`` 4, ``--hidden`` 256, 4 query / 2 key-value heads,
MLP 688, vocabulary 8192) with rewardline's scalar head and last-token pooling, fp32. Synthetic
hh-rlhf-shaped groups: ``--groups`` prompts per step, each a prompt of ``P`` tokens and K responses
of ``R`` tokens (fixed lengths, so neither side pads). For each (P, R, K):

* per-response: ``groups · K`` sequences of ``P + R`` tokens (``RewardModel.forward`` with a 2-D mask),
* shared prefix: ``groups`` rows of ``P + K·R`` tokens (``rewardline.modeling.shared_prefix.pack_groups``),
* scoring also with prompt KV reuse (what ``score`` / ``rerank`` run): the ``groups`` prompts encoded once
  (``P`` tokens each), then the ``groups · K`` responses (``R`` tokens) against their prompt's cached keys and
  values (``shared_prefix.split_groups`` + ``prefix_cache_rewards``).

Training step = forward + grouped BT loss over all C(K, 2) pairs + backward (no optimizer step:
the same on both sides); scoring = forward under ``torch.inference_mode``. Each is timed
``--repeats`` times after one warm-up; the median CPU seconds of the process (one torch thread by
default, so CPU time is the compute and other processes on a shared machine barely move it; the
median wall time is in the JSON too) give pairs/s (training) and responses/s (scoring).
Tokens encoded per step: ``K(P+R)`` vs ``P+KR``, whose ratio bounds the
speed-up of the token-linear part of the model (projections, MLP); attention with a dense block
mask does not skip the masked half of the score matrix, so the measured speed-up is below it; KV reuse
computes attention only where a token looks (``P²/2 + K·R·(P + R/2)`` per group).

    nice -n 5 .venv/bin/python benchmarks/bench_shared_prefix.py --out /tmp/bench_shared_prefix.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from transformers import Qwen2Config, Qwen2Model

from rewardline.modeling.model import RewardConfig, RewardModel
from rewardline.modeling.shared_prefix import pack_groups, prefix_cache_rewards, split_groups


def build_model(layers: int, hidden: int, seed: int = 0) -> RewardModel:
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=8192, hidden_size=hidden, intermediate_size=int(hidden * 2.6875) // 8 * 8,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=False, attn_implementation="sdpa")
    model = RewardModel(Qwen2Model(config), RewardConfig(pooling="last"))
    model.disable_dropout()
    assert model.shared_prefix_unsupported() is None
    return model


def make_groups(n: int, k: int, p: int, r: int, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(n):
        prompt = rng.integers(10, 8192, p)
        groups.append([np.concatenate([prompt, rng.integers(10, 8192, r)]) for _ in range(k)])
    return groups


def bt_loss(rewards: torch.Tensor, n_groups: int, k: int) -> torch.Tensor:
    """Grouped BT loss −log σ(r_a − r_b) over all C(K, 2) pairs of each group (rewards group by group)."""
    a, b = zip(*itertools.combinations(range(k), 2), strict=True)
    r = rewards.view(n_groups, k)
    return torch.nn.functional.softplus(-(r[:, list(a)] - r[:, list(b)])).mean()


def timed(fn: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds of this process (``time.process_time``) per call."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def measure(model: RewardModel, groups: list[list[np.ndarray]], k: int, repeats: int) -> dict[str, float]:
    n = len(groups)
    seqs = [s for g in groups for s in g]
    ids = torch.from_numpy(np.stack(seqs))
    per_response = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    packed = pack_groups(groups, pad_id=0)
    shared = {"input_ids": packed.input_ids, "attention_mask": packed.attention_mask,
              "position_ids": packed.position_ids, "read_index": packed.read_index}
    branches = split_groups(groups, pad_id=0)
    with torch.inference_mode():  # same rewards either way (the tests hold it to 1e-5; a sanity check here)
        reference = model(**per_response)
        gap = max(float((reference - model(**shared)).abs().max()),
                  float((reference - prefix_cache_rewards(model, branches)).abs().max()))
    if gap > 1e-4:
        raise SystemExit(f"shared-prefix rewards differ from per-response ones by {gap:.2e}: the packing is wrong")

    def train_step(inputs: dict[str, torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            bt_loss(model(**inputs), n, k).backward()
        return run

    def score(inputs: dict[str, torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                model(**inputs)
        return run

    pairs, responses = n * k * (k - 1) // 2, n * k
    out: dict[str, float] = {"max_reward_gap": gap, "tokens_per_response": int(ids.numel()),
                             "tokens_shared": packed.n_tokens}
    for name, inputs in (("per_response", per_response), ("shared", shared)):
        (out[f"{name}_train_wall_s"], t_train), (out[f"{name}_score_wall_s"], t_score) = (
            timed(train_step(inputs), repeats), timed(score(inputs), repeats))
        out[f"{name}_train_s"], out[f"{name}_score_s"] = t_train, t_score
        out[f"{name}_train_pairs_per_s"] = pairs / t_train
        out[f"{name}_score_responses_per_s"] = responses / t_score
    def score_kv() -> None:
        with torch.inference_mode():
            prefix_cache_rewards(model, branches)

    out["kv_score_wall_s"], out["kv_score_s"] = timed(score_kv, repeats)
    out["kv_score_responses_per_s"] = responses / out["kv_score_s"]
    out["kv_score_speedup"] = out["per_response_score_s"] / out["kv_score_s"]
    for kind in ("train", "score"):
        out[f"{kind}_speedup"] = out[f"per_response_{kind}_s"] / out[f"shared_{kind}_s"]
        out[f"{kind}_speedup_wall"] = out[f"per_response_{kind}_wall_s"] / out[f"shared_{kind}_wall_s"]
    out["token_ratio"] = out["tokens_per_response"] / out["tokens_shared"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--groups", type=int, default=4, help="prompts per step")
    ap.add_argument("--shapes", default="384:128:2,384:128:4", help="P:R:K,... prompt tokens, response tokens, K")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: CPU seconds of the process are the compute, robust to a loaded machine)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(args.layers, args.hidden)
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                           "load_before": os.getloadavg()},
               "config": vars(args), "runs": []}
    print("| P:R | K | tokens/step per-resp → shared | train pairs/s per-resp → shared | speed-up | "
          "score resp/s per-resp → shared | speed-up | score resp/s, KV reuse | speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for shape in args.shapes.split(","):
        p, r, k = (int(x) for x in shape.split(":"))
        m = measure(model, make_groups(args.groups, k, p, r), k, args.repeats)
        results["runs"].append({"prompt_tokens": p, "response_tokens": r, "k": k, **m})
        print(f"| {p}:{r} | {k} | {m['tokens_per_response']} → {m['tokens_shared']} ({m['token_ratio']:.2f}x) | "
              f"{m['per_response_train_pairs_per_s']:.2f} → {m['shared_train_pairs_per_s']:.2f} | "
              f"{m['train_speedup']:.2f}x | {m['per_response_score_responses_per_s']:.1f} → "
              f"{m['shared_score_responses_per_s']:.1f} | {m['score_speedup']:.2f}x | "
              f"{m['kv_score_responses_per_s']:.1f} | {m['kv_score_speedup']:.2f}x |  (max reward gap "
              f"{m['max_reward_gap']:.1e}; wall-clock speed-ups {m['train_speedup_wall']:.2f}x / "
              f"{m['score_speedup_wall']:.2f}x)", flush=True)
    results["machine"]["load_after"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
