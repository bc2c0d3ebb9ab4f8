"""Held-out quality: rewardline's default recipe vs a plain TRL ``RewardTrainer`` script, same data, same backbone.

Both trainers see the same hh-rlhf-format training file and are scored on the same held-out pairs:

* **rewardline**: the CLI's default recipe, i.e. what ``rewardline train`` runs in the project: the ``train``
  section of the repository's ``params.yaml`` (overridable with ``--set``). When the recipe selects on val
  (``eval_every`` or ``patience`` > 0: evaluation every N steps, best checkpoint, early stopping) it carves a val
  split out of the *training* file (``--val-fraction``, default 0.1 of its prompts, by hash); when it selects
  nothing on val (the default recipe) it trains on the whole training file, the same pairs TRL gets. It never
  sees the test file while training.
* **TRL 1.16** ``RewardTrainer`` with ``RewardConfig``'s documented defaults (lr 1e-4, batch 8, 3 epochs,
  linear decay, no warm-up, no weight decay, dropout disabled) on the whole training file, as a plain
  script would run it: text rows ``{"chosen", "rejected"}`` (the whole dialogue, TRL's implicit-prompt
  format) tokenised by TRL. Deviations, each stated in the report: ``max_length`` = the backbone's 512
  positions (TRL's default 1024 is longer than MiniLM can embed; TRL drops longer pairs),
  ``gradient_checkpointing`` off (recomputes activations, same numbers, slower) and bf16 only on CUDA
  (TRL's default bf16 autocast on a CPU without bf16 units is ~30x slower). ``--trl-set key=value``
  changes any RewardConfig field (e.g. ``num_train_epochs=1 learning_rate=2e-5``).

Score: accuracy on held-out non-tie pairs = share where r(chosen) > r(rejected) (a tie of rewards
counts 1/2), 95 % CI by a bootstrap over prompts (rewardline.evaluation.metrics.accuracy_with_ci), per
seed; across seeds mean and sd (ddof 1); and the per-seed difference rewardline − TRL.

    nice -n 5 python benchmarks/bench_quality.py \
        --hh /work/shared/data/hh_rlhf_harmless_base_sample.jsonl.gz --seeds 0,1,2 --out /tmp/bench_quality
    # or any hh-rlhf-format files:  --train TRAIN.jsonl[.gz] --test TEST.jsonl[.gz]

``--hh`` splits one file by prompt (``--test-fraction`` 0.2, sha256 of the prompt) and writes the two
files it used next to the report. TRL is a benchmark-only dependency (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_train_vs_trl import write_pairs_dir  # noqa: E402  (sibling benchmark script)

Row = dict[str, str]  # {"prompt", "chosen", "rejected"}: prompt = dialogue up to the last "Assistant:"


# -- data ---------------------------------------------------------------------------------
def _open(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else path.open()


def _fraction(text: str, salt: str) -> float:
    """A uniform [0, 1) number from sha256(salt + text): the split position of a prompt."""
    return int(hashlib.sha256((salt + text).encode()).hexdigest()[:8], 16) / 0x100000000


def read_hh(path: Path) -> list[Row]:
    """hh-rlhf rows ``{"chosen", "rejected"}`` → prompt (shared prefix up to the last ``Assistant:``) and
    the two last turns; rows whose two sides do not share that prefix or are identical are skipped."""
    rows = []
    with _open(path) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            cut = rec["chosen"].rfind("\n\nAssistant:") + len("\n\nAssistant:")
            prompt = rec["chosen"][:cut]
            if not rec["rejected"].startswith(prompt) or rec["chosen"] == rec["rejected"]:
                continue
            rows.append({"prompt": prompt, "chosen": rec["chosen"], "rejected": rec["rejected"]})
    return rows


def split_hh(path: Path, out: Path, test_fraction: float, salt: str = "bench-quality") -> tuple[Path, Path]:
    """Split one hh-rlhf file by prompt into ``out/train.jsonl`` and ``out/test.jsonl`` (same row format)."""
    out.mkdir(parents=True, exist_ok=True)
    train, test = out / "train.jsonl", out / "test.jsonl"
    with _open(path) as f, train.open("w") as tr, test.open("w") as te:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                cut = rec["chosen"].rfind("\n\nAssistant:") + len("\n\nAssistant:")
                (te if _fraction(rec["chosen"][:cut], salt) < test_fraction else tr).write(line.rstrip("\n") + "\n")
    return train, test


def _pid(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def pairs_dir(train: list[Row], test: list[Row], out: Path, val_fraction: float,
              labels: list[float] | None = None) -> Path:
    """A rewardline pairs directory: training rows split train / val by prompt, test rows all test. ``labels``:
    P(chosen preferred) of each training row (soft labels, e.g. a teacher's), else 1."""
    prompts, responses, pairs = {}, {}, []
    for split_rows, fixed, row_labels in ((train, None, labels), (test, "test", None)):
        for i, row in enumerate(split_rows):
            pid = _pid(row["prompt"])
            prompts[pid] = {"prompt_id": pid, "prompt": row["prompt"].strip(), "category": "hh"}
            ids = []
            for side in ("chosen", "rejected"):
                text = row[side][len(row["prompt"]):].strip()
                rid = hashlib.sha256(f"{pid}\0{text}".encode()).hexdigest()[:16]
                responses[rid] = {"response_id": rid, "prompt_id": pid, "response": text, "source": "hh"}
                ids.append(rid)
            split = fixed or ("val" if _fraction(row["prompt"], "bench-val") < val_fraction else "train")
            label = 1.0 if row_labels is None else float(row_labels[i])
            pairs.append({"prompt_id": pid, "response_a_id": ids[0], "response_b_id": ids[1], "label": label,
                          "n_votes": 1, "margin": 0.0, "category": "hh", "split": split})
    return write_pairs_dir(out, list(prompts.values()), list(responses.values()), pairs)


def held_out_score(chosen: np.ndarray, rejected: np.ndarray, test: list[Row], seed: int) -> dict[str, Any]:
    """Accuracy of r(chosen) > r(rejected) with its prompt-bootstrap 95 % CI."""
    from rewardline.evaluation.metrics import accuracy_with_ci

    acc = accuracy_with_ci(chosen, rejected, np.ones(len(test)), [_pid(r["prompt"]) for r in test], seed=seed)
    return {"accuracy": acc.accuracy, "ci_low": acc.ci_low, "ci_high": acc.ci_high, "n_pairs": acc.n_pairs}


# -- trainers -----------------------------------------------------------------------------
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def default_recipe(overrides: list[str]) -> Any:
    """The pipeline's training recipe: ``params.yaml``'s ``train`` section with ``key=value`` overrides."""
    from rewardline.config import build, load_params
    from rewardline.training.loop import TrainConfig

    return build(TrainConfig, load_params(PARAMS).get("train")).override(overrides)


def torch_seed_fixed_at(seed: int | None) -> contextlib.AbstractContextManager:
    """Inside, every ``torch.manual_seed(s)`` seeds ``seed`` instead (``None``: no change). Training then draws the
    head's initialisation and the dropout stream from ``seed`` whatever ``train.seed`` is, while the data order
    still comes from ``train.seed`` (``plan_batches`` draws it with NumPy): runs that differ in data order only,
    the members of a model soup."""
    import torch

    if seed is None:
        return contextlib.nullcontext()
    manual_seed = torch.manual_seed
    return mock.patch.object(torch, "manual_seed", lambda _s: manual_seed(seed))


def default_val_fraction(cfg: Any) -> float:
    """0.1 when the recipe selects on val (``eval_every`` or ``patience`` > 0), else 0: nothing would use the val
    split but the final val metrics, and carving it out would train rewardline on fewer pairs than TRL."""
    return 0.1 if cfg.eval_every > 0 or cfg.patience > 0 else 0.0


def run_rewardline(train: list[Row], test: list[Row], work: Path, seed: int, overrides: list[str],
                   val_fraction: float | None, init_seed: int | None = None,
                   labels: list[float] | None = None) -> dict[str, Any]:
    """Train the default recipe on the training rows (``labels``: their soft labels, else 1); score the test rows
    (prompt, last turn). ``val_fraction`` None: :func:`default_val_fraction`."""
    from rewardline.data.tables import json_safe
    from rewardline.training.loop import train as train_model

    cfg = default_recipe([*overrides, f"seed={seed}"]).replace(
        progress=False, checkpoint_every=0, checkpoint_dir=str(work / "ck"), cache_dir=str(work / "cache"))
    val_fraction = default_val_fraction(cfg) if val_fraction is None else val_fraction
    data = pairs_dir(train, test, work / "pairs", val_fraction, labels)
    t0 = time.perf_counter()
    with torch_seed_fixed_at(init_seed):
        metrics = train_model(data, work / "model", cfg)
    seconds = time.perf_counter() - t0
    chosen, rejected = rewardline_pair_rewards(work / "model", test)
    # json_safe: no val split leaves train's val metrics NaN, and report.json is strict JSON (null)
    return json_safe({**held_out_score(chosen, rejected, test, seed), "train_seconds": seconds,
                      "steps": metrics["steps"], "best_step": metrics.get("best_step"),
                      "val_accuracy": metrics.get("val_accuracy"), "val_fraction": val_fraction,
                      "config": {k: v for k, v in cfg.model_dump().items()
                                 if k in ("lr", "epochs", "batch_tokens", "max_length", "eval_every", "patience",
                                          "schedule", "warmup_ratio", "freeze_embeddings", "freeze_layers")}})


def rewardline_pair_rewards(model: Path, test: list[Row]) -> tuple[np.ndarray, np.ndarray]:
    """A rewardline model's rewards of each test row's chosen and rejected last turn (prompt = the dialogue before)."""
    from rewardline.modeling.score import score_texts

    prompts = [r["prompt"].strip() for r in test]
    chosen, rejected = ([r[s][len(r["prompt"]):].strip() for r in test] for s in ("chosen", "rejected"))
    return score_texts(model, prompts, chosen), score_texts(model, prompts, rejected)


def _trl_scores(model: Any, tokenizer: Any, texts: list[str], max_length: int) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 16):
            batch = tokenizer(texts[i : i + 16], truncation=True, max_length=max_length, padding=True,
                              return_tensors="pt").to(model.device)
            out.append(model(**batch).logits.squeeze(-1).float().cpu().numpy())
    return np.concatenate(out)


