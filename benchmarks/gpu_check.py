"""GPU check: train a Qwen2-0.5B-like reward model (random init, nothing downloaded) in bf16 with
DDP and with FSDP2, report tokens/s and MFU; then shared-prefix throughput (when
``benchmarks/bench_shared_prefix.py`` exists) and the out-of-core data benchmark.

    bash benchmarks/gpu_check.sh --out DIR [--steps 300] [--peak-tflops 989] [--skip-data]
    bash benchmarks/gpu_check.sh --dry-run --out DIR      # tiny config, CPU, 3 steps: the same files

Writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md``.

MFU = achieved model FLOP/s / the GPU's peak dense bf16 FLOP/s, with the training FLOPs of one
token (forward + backward = 3 x forward; Kaplan et al. 2020 / PaLM appendix B):

    flops/token = 6 * N + 12 * L * d * s

N the parameters outside the embedding (a reward model has no LM head: the scalar head is
counted in N), L layers, d hidden size, s the mean real sequence length (the attention
scores and their product with V). Tokens are real (non-pad) tokens, so padding lowers MFU.
Peak: :data:`PEAK_BF16_TFLOPS` by GPU name (dense, no sparsity), or ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: Dense bf16 tensor-core peak (TFLOP/s) by a substring of ``torch.cuda.get_device_name()``; first match wins.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
                    "A800": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "4090": 165.0}

#: Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads / 2 KV heads, MLP 4864, vocab 151936).
QWEN2_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, max_position_embeddings=4096)

WORDS = ["the", "a", "it", "is", "on", "and", "then", "so", "cat", "dog", "bird", "fish", "horse", "cow", "sheep",
         "goat", "good", "bad", "answer", "question", "because", "which", "number", "first", "second", "result",
         "step", "therefore", "value", "total", "each", "more", "less", "than", "equal"]


def full_size_config(tiny: Path) -> Any:
    """The tiny decoder's config at ``tiny`` with Qwen2-0.5B's shape. Its per-layer ``layer_types`` list is
    dropped so that the config derives it again for 24 layers (kept, it has the tiny model's 2 entries and
    transformers 5 fails at layer 3 with ``IndexError``)."""
    from transformers import AutoConfig, Qwen2Config

    settings = {**AutoConfig.from_pretrained(tiny).to_dict(), **QWEN2_05B}
    settings.pop("layer_types", None)
    return Qwen2Config(**settings)


def build_backbone(path: Path, dry_run: bool) -> dict[str, Any]:
    """A random-init Qwen2 decoder at ``path`` (the tiny test one for a dry run) with the
    project's offline MiniLM-vocabulary tokenizer; returns its shape for the FLOP count."""
    import torch
    from transformers import AutoConfig, Qwen2Model

    from rewardline.modeling.tiny import build_tiny_qwen2

    build_tiny_qwen2(path, max_positions=4096)
    if not dry_run:
        Qwen2Model(full_size_config(path)).save_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    d, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    with torch.device("meta"):  # shape only: counts parameters without allocating them
        n_total = sum(p.numel() for p in Qwen2Model(config).parameters())
    n = n_total - vocab * d + d + 1  # minus the token embedding, plus the scalar head
    return {"hidden_size": d, "layers": layers, "vocab_size": vocab, "params": n_total + d + 1,
            "non_embedding_params": n}


def write_pairs(path: Path, n_prompts: int, words: tuple[int, int], seed: int = 0) -> Path:
    """Synthetic rankings (K = 4, all 6 pairs per prompt) of random-word responses with ``words``
    = (min, max) words each; the better response has more "good" words (learnable)."""
    import itertools

    import numpy as np

    from rewardline.pairs.expand import write_pairs_rows

    rng = np.random.default_rng(seed)
    prompts, responses, pairs = [], [], []
    for p in range(n_prompts):
        pid = f"p{p}"
        prompts.append({"prompt_id": pid, "prompt": " ".join(rng.choice(WORDS, 32)), "category": "syn"})
        quality = rng.permutation(4)
        for j, q in enumerate(quality):
            text = " ".join(["good"] * int(q) + list(rng.choice(WORDS, rng.integers(*words))))
            responses.append({"response_id": f"{pid}r{j}", "prompt_id": pid, "response": text, "source": "syn"})
        for i, j in itertools.combinations(range(4), 2):
            a, b = (i, j) if quality[i] > quality[j] else (j, i)
            pairs.append({"prompt_id": pid, "response_a_id": f"{pid}r{a}", "response_b_id": f"{pid}r{b}",
                          "label": 1.0, "n_votes": 1, "margin": float(abs(quality[i] - quality[j])),
                          "category": "syn", "split": "val" if p % 20 == 19 else "train"})
    return write_pairs_rows(path, prompts, responses, pairs)


