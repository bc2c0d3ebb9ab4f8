"""Reward-model training: one readable loop, the loss chosen by name (``train.objective``).

    pairs dir ──tokenize (cached)──> prompt groups ──pack to token budget──> global steps
    for each step:   lr = schedule(step)
                     W = Σ objective.group_weight(group) over the global step's prompt groups
                     for each of this rank's micro-batches (grad accumulation):
                         r = model(all unique sequences of the batch's prompt groups)   # one pass each
                         loss = objective.loss(r, objective.targets(batch), W / world)  -> backward
                     clip grad norm, AdamW step, log, checkpoint every N steps
                     (a non-finite loss or grad norm stops the run: NonFiniteLoss, no model saved)
    evaluate on val, store reward statistics, save the model (safetensors + tokenizer + json)

The objectives live in :mod:`rewardline.training.objectives`, known here only as ``Objective``. Distributed:
launched by ``torchrun`` the same function runs as DDP (NCCL on CUDA, gloo on CPU) or, with ``train.strategy:
fsdp``, FSDP2 (:mod:`rewardline.training.parallel`). Every rank plans the same global steps (``plan_run``) and runs
its share of micro-batches; the loss of each micro-batch is divided by the weight of the whole global step, times
the world size (DDP averages gradients), so 1 process with ``grad_accum = A·W`` and ``W`` processes with
``grad_accum = A`` compute the same update.

Checkpoints (``checkpoint_every`` steps) hold model + AdamW state in safetensors, the RNG states and the step;
a run started with the same config and data resumes from the latest one and ends with the weights of an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import AutoTokenizer

from rewardline.data.tables import content_digest, read_split, stage_tables, table_path
from rewardline.errors import NonFiniteLoss
from rewardline.modeling.backbones import load_backbone
from rewardline.modeling.device import Runtime, all_reduce_sum, barrier, main_first, select_runtime
from rewardline.modeling.model import RewardModel
from rewardline.modeling.shared_prefix import resolve_shared_prefix
from rewardline.modeling.tokenize import TokenizedResponses, tokenize_pairs_dir
from rewardline.ops.atomic import check_output_dir, exclusive, staged_output
from rewardline.tracking import NullTracker, Tracker
from rewardline.training.batching import (
    Group,
    ResponseTargets,
    build_groups,
    collate,
    plan_batches,
    plan_steps,
    rank_micro_batches,
    required_targets,
)
from rewardline.training.checkpoint import checkpoint_extras, latest_checkpoint, load_checkpoint, save_checkpoint
from rewardline.training.config import TrainConfig
from rewardline.training.objectives import OBJECTIVES, Objective, build_objective
from rewardline.training.optim import lr_at, make_optimizer, set_lr
from rewardline.training.parallel import as_float, full_state_dict, grad_sync, is_sharded, wrap_model
from rewardline.training.progress import TrainingProgress
from rewardline.training.selection import BEST_WEIGHTS_FILE, ModelSelection, evaluate, no_evaluation
from rewardline.training.step_data import labelled_groups, load_step_groups

__all__ = ["TrainConfig", "evaluate", "lr_at", "train"]
LOG = logging.getLogger(__name__)

#: Fields that do not change what is trained (left out of the resume fingerprint).
_RUN_ONLY = {"log_every", "checkpoint_every", "checkpoint_dir", "resume", "keep_checkpoints", "cache_dir", "progress"}


# -- setup ------------------------------------------------------------------------------
@dataclass
class TrainingData:
    """Tokenised responses and the prompt groups of the train and val splits."""

    tokenizer: Any
    tok: TokenizedResponses
    pad_id: int
    train_groups: list[Group]
    val_groups: list[Group]
    tokenize_seconds: float
    targets: ResponseTargets | None = None  # per-response utilities (objectives with ``needs_targets``)
    step_separator: str | None = None  # objective prm: the separator token (rewardline.modeling.steps)
    separator_added: bool = False  # ... added to the tokenizer: the embeddings are resized
    packed: bool = False  # shared-prefix rows (``train.shared_prefix`` resolved for the model)


def load_training_data(pairs_dir: Path, cfg: TrainConfig, rt: Runtime) -> TrainingData:
    """Tokenise every response once (rank 0 first) and group the comparisons of the train and val splits by prompt."""
    t0 = time.perf_counter()
    tokenizer = load_backbone(AutoTokenizer.from_pretrained, cfg.backbone)
    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    if OBJECTIVES[cfg.objective].data_kind == "steps":  # step-labelled solutions: rewardline.training.step_data
        tok, train, val, separator, added = load_step_groups(pairs_dir, tokenizer, cfg)
        return TrainingData(tokenizer, tok, pad_id, train, val, time.perf_counter() - t0, None, separator, added)
    stage_tables(pairs_dir, ("train", "prompts", "responses"),  # before any work: exit 2 naming what is there
                 expected="a pairs directory (`rewardline pairs --out DIR`; the pipeline's data/pairs)")
    with main_first(rt):  # the other ranks load rank 0's cache file
        tok = tokenize_pairs_dir(pairs_dir, tokenizer, cfg.format_config, cfg.cache_dir)
    tokenize_seconds = time.perf_counter() - t0
    val_table = read_split(pairs_dir, "val")
    targets = (required_targets(pairs_dir, cfg.objective, cfg.target_centre, val_table)
               if OBJECTIVES[cfg.objective].needs_targets else None)
    train_groups = build_groups(read_split(pairs_dir, "train"), tok, cfg.weighting, targets)
    val_groups = build_groups(val_table, tok, cfg.weighting, targets) if val_table is not None else []
    if not train_groups:
        raise ValueError(f"{table_path(pairs_dir, 'train')} has no pairs")
    return TrainingData(tokenizer, tok, pad_id, train_groups, val_groups, tokenize_seconds, targets)


def plan_run(groups: list[Group], cfg: TrainConfig, world_size: int, packed: bool = False) -> list[list[list[int]]]:
    """The run's global steps (micro-batches of group indices), identical on every rank: ``epochs`` epochs, more whole
    epochs while there are < ``min_steps`` steps (each pair seen equally often), then cut to ``max_steps``."""
    steps: list[list[list[int]]] = []
    epoch = 0
    while epoch < cfg.epochs or (len(steps) < cfg.min_steps and steps):
        batches = plan_batches(groups, cfg.batch_tokens, cfg.seed, epoch, packed=packed)
        steps += plan_steps(batches, world_size, cfg.grad_accum)
        epoch += 1
    return steps[: cfg.max_steps] if cfg.max_steps > 0 else steps


def build_model(cfg: TrainConfig, rt: Runtime, data: TrainingData | None = None) -> tuple[RewardModel, list[str]]:
    """The reward model in train mode on the device (a PRM: its step separator recorded, the embeddings
    resized when it was added); also the names of the frozen unused parameters."""
    model = RewardModel.from_backbone(cfg.backbone, cfg.pooling, cfg.format_config, cfg.dropout)
    model.config.step_separator = data.step_separator if data is not None else None
    if data is not None and data.separator_added:
        model.backbone.resize_token_embeddings(len(data.tokenizer))
    model = model.to(rt.device)
    model.chunk_by_length = cfg.chunk_by_length  # fsdp turns it off (parallel.wrap_model)
    frozen = model.freeze_unused() + model.freeze_bottom(cfg.freeze_embeddings, cfg.freeze_layers)
    if cfg.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model, frozen


def _fingerprint(cfg: TrainConfig, tok: TokenizedResponses, pairs_dir: Path, world: int) -> str:
    """What a checkpoint must match to be resumed: every config field that changes what is
    trained (``objective`` included), the tokenised data, the splits' bytes, the global batch."""
    key = {k: v for k, v in cfg.model_dump().items() if k not in _RUN_ONLY}
    key["tokenized"] = tok.fingerprint
    key["global_micro_batches"] = world * cfg.grad_accum
    kind = OBJECTIVES[cfg.objective]
    splits = ("solutions",) if kind.data_kind == "steps" else ("train", "val", *(("targets",) * kind.needs_targets))
    for split in splits:
        path = table_path(pairs_dir, split)  # a partitioned split, or a one-file table (targets, solutions)
        key[split] = content_digest(path) if path.exists() else None
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def resume_from_checkpoint(ckpt_root: Path, fingerprint: str, model: RewardModel, opt: torch.optim.Optimizer,
                           selection: ModelSelection, cfg: TrainConfig, rt: Runtime) -> int:
    """Load the latest checkpoint of this fingerprint (if ``cfg.resume``), ``selection``'s state too; its step or 0."""
    if cfg.resume and (latest := latest_checkpoint(ckpt_root, fingerprint)) is not None:
        step = load_checkpoint(latest, model, opt, rt)
        selection.load_state(*checkpoint_extras(latest, BEST_WEIGHTS_FILE))
        return step
    return 0


