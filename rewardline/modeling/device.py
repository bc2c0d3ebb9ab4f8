"""Device, precision and process-group selection (CUDA + bf16 when present, CPU otherwise)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rewardline.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype, None = full fp32
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA, a no-op elsewhere."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def check_device(device: str) -> None:
    """``device`` names a device this machine has (``auto`` always does): else :class:`ConfigError` (exit 2)
    naming it, not torch's parse error or a CUDA call on a machine without CUDA."""
    if device == "auto":
        return
    try:
        requested = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {device!r}: not a device name; expected auto, cpu, cuda, cuda:N or mps") from None
    count = {"cpu": 1, "cuda": torch.cuda.device_count() if torch.cuda.is_available() else 0,
             "mps": int(torch.backends.mps.is_available())}.get(requested.type)
    if count is not None and (requested.index or 0) >= count:
        have = "no CUDA device" if requested.type == "cuda" and not count else f"{count} {requested.type} device(s)"
        raise ConfigError(f"device {device!r}: this machine has {have}; expected auto or cpu")


def select_runtime(device: str = "auto", precision: str = "auto", group_of_one: bool = False) -> Runtime:
    """Pick the device (``auto``: CUDA if available), start the process group when launched
    by ``torchrun`` (``WORLD_SIZE > 1``: NCCL on CUDA, gloo on CPU), enable TF32 and choose
    bf16 autocast on CUDA (``precision``: ``auto`` | ``bf16`` | ``fp32``). ``group_of_one``: a
    process group also for a single process (FSDP needs one), from torchrun's environment or,
    without it, an in-memory store."""
    check_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        dev = torch.device("cuda", local_rank if device in ("auto", "cuda") else torch.device(device).index or 0)
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        dev = torch.device("cpu" if device == "auto" else device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if (world > 1 or group_of_one) and not dist.is_initialized():
        if world == 1 and "MASTER_ADDR" not in os.environ:
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
        else:
            dist.init_process_group(backend=backend)
    if precision == "auto":
        amp = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else None
    else:
        amp = {"bf16": torch.bfloat16, "fp32": None}[precision]
    return Runtime(dev, amp, rank, world, local_rank)


def all_reduce_sum(t: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum of ``t`` over ranks (``t`` itself when not distributed)."""
    if runtime.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


@contextlib.contextmanager
def main_first(runtime: Runtime) -> Iterator[None]:
    """Rank 0 runs the body first, the other ranks after it (e.g. they read the cache file it wrote)."""
    if not runtime.is_main:
        barrier(runtime)
    yield
    if runtime.is_main:
        barrier(runtime)