def worker(cfg_file: Path, pairs: Path, out: Path, result: Path) -> None:
    """One torchrun worker: ``train()``; rank 0 writes its metrics and the peak GPU memory."""
    import torch

    from rewardline.training.loop import TrainConfig, train

    metrics = train(pairs, out, TrainConfig(**json.loads(cfg_file.read_text())))
    if int(os.environ.get("RANK", "0")) == 0:
        metrics["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None
        result.write_text(json.dumps(metrics, default=str))


def run_training(strategy: str, args: argparse.Namespace, backbone: Path, pairs: Path, work: Path) -> dict[str, Any]:
    """``torchrun --standalone --nproc-per-node=1`` of :func:`worker` with ``train.strategy``."""
    cfg = dict(backbone=str(backbone), strategy=strategy, max_steps=args.steps, epochs=100, max_length=args.max_length,
               batch_tokens=args.batch_tokens, lr=1e-5, warmup_ratio=0.01, checkpoint_every=0, progress=False,
               log_every=max(1, args.steps // 10), cache_dir=str(work / "cache"), seed=0,
               device="cpu" if args.dry_run else "auto", precision="fp32" if args.dry_run else "bf16",
               gradient_checkpointing=args.gradient_checkpointing)
    (work / f"{strategy}.json").write_text(json.dumps(cfg))
    result = work / f"{strategy}-metrics.json"
    say(f"training with strategy {strategy}: {args.steps} steps (tokenising first; the worker's output is kept "
        "for the error message)")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", __file__, "--worker",
           str(work / f"{strategy}.json"), str(pairs), str(work / f"model-{strategy}"), str(result)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
    metrics = json.loads(result.read_text())
    return {"steps": metrics["steps"], "train_seconds": metrics["train_seconds"],
            "wall_seconds": time.perf_counter() - started, "tokens_per_s": metrics["tokens_per_s"],
            "sequences_per_s": metrics["sequences_per_s"], "train_sequences": metrics["train_sequences"],
            "peak_memory_gb": metrics["peak_memory_gb"], "final_train_loss": metrics.get("train_loss")}


def mfu(run: dict[str, Any], shape: dict[str, Any], peak_tflops: float | None) -> dict[str, Any]:
    """Model FLOP/s and MFU of one run (module docstring)."""
    if "error" in run:
        return run
    tokens = run["tokens_per_s"] * run["train_seconds"]
    mean_len = tokens / max(run["train_sequences"], 1)
    per_token = 6 * shape["non_embedding_params"] + 12 * shape["layers"] * shape["hidden_size"] * mean_len
    achieved = per_token * run["tokens_per_s"]
    return {**run, "mean_sequence_tokens": mean_len, "model_tflops_per_s": achieved / 1e12,
            "mfu": achieved / (peak_tflops * 1e12) if peak_tflops else None}


def say(line: str) -> None:
    """A progress line on stderr with the time, so a long run shows which phase it is in."""
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def machine(peak_override: float | None) -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    table_peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if gpu and k in gpu), None)
    return {"gpu": gpu, "cpu": f"{platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__,
            "cuda": torch.version.cuda, "peak_bf16_tflops": peak_override or table_peak,
            "peak_source": "--peak-tflops" if peak_override else ("table" if table_peak else None)}


def _json_tail(stdout: str) -> dict[str, Any]:
    """The last JSON object a benchmark printed (it may log before it)."""
    start = stdout.rfind("\n{")
    return json.loads(stdout[start + 1 if start >= 0 else stdout.index("{"):])