def run_trl(train: list[Row], test: list[Row], work: Path, seed: int, overrides: list[str],
            backbone: str) -> dict[str, Any]:
    """TRL RewardTrainer with RewardConfig defaults (module docstring) on the whole training file."""
    import datasets
    import torch
    import yaml
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from rewardline.modeling.backbones import resolve_backbone

    path = resolve_backbone(backbone)
    tokenizer = AutoTokenizer.from_pretrained(path)
    max_length = min(512, getattr(tokenizer, "model_max_length", 512) or 512)
    fields = {"max_length": max_length, "gradient_checkpointing": False, "bf16": torch.cuda.is_available()}
    if tokenizer.eos_token is None:  # BERT-style: TRL appends eos_token to each text; [SEP] is its end mark
        fields["eos_token"] = tokenizer.sep_token
    fields.update({k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in overrides)})
    args = RewardConfig(output_dir=str(work / "trl"), seed=seed, save_strategy="no", report_to="none",
                        use_cpu=not torch.cuda.is_available(), **fields)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    ds = datasets.Dataset.from_dict({side: [r[side] for r in train] for side in ("chosen", "rejected")})
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    chosen = _trl_scores(trainer.model, tokenizer, [r["chosen"] for r in test], max_length)
    rejected = _trl_scores(trainer.model, tokenizer, [r["rejected"] for r in test], max_length)
    keys = ("learning_rate", "per_device_train_batch_size", "num_train_epochs", "lr_scheduler_type",
            "warmup_steps", "weight_decay", "max_length", "disable_dropout", "gradient_checkpointing", "bf16")
    return {**held_out_score(chosen, rejected, test, seed), "train_seconds": seconds, "steps": result.global_step,
            "train_rows_used": len(trainer.train_dataset), "config": {k: getattr(args, k) for k in keys}}


