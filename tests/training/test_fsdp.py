"""FSDP2 (``train.strategy: fsdp``) on CPU with gloo: 2 sharded processes train the weights of 1
process, and a sharded (DCP) checkpoint resumes a killed 2-process run to the same final weights.

Same global batch: 2 ranks x ``grad_accum=1`` against 1 process x ``grad_accum=2`` (the loop
divides each micro-batch's loss by the global step's weight times the world size; FSDP
averages the reduce-scattered gradients over ranks). Tolerance: the sums run in another order
(two half-gradients reduced instead of one local sum), so fp32 round-off, amplified over
steps by AdamW's division by sqrt(v); ``atol=1e-4, rtol=1e-3`` on the weights (those of the
DDP test) and ``rtol=1e-4`` on the logged losses. The resumed run must match bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train import RUNNER, tiny_config, write_pairs_dir

from rewardline.modeling.tiny import build_tiny_bert
from rewardline.tracking import JsonlTracker

pytestmark = pytest.mark.slow  # torchrun with 2 gloo processes: ~1 min each on a loaded 2-core box

SELECTION = dict(epochs=3, eval_every=2, patience=50, device="cpu")  # model selection runs sharded too


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    backbone = root / "backbone"
    build_tiny_bert(backbone)
    return {"root": root, "backbone": str(backbone), "pairs": write_pairs_dir(root / "pairs")}


def _launch(setup, tmp: Path, name: str, cfg, nproc: int, delay: float = 0.0,
            out: str | None = None) -> subprocess.Popen:
    """``torchrun --standalone`` (a free localhost port) with ``nproc`` workers of the RUNNER (plain python for 0),
    in a session of its own; ``out``: the output folder (default ``name``)."""
    (tmp / f"{name}.json").write_text(json.dumps(cfg.__dict__))
    (tmp / "runner.py").write_text(RUNNER)
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, *launcher, str(tmp / "runner.py"), str(tmp / f"{name}.json"), str(setup["pairs"]),
           str(tmp / (out or name)), str(tmp / f"{name}.jsonl"), str(delay)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants (torchrun starts each worker in a session of its own)."""
    def children(p: int) -> list[int]:
        found = []
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):  # a thread or process that just ended
                found += [int(c) for c in (task / "children").read_text().split()]
        return found

    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children(p)
    for p in reversed(tree):  # the workers first, as when their node dies
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _finish(proc: subprocess.Popen) -> None:
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-4000:]


def _metric(path: Path, key: str) -> list[float]:
    return [r["metrics"][key] for r in JsonlTracker(path).read() if r["kind"] == "metrics" and key in r["metrics"]]


@pytest.fixture(scope="module")
def uninterrupted(setup, tmp_path_factory):
    """A 2-process FSDP run and a 1-process run of the same global batch, both to the end."""
    tmp = tmp_path_factory.mktemp("fsdp-runs")
    _finish(_launch(setup, tmp, "fsdp", tiny_config(setup, strategy="fsdp", grad_accum=1, **SELECTION), nproc=2))
    single = tiny_config(setup, grad_accum=2, chunk_by_length=False, **SELECTION)  # FSDP runs unchunked too
    _finish(_launch(setup, tmp, "single", single, nproc=0))
    return tmp


def test_two_fsdp_gloo_processes_train_the_weights_of_one_process(uninterrupted):
    tmp = uninterrupted
    params = [r["params"] for r in JsonlTracker(tmp / "fsdp.jsonl").read() if r["kind"] == "params"]
    assert params[0]["world_size"] == 2 and params[0]["strategy"] == "fsdp"
    fsdp, single = _metric(tmp / "fsdp.jsonl", "train/loss"), _metric(tmp / "single.jsonl", "train/loss")
    assert len(fsdp) == len(single) >= 6
    np.testing.assert_allclose(fsdp, single, rtol=1e-4, atol=1e-5)
    val_fsdp, val_single = _metric(tmp / "fsdp.jsonl", "val/loss"), _metric(tmp / "single.jsonl", "val/loss")
    assert len(val_fsdp) == len(val_single) >= 3
    np.testing.assert_allclose(val_fsdp, val_single, rtol=1e-4, atol=1e-5)
    w_fsdp, w_one = load_file(tmp / "fsdp" / "model.safetensors"), load_file(tmp / "single" / "model.safetensors")
    assert w_fsdp.keys() == w_one.keys()  # saved unsharded: the same standard layout
    for k in w_one:
        torch.testing.assert_close(w_fsdp[k], w_one[k], atol=1e-4, rtol=1e-3)


def test_a_killed_fsdp_run_resumes_from_its_sharded_checkpoint_to_identical_weights(setup, uninterrupted, tmp_path):
    ckpt = tmp_path / "ckpt"
    cfg = tiny_config(setup, strategy="fsdp", grad_accum=1, checkpoint_every=2, checkpoint_dir=str(ckpt), **SELECTION)
    proc = _launch(setup, tmp_path, "killed", cfg, nproc=2, delay=0.5)
    deadline = time.time() + 300
    while time.time() < deadline and not list(ckpt.glob("step-*")) and proc.poll() is None:
        time.sleep(0.05)
    assert list(ckpt.glob("step-*/sharded")), "no sharded checkpoint was written"
    _kill_tree(proc.pid)  # the launcher and both workers
    proc.wait(timeout=30)
    assert not (tmp_path / "killed" / "model.safetensors").exists()

    _finish(_launch(setup, tmp_path, "resumed", cfg, nproc=2, out="killed"))  # same config: picks up the checkpoint
    resumed = [r for r in JsonlTracker(tmp_path / "resumed.jsonl").read() if r["kind"] == "metrics"]
    assert resumed[0]["step"] > 2  # did not start from scratch
    losses = _metric(tmp_path / "resumed.jsonl", "train/loss")  # steps after the resume: AdamW state restored too
    assert losses == _metric(uninterrupted / "fsdp.jsonl", "train/loss")[-len(losses):]
    val = _metric(tmp_path / "resumed.jsonl", "val/loss")
    assert val == _metric(uninterrupted / "fsdp.jsonl", "val/loss")[-len(val):]
    ref = uninterrupted / "fsdp"
    a, b = load_file(tmp_path / "killed" / "model.safetensors"), load_file(ref / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # the best evaluated weights: may be those the checkpoint carried (best.safetensors)
        assert torch.equal(a[k], b[k]), k
    assert json.loads((tmp_path / "killed" / "reward_config.json").read_text()) == \
        json.loads((ref / "reward_config.json").read_text())


def test_fsdp_gives_the_head_and_each_block_the_lr_of_ddp(setup, tmp_path, monkeypatch):
    """``train.head_lr_scale`` / ``layer_lr_decay`` name parameters by their module path: under FSDP (sharded,
    here a group of one in this process) the optimizer's groups are those of an unsharded run."""
    import rewardline.training.loop as loop

    groups = {}
    real = loop.make_optimizer

    def capture(model, cfg, device):
        opt = real(model, cfg, device)
        groups[cfg.strategy] = [(g["lr_scale"], g["weight_decay"], len(g["params"])) for g in opt.param_groups]
        return opt

    monkeypatch.setattr(loop, "make_optimizer", capture)
    kw = dict(max_steps=1, device="cpu", head_lr_scale=10.0, layer_lr_decay=0.5)
    for strategy in ("ddp", "fsdp"):
        loop.train(setup["pairs"], tmp_path / strategy, tiny_config(setup, strategy=strategy, **kw))
    assert groups["fsdp"] == groups["ddp"]
    assert {scale for scale, _, _ in groups["ddp"]} >= {10.0, 1.0, 0.5}