def shared_prefix(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    say("shared-prefix throughput (CPU timing)")
    script = ROOT / "benchmarks" / "bench_shared_prefix.py"
    if not script.exists():
        return {"status": "not available (benchmarks/bench_shared_prefix.py does not exist in this checkout)"}
    cmd = [sys.executable, str(script), *args.shared_prefix_args.split()]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    if proc.returncode != 0:
        return {"status": f"failed: exit {proc.returncode}", "stderr": proc.stderr[-2000:], "command": cmd}
    try:
        return {"status": "ran", "command": cmd, "result": _json_tail(proc.stdout)}
    except ValueError:
        return {"status": "ran", "command": cmd, "stdout": proc.stdout[-4000:]}


def data_stages(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    if args.skip_data:
        return {"status": "skipped (--skip-data)"}
    say(f"data stages on {args.rankings:,} rankings")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_data_stages.py"), "--rankings", str(args.rankings),
           "--workdir", str(work / "data-bench")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"status": f"failed: exit {proc.returncode}", "stderr": proc.stderr[-2000:]}
    return {"status": "ran", "rankings": args.rankings, "result": _json_tail(proc.stdout)}


def markdown(report: dict[str, Any]) -> str:
    """The figures as a Markdown table (the section for docs/benchmarks.md)."""
    m, shape = report["machine"], report["model"]
    lines = [f"GPU: {m['gpu'] or 'none (CPU)'}; torch {m['torch']}, CUDA {m['cuda']}; peak bf16 "
             f"{m['peak_bf16_tflops'] or 'unknown'} TFLOP/s ({m['peak_source'] or 'no MFU'}); "
             f"mode: {report['mode']}. Model: {shape['params'] / 1e6:.0f} M parameters "
             f"({shape['non_embedding_params'] / 1e6:.0f} M outside the embedding), {shape['layers']} layers, "
             f"d = {shape['hidden_size']}.", "",
             "| strategy | steps | tokens/s | model TFLOP/s | MFU | peak memory (GB) | train s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, run in report["training"].items():
        if "error" in run:
            lines.append(f"| {name} | failed (the error is in gpu_check.json) | | | | | |")
            continue
        mfu_ = f"{100 * run['mfu']:.1f} %" if run["mfu"] is not None else "n/a"
        mem = f"{run['peak_memory_gb']:.1f}" if run["peak_memory_gb"] is not None else "n/a"
        lines.append(f"| {name} | {run['steps']} | {run['tokens_per_s']:,.0f} | {run['model_tflops_per_s']:.2f} | "
                     f"{mfu_} | {mem} | {run['train_seconds']:.1f} |")
    data_stage = report["data_stages"]
    lines += ["", f"Shared-prefix throughput: {report['shared_prefix']['status']}.",
              f"Data stages ({data_stage.get('rankings', '-')} rankings): {data_stage['status']}."]
    data = report["data_stages"].get("result")
    if data:
        lines.append("```json\n" + json.dumps(data, indent=1) + "\n```")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for gpu_check.json and gpu_check.md (required)")
    parser.add_argument("--dry-run", action="store_true", help="tiny config on CPU, a few steps (the test's mode)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per strategy (300; dry run 3)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per sequence (1024; dry run 48)")
    parser.add_argument("--batch-tokens", type=int, default=None, help="padded tokens per micro-batch (32768)")
    parser.add_argument("--prompts", type=int, default=None, help="synthetic prompts, K = 4 (4000; dry run 40)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="train.gradient_checkpointing")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the peak bf16 TFLOP/s table")
    parser.add_argument("--rankings", type=int, default=None, help="data benchmark size (10M; dry run 2000)")
    parser.add_argument("--skip-data", action="store_true", help="skip the out-of-core data benchmark")
    parser.add_argument("--shared-prefix-args", default="", help="arguments for benchmarks/bench_shared_prefix.py")
    parser.add_argument("--worker", nargs=4, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    if args.out is None:
        parser.error("--out DIR is required")
    small = args.dry_run
    defaults = dict(steps=(3, 300), max_length=(48, 1024), batch_tokens=(512, 32768), prompts=(40, 4000),
                    rankings=(2000, 10_000_000))
    for key, (dry, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, dry if small else full)
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    say(f"building the backbone ({'tiny' if small else 'Qwen2-0.5B shape'}) and {args.prompts} synthetic prompts")
    shape = build_backbone(work / "backbone", small)
    pairs = write_pairs(work / "pairs", args.prompts, (8, 24) if small else (150, 450))
    peak = machine(args.peak_tflops)
    training = {s: mfu(run_training(s, args, work / "backbone", pairs, work), shape, peak["peak_bf16_tflops"])
                for s in ("ddp", "fsdp")}
    report = {"mode": "dry-run (CPU, tiny config, fp32)" if small else "gpu (bf16)", "machine": peak, "model": shape,
              "config": {k: getattr(args, k) for k in (*defaults, "gradient_checkpointing")},
              "training": training, "shared_prefix": shared_prefix(args, work), "data_stages": data_stages(args, work),
              "load_average": os.getloadavg(), "seconds": time.perf_counter() - started}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    if any("error" in run for run in training.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
