"""Training checkpoints: safetensors + JSON (no pickle, except DCP's metadata of a sharded one).

A checkpoint ``step-<n>/`` holds ``model.safetensors``, ``optimizer.safetensors`` (AdamW tensors;
scalars and param groups in ``state.json``) or, for an FSDP-sharded model, ``sharded/`` (DCP: each
rank's shards of both; its ``.metadata`` file is DCP's own pickle), ``rng-rank<r>.safetensors`` per
rank, and ``state.json`` with the step and the run's fingerprint: a run resumes only from a
checkpoint of the same run, and then ends with the weights of an uninterrupted run (``tests/training/test_train.py``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from rewardline.modeling.device import Runtime, barrier
from rewardline.modeling.model import RewardModel
from rewardline.training.parallel import is_sharded, load_sharded, save_sharded

LOG = logging.getLogger(__name__)

#: A sharded (FSDP) checkpoint's folder of DCP files: every rank's shards of model and AdamW state.
SHARDED_DIR = "sharded"


def save_checkpoint(
    ckpt_root: Path, step: int, model: RewardModel, opt: torch.optim.Optimizer, fingerprint: str, rt: Runtime,
    extra_state: dict[str, Any] | None = None, extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> None:
    """Write ``<ckpt_root>/step-<step>``: model weights and AdamW state (safetensors), each rank's RNG
    state, the step and the run's fingerprint; written into a temp folder and renamed, then older
    checkpoints are removed (rank 0 writes; every rank calls). ``extra_state`` (JSON, under
    ``"extra"`` in ``state.json``) and ``extra_tensors`` (file name → tensors) ride along: the
    best-so-far state of model selection."""
    tmp = ckpt_root / f".tmp-step-{step:08d}"
    if rt.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(rt)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, tmp / f"rng-rank{rt.rank}.safetensors")
    sharded = is_sharded(model)
    if sharded:
        save_sharded(tmp / SHARDED_DIR, model, opt)
    barrier(rt)
    if rt.is_main:
        meta = {"step": step, "fingerprint": fingerprint, "sharded": sharded, "extra": extra_state}
        if not sharded:
            meta |= _save_whole(tmp, model, opt)
        for name, extra in (extra_tensors or {}).items():
            save_file(extra, tmp / name)
        (tmp / "state.json").write_text(json.dumps(meta))
        final = ckpt_root / f"step-{step:08d}"
        shutil.rmtree(final, ignore_errors=True)  # a stale one of another run (other fingerprint), same step
        os.replace(tmp, final)
        for old in ckpt_root.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    barrier(rt)


def _save_whole(tmp: Path, model: RewardModel, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Rank 0 writes the model and the AdamW tensors (safetensors); returns the optimizer's JSON part."""
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
    return {"param_groups": state["param_groups"], "scalars": scalars}


def latest_checkpoint(ckpt_root: Path, fingerprint: str) -> Path | None:
    """The newest complete checkpoint under ``ckpt_root`` written by a run with this fingerprint."""
    for path in sorted(ckpt_root.glob("step-*"), reverse=True):
        state = path / "state.json"
        if state.exists() and json.loads(state.read_text()).get("fingerprint") == fingerprint:
            return path
    return None


def load_checkpoint(path: Path, model: RewardModel, opt: torch.optim.Optimizer, rt: Runtime) -> int:
    """Restore weights, optimizer state and this rank's RNG state from ``path``; returns its step (logged: after a
    killed run the log would otherwise just begin mid-run)."""
    meta = json.loads((path / "state.json").read_text())
    if meta.get("sharded"):
        load_sharded(path / SHARDED_DIR, model, opt)
    else:
        _load_whole(path, meta, model, opt, rt)
    rng_file = path / f"rng-rank{rt.rank}.safetensors"
    if rng_file.exists():
        rng = load_file(rng_file)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    if rt.is_main:
        LOG.info("resuming from checkpoint step %d (%s)", meta["step"], path)
    return int(meta["step"])


def _load_whole(path: Path, meta: dict[str, Any], model: RewardModel, opt: torch.optim.Optimizer,
                rt: Runtime) -> None:
    """Inverse of :func:`_save_whole` (every rank reads the whole model and optimizer state)."""
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


def checkpoint_extras(path: Path, tensor_file: str) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor] | None]:
    """The ``extra_state`` and the ``extra_tensors[tensor_file]`` (on CPU) :func:`save_checkpoint` stored in
    ``path``; ``None`` for each that is absent."""
    extra = json.loads((path / "state.json").read_text()).get("extra")
    file = path / tensor_file
    return extra, (load_file(file) if file.exists() else None)