# -- report -------------------------------------------------------------------------------
def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per trainer: accuracy and train time over seeds; per seed: rewardline − TRL accuracy."""
    out: dict[str, Any] = {k: {"accuracy": _spread([r["accuracy"] for r in v]),
                               "train_seconds": _spread([r["train_seconds"] for r in v])} for k, v in runs.items() if v}
    if runs.get("rewardline") and runs.get("trl"):
        diffs = [a["accuracy"] - b["accuracy"] for a, b in zip(runs["rewardline"], runs["trl"], strict=False)]
        out["difference_rewardline_minus_trl"] = _spread(diffs)
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = ["| trainer | seed | held-out accuracy [95 % CI] | train s | steps |", "| --- | --- | --- | --- | --- |"]
    for name, runs in report["runs"].items():
        for seed, r in zip(report["seeds"], runs, strict=False):
            lines.append(f"| {name} | {seed} | {r['accuracy']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}] "
                         f"| {r['train_seconds']:.0f} | {r['steps']} |")
    for name, s in report["summary"].items():
        acc = s.get("accuracy", s)
        lines.append(f"\n{name}: mean {acc['mean']:.4f}, sd {acc['sd']:.4f} "
                     f"(min {acc['min']:.4f}, max {acc['max']:.4f})")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--hh", type=Path, help="one hh-rlhf file, split by prompt into train / test")
    src.add_argument("--train", type=Path, help="hh-rlhf-format training file (needs --test)")
    ap.add_argument("--test", type=Path, help="hh-rlhf-format held-out file")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--split-salt", default="bench-quality",
                    help="--hh: the salt of the split by prompt (another salt, another draw of test prompts)")
    ap.add_argument("--val-fraction", type=float, default=None,
                    help="rewardline's val share of the training prompts (default: 0.1 if the recipe selects on "
                         "val, else 0: the whole training file, as TRL)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--trainers", default="rewardline,trl")
    ap.add_argument("--set", nargs="*", default=[], help="rewardline TrainConfig overrides key=value")
    ap.add_argument("--trl-set", nargs="*", default=[], help="RewardConfig overrides key=value")
    ap.add_argument("--init-seed", type=int, default=None,
                    help="rewardline: one torch seed for every run (same head init and dropout; data order from "
                         "--seeds), e.g. members of a weight average (bench_seed_average.py)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_quality"))
    args = ap.parse_args()
    if args.train and not args.test:
        ap.error("--train needs --test")

    import torch

    if args.hh:
        train_file, test_file = split_hh(args.hh, args.out / "data", args.test_fraction, args.split_salt)
    else:
        train_file, test_file = args.train, args.test
    train, test = read_hh(train_file), read_hh(test_file)
    backbone = default_recipe(args.set).backbone
    seeds = [int(s) for s in args.seeds.split(",")]
    trainers = args.trainers.split(",")
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__, "train_file": str(train_file), "test_file": str(test_file),
        "train_pairs": len(train), "test_pairs": len(test), "backbone": backbone, "seeds": seeds,
        "runs": {t: [] for t in trainers}}
    for seed in seeds:
        for name in trainers:
            work = args.out / f"{name}-seed{seed}"
            res = (run_rewardline(train, test, work, seed, args.set, args.val_fraction, args.init_seed)
                   if name == "rewardline"
                   else run_trl(train, test, work, seed, args.trl_set, backbone))
            report["runs"][name].append(res)
            print(json.dumps({"trainer": name, "seed": seed, **res}, default=str), flush=True)
            report["summary"] = summarize(report["runs"])
            (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / "report.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