def _log_run_start(tracker: Tracker, cfg: TrainConfig, rt: Runtime, tok: TokenizedResponses, total: int) -> None:
    tracker.log_params({**cfg.model_dump(), "world_size": rt.world_size, "device": str(rt.device), "steps": total})
    n_trunc_p, n_trunc_r = int(tok.prompt_truncated.sum()), int(tok.response_truncated.sum())
    if rt.is_main:
        LOG.info("%d steps on %s (world size %d)", total, rt.device, rt.world_size)
    if rt.is_main and (n_trunc_p or n_trunc_r):
        LOG.info("truncated to max_length=%d: prompt of %d, response start of %d of %d sequences (none dropped)",
                 cfg.max_length, n_trunc_p, n_trunc_r, len(tok.lengths))


# -- one optimizer step -----------------------------------------------------------------
def train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    objective: Objective,
    data: TrainingData,
    step: list[list[int]],
    cfg: TrainConfig,
    rt: Runtime,
) -> tuple[dict[str, float], float]:
    """One global step: forward / backward over this rank's micro-batches of ``step`` with the
    loss divided by ``W / world`` (``W``: the weight of the whole global step; DDP averages
    over ranks), then clip the gradient norm and take the AdamW step.

    Returns the step's sums over all ranks (the objective's ``sum_names``, ``weight = W``,
    then ``sequences`` and ``tokens``) and the gradient norm before clipping."""
    global_weight = sum(objective.group_weight(data.train_groups[g]) for mb in step for g in mb)
    names = [*objective.sum_names, "sequences", "tokens"]
    sums = torch.zeros(len(names), dtype=torch.float64, device=rt.device)
    mine = rank_micro_batches(step, rt.rank, rt.world_size)
    for i, mb in enumerate(mine):
        batch = collate([data.train_groups[g] for g in mb], data.tok, data.pad_id, data.packed).to(rt.device)
        targets = objective.targets(batch)
        with grad_sync(model, last=i == len(mine) - 1):
            with rt.autocast():
                rewards = objective.forward(model, batch)
            terms = objective.loss(rewards, targets, normalizer=global_weight / rt.world_size)
            terms.loss.backward()
        sizes = torch.tensor([batch.input_ids.shape[0], batch.n_tokens], dtype=torch.float64, device=rt.device)
        sums += torch.cat([terms.sums, sizes])
    grad_norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    values = dict(zip(names, all_reduce_sum(sums, rt).cpu().tolist(), strict=True))
    values["weight"] = global_weight  # the normaliser itself: the same on every rank
    return values, as_float(grad_norm)


