"""The learning-rate schedule and the optimizer of a training run."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from rewardline.modeling.backbones import block_depths

if TYPE_CHECKING:
    from rewardline.modeling.model import RewardModel


def lr_at(step: int, total: int, cfg: Any) -> float:
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


def lr_scales(model: RewardModel, cfg: Any) -> dict[str, float]:
    """Each parameter's learning-rate multiplier. The reward head's is ``head_lr_scale`` (a fresh layer that
    must find its direction fast); the backbone's decays layer-wise from the top with γ = ``layer_lr_decay``:
    block ``i`` of ``L`` gets ``γ^(L-1-i)``, what sits before the first block (embeddings) ``γ^L``, what sits
    after the last (final norm, pooler) 1. γ = 1: one lr for the whole backbone."""
    depths, n_blocks = block_depths(model.backbone)
    scales = {name: cfg.layer_lr_decay ** (0 if d is None else n_blocks - 1 - d) for name, d in depths.items()}
    return scales | {f"head.{n}": cfg.head_lr_scale for n, _ in model.head.named_parameters()}


def make_optimizer(model: RewardModel, cfg: Any, device: torch.device) -> torch.optim.AdamW:
    """AdamW, weight decay on ≥2-D weights only; fused kernel on CUDA. One parameter group per
    (learning-rate scale, decay or not); each group's ``lr_scale`` multiplies the schedule's lr
    (:func:`set_lr`)."""
    scales = lr_scales(model, cfg)
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((scales.get(name, 1.0), param.dim() >= 2), []).append(param)
    return torch.optim.AdamW(
        [{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr_scale": scale}
         for (scale, decay), ps in sorted(groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1]))],
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        fused=device.type == "cuda",
    )


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's ``lr`` times each group's ``lr_scale``."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
