"""Data-parallel strategy (``train.strategy``): DDP or FSDP2, and the state dicts each needs.

``ddp``  every rank holds the whole model; gradients are averaged (all-reduce) after the
         last micro-batch of a step (``no_sync`` before it).
``fsdp`` torch-native FSDP2 (:func:`torch.distributed.fsdp.fully_shard`): each transformer block
         (the backbone's ``_no_split_modules``) and then the whole model is one shard unit; a rank
         holds ``1/W`` of the parameters, gradients and AdamW state (ZeRO-3), all-gathers a block's
         parameters just before it runs and reduce-scatters its gradients after its backward.
         Gradients are averaged over ranks as in DDP, so the loss normalisation of the loop
         (``W / world``) is the same for both. On CUDA with bf16: parameters and compute in bf16,
         gradient reduction in fp32 (:class:`MixedPrecisionPolicy`); on CPU everything is fp32.

Checkpoints of a sharded model go through torch.distributed.checkpoint (DCP): every rank writes
its own shards of the model and optimizer state (``get_state_dict`` / ``set_state_dict``), which
resume the same run (same world size) to the weights of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Literal

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from rewardline.modeling.device import Runtime

Strategy = Literal["ddp", "fsdp"]
STRATEGIES: tuple[str, ...] = ("ddp", "fsdp")


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` was sharded by :func:`fully_shard` (its parameters are DTensors)."""
    return isinstance(model, FSDPModule)


def wrap_model(model: torch.nn.Module, strategy: str, rt: Runtime) -> torch.nn.Module:
    """The module the loop runs forward / backward on: ``model`` itself (one process, DDP),
    ``DistributedDataParallel(model)`` (several processes, DDP) or ``model`` sharded in place by
    FSDP2 (``fsdp``; also with one process: then a group of one). Build the optimizer after this:
    FSDP replaces the parameters by DTensor shards."""
    if strategy == "ddp":
        return DistributedDataParallel(model) if rt.distributed else model
    mesh = init_device_mesh(rt.device.type, (rt.world_size,))
    bf16 = rt.device.type == "cuda" and rt.amp_dtype == torch.bfloat16
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    blocks = set(getattr(getattr(model, "backbone", model), "_no_split_modules", None) or ())
    if hasattr(model, "chunk_by_length"):  # ranks must all-gather each block equally often: one pass per batch
        model.chunk_by_length = False
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def grad_sync(wrapped: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
    """DDP: skip the all-reduce for all but the ``last`` micro-batch of a step (gradients add up
    locally). FSDP reduce-scatters every micro-batch (sharded gradients add up; no unsharded
    copy is kept between micro-batches)."""
    if isinstance(wrapped, DistributedDataParallel) and not last:
        return wrapped.no_sync()
    return contextlib.nullcontext()


def as_float(value: torch.Tensor) -> float:
    """A scalar tensor as a float (a DTensor, e.g. FSDP's gradient norm, is gathered first)."""
    return float(value.full_tensor() if isinstance(value, DTensor) else value)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU. Sharded: all ranks call (all-gather); rank 0 gets the
    tensors, the other ranks an empty dict."""
    if not is_sharded(model):
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`full_state_dict` (sharded: all ranks call; rank 0's ``weights`` are broadcast)."""
    if not is_sharded(model):
        model.load_state_dict(weights)
        return
    model.reshard()  # the root's parameters stay unsharded after an (eval) forward; load into the shards
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def save_sharded(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """Every rank writes its shards of the model and AdamW state to ``path`` (DCP; all ranks call)."""
    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))


def load_sharded(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """Inverse of :func:`save_sharded`, in place (all ranks call)."""
    model_sd, optim_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