# -- metrics ----------------------------------------------------------------------------
@dataclass
class _Meter:
    """Sums over the steps since the last log line (or the whole run)."""

    values: dict[str, float] = field(default_factory=dict)

    def add(self, **kw: float) -> None:
        for k, v in kw.items():
            self.values[k] = self.values.get(k, 0.0) + v

    def pop(self) -> dict[str, float]:
        v, self.values = self.values, {}
        return v


def log_line_metrics(objective: Objective, window: dict[str, float], lr: float, grad_norm: float,
                     seconds: float) -> dict[str, float]:
    """``train/*`` metrics of the steps since the last log line: the mean of their losses, the
    objective's own metrics, learning rate, gradient norm and throughput (per second of the steps themselves:
    ``seconds`` leaves out the val evaluations and checkpoint writes between them)."""
    own = {f"train/{k}": v for k, v in objective.summarize(window).items() if k not in ("loss", objective.unit)}
    dt = max(seconds, 1e-9)
    return {
        "train/loss": window["step_loss"] / window["steps"],
        **own,
        "train/lr": lr,
        "train/grad_norm": grad_norm,
        f"train/{objective.unit}_per_s": window[objective.unit] / dt,
        "train/sequences_per_s": window["sequences"] / dt,
        "train/tokens_per_s": window["tokens"] / dt,
    }


def run_metrics(objective: Objective, totals: dict[str, float], val: dict[str, float], data: TrainingData,
                train_seconds: float, **run: Any) -> dict[str, Any]:
    """The metrics of the run (``metrics/train.json``): the objective's summary of all steps as
    ``train_*`` and on val as ``val_*``, reward statistics, throughput, tokenisation, ``run``."""
    seconds = max(train_seconds, 1e-9)
    val = dict(val)
    reward_mean, reward_std = val.pop("reward_mean"), val.pop("reward_std")
    return {
        **{f"train_{k}": v for k, v in objective.summarize(totals).items()},
        **{f"val_{k}": v for k, v in val.items()},
        "reward_mean": reward_mean,
        "reward_std": reward_std,
        "train_sequences": int(totals["sequences"]),
        f"{objective.unit}_per_s": totals[objective.unit] / seconds,
        "sequences_per_s": totals["sequences"] / seconds,
        "tokens_per_s": totals["tokens"] / seconds,
        "train_seconds": train_seconds,
        "tokenize_seconds": data.tokenize_seconds,
        "tokenize_from_cache": data.tok.from_cache,
        "n_sequences": len(data.tok.lengths),
        "n_prompt_truncated": int(data.tok.prompt_truncated.sum()),
        "n_response_truncated": int(data.tok.response_truncated.sum()),
        **run,
    }


