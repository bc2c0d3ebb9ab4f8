"""The learning-rate schedule and the optimizer of a training run."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

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


def make_optimizer(model: RewardModel, cfg: Any, device: torch.device) -> torch.optim.AdamW:
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