def save_model_and_drop_checkpoints(model: RewardModel, data: TrainingData, val: dict[str, float] | None,
                                    out_dir: Path, ckpt_root: Path, cfg: TrainConfig, rt: Runtime) -> None:
    """Store the val reward statistics (a pointwise model: the val rmse of r − u as ``residual_sd``) in the
    model, save it (rank 0) and, unless ``keep_checkpoints``, delete the checkpoints of the complete run."""
    if val:
        model.config.reward_mean, model.config.reward_std = val["reward_mean"], val["reward_std"]
    model.config.objective, model.config.step_aggregate = cfg.objective, cfg.prm_aggregate
    if data.targets is not None:  # absolute scale: F(r) = P(beats the anchor / the typical response)
        model.config.link, model.config.anchored = data.targets.link, data.targets.anchored
        model.config.residual_sd = float((val or {}).get("rmse", 0.0))  # s of win_prob = Φ(r/√(1+s²)), on val
    weights = full_state_dict(model) if is_sharded(model) else None  # every rank sends its shards to rank 0
    if rt.is_main:
        if weights is not None:  # an unsharded copy to save
            config, model = model.config, RewardModel.from_backbone(cfg.backbone, cfg.pooling, cfg.format_config)
            model.load_state_dict(weights)
            model.config = config
        with staged_output(out_dir, carry=(ckpt_root,)) as staging:  # locked; the model dir is replaced whole
            model.save(staging, data.tokenizer)
        if not cfg.keep_checkpoints:
            for path in ckpt_root.glob("step-*"):
                shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(OSError):
                ckpt_root.rmdir()
    barrier(rt)


# -- the training run -------------------------------------------------------------------
def train(pairs_dir: Path, out_dir: Path, config: TrainConfig | None = None, tracker: Tracker | None = None) -> dict:
    """Train a reward model on ``pairs_dir`` (train split; val for the final metrics) and
    save it to ``out_dir``. Returns the training metrics (:func:`run_metrics`)."""
    cfg = config or TrainConfig()
    pairs_dir, out_dir = Path(pairs_dir), Path(out_dir)
    check_output_dir(out_dir)  # before training, not after it
    created_group = not dist.is_initialized()
    rt = select_runtime(cfg.device, cfg.precision, group_of_one=cfg.strategy == "fsdp")
    created_group = created_group and dist.is_initialized()
    tracker = tracker if (tracker is not None and rt.is_main) else NullTracker()
    try:
        return _train(pairs_dir, out_dir, cfg, tracker, rt)
    finally:
        if created_group:
            dist.destroy_process_group()


@dataclass
class _Run:
    """What the steps of one run share: the set-up of :func:`_train`."""

    model: RewardModel
    wrapped: torch.nn.Module  # what forward / backward run on (parallel.wrap_model)
    opt: torch.optim.Optimizer
    objective: Objective
    data: TrainingData
    steps: list[list[list[int]]]
    selection: ModelSelection
    ckpt_root: Path
    fingerprint: str


def _validate(run: _Run, done: int, total: int, cfg: TrainConfig, tracker: Tracker, rt: Runtime) -> bool:
    """Evaluate on val after step ``done`` when due, log the val point, update the best; whether to stop."""
    if not run.data.val_groups or not run.selection.due(done, total):
        return False
    val = evaluate(run.model, run.data.val_groups, run.data.tok, run.data.pad_id, cfg.eval_batch_tokens, rt,
                   run.objective, run.data.packed)
    stop = run.selection.update(done, val, run.model, last=done == total)
    tracker.log_metrics(run.selection.curve_point(val), step=done)
    return stop


def _run_steps(run: _Run, start: int, cfg: TrainConfig, tracker: Tracker, rt: Runtime) -> tuple[dict, int, float]:
    """Steps ``start ..`` of the run: train, evaluate when due, log, checkpoint; stop early when
    model selection says so. Returns the summed step metrics, the steps done and the seconds."""
    total, objective = len(run.steps), run.objective
    window = _Meter()
    totals = _Meter(dict.fromkeys([*objective.sum_names, "sequences", "tokens"], 0.0))
    bar = TrainingProgress(total, start, enabled=rt.is_main and cfg.progress)
    t_train = t_log = time.perf_counter()
    paused = 0.0  # seconds of val evaluations and checkpoint writes since the last log line: not step time
    done = start
    for step in range(start, total):
        lr = lr_at(step, total, cfg)
        set_lr(run.opt, lr)
        sums, grad_norm = train_step(run.wrapped, run.opt, objective, run.data, run.steps[step], cfg, rt)
        step_loss = sums["weighted_loss"] / sums["weight"]  # the same on every rank (all-reduced sums)
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):  # the weights are lost: no checkpoint, no model
            raise NonFiniteLoss(step + 1, step_loss, grad_norm, lr)
        window.add(step_loss=step_loss, steps=1, **sums)
        totals.add(**sums)
        bar.step()
        done = step + 1
        t_pause = time.perf_counter()
        stop = _validate(run, done, total, cfg, tracker, rt)
        paused += time.perf_counter() - t_pause
        if done % cfg.log_every == 0 or done == total or stop:
            now = time.perf_counter()
            metrics = log_line_metrics(objective, window.pop(), lr, grad_norm, now - t_log - paused)
            t_log, paused = now, 0.0
            tracker.log_metrics(metrics, step=done)
            bar.logged(done, metrics)
        if stop:
            break
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
            t_pause, best = time.perf_counter(), run.selection.best_weights
            save_checkpoint(run.ckpt_root, done, run.model, run.opt, run.fingerprint, rt, run.selection.state(),
                            {BEST_WEIGHTS_FILE: best} if best is not None else None)
            paused += time.perf_counter() - t_pause
    bar.close()
    return totals.values, done, time.perf_counter() - t_train


def _run_lock(out_dir: Path, ckpt_root: Path, rt: Runtime) -> contextlib.AbstractContextManager:
    """One training run per checkpoint folder: the main rank holds its lock from resume to publish, so a
    second ``train`` into the same ``--out`` waits (then exits 3 naming the holder) instead of pruning the
    first run's checkpoints. The lock file sits beside ``out_dir``, not inside the folder that publishing swaps."""
    if not rt.is_main:
        return contextlib.nullcontext()
    inside = ckpt_root.resolve().parent == out_dir.resolve()
    target = out_dir.parent / f"{out_dir.name}.checkpoints" if inside else ckpt_root
    return exclusive(target, what="training run (checkpoints)")


def _train(pairs_dir: Path, out_dir: Path, cfg: TrainConfig, tracker: Tracker, rt: Runtime) -> dict:
    """Set up (objective, data, steps, model, optimizer, resume), run the steps with selection, keep the best, save."""
    torch.manual_seed(cfg.seed)
    objective = build_objective(cfg.objective, cfg)
    data = load_training_data(pairs_dir, cfg, rt)
    if OBJECTIVES[cfg.objective].data_kind == "steps":  # problems without a labelled target: no loss, no gradient
        data.train_groups = labelled_groups(data.train_groups, objective.group_weight, pairs_dir)
    model, frozen = build_model(cfg, rt, data)
    data.packed = OBJECTIVES[cfg.objective].data_kind != "steps" and resolve_shared_prefix(cfg.shared_prefix, model)
    steps = plan_run(data.train_groups, cfg, rt.world_size, data.packed)
    wrapped = wrap_model(model, cfg.strategy, rt)  # before the optimizer: FSDP swaps in sharded parameters
    opt = make_optimizer(model, cfg, rt.device)
    fingerprint = _fingerprint(cfg, data.tok, pairs_dir, rt.world_size)
    ckpt_root = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else out_dir / "checkpoints"
    with _run_lock(out_dir, ckpt_root, rt):
        selection = ModelSelection(cfg.eval_every, cfg.patience)
        start = resume_from_checkpoint(ckpt_root, fingerprint, model, opt, selection, cfg, rt)
        _log_run_start(tracker, cfg, rt, data.tok, len(steps))

        run = _Run(model, wrapped, opt, objective, data, steps, selection, ckpt_root, fingerprint)
        totals, done, train_seconds = _run_steps(run, start, cfg, tracker, rt)
        selection.restore_best(model)  # the saved model is the best evaluated one
        val = selection.best_val
        save_model_and_drop_checkpoints(model, data, val, out_dir, ckpt_root, cfg, rt)
        metrics = run_metrics(objective, totals, val or no_evaluation(objective), data, train_seconds,
                              steps=done, planned_steps=len(steps), **selection.metrics(done), resumed_from_step=start,
                              frozen_parameters=frozen, world_size=rt.world_size)
        tracker.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}, step=done)
        return metrics
