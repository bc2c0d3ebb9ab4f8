"""benchmarks/gpu_check.sh --dry-run: the GPU check's whole path on CPU (tiny Qwen2, fp32, 3 steps
with DDP and with FSDP, a small data benchmark) writes its JSON and Markdown figures."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # two torchrun trainings and the data stages on 2000 rankings: ~1-2 min on a loaded 2-core box
def test_gpu_check_dry_run_writes_json_and_markdown_figures(tmp_path):
    out = tmp_path / "figures"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out),
                           "--peak-tflops", "1"], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["mode"].startswith("dry-run") and report["machine"]["peak_bf16_tflops"] == 1
    for strategy in ("ddp", "fsdp"):
        run = report["training"][strategy]
        assert run["steps"] == 3 and run["tokens_per_s"] > 0
        assert 0 < run["mfu"] == pytest.approx(run["model_tflops_per_s"] / 1)
    assert report["training"]["ddp"]["final_train_loss"] == pytest.approx(
        report["training"]["fsdp"]["final_train_loss"], rel=1e-4)  # one process: FSDP is DDP's arithmetic
    assert report["model"]["non_embedding_params"] < report["model"]["params"]
    assert report["shared_prefix"]["status"]  # "ran" or "not available (...)": never missing
    data = report["data_stages"]
    assert data["status"] == "ran" and data["rankings"] == 2000 and data["result"]
    table = (out / "gpu_check.md").read_text()
    assert "| ddp | 3 |" in table and "| fsdp | 3 |" in table and "MFU" in table


def test_full_size_config_has_qwen2_05b_shape_and_a_layer_type_per_layer(tmp_path):
    """The full-size backbone is built from the tiny one's config; its per-layer list must follow the new
    depth (a kept 2-entry ``layer_types`` made the first GPU run fail at layer 3 with ``IndexError``)."""
    import torch
    from conftest import load_benchmark
    from transformers import Qwen2Model

    from rewardline.modeling.tiny import build_tiny_qwen2

    gpu_check = load_benchmark("gpu_check")
    config = gpu_check.full_size_config(build_tiny_qwen2(tmp_path / "tiny", max_positions=4096))
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (24, 896, 151936)
    assert len(config.layer_types) == 24
    with torch.device("meta"):
        model = Qwen2Model(config)
    assert sum(p.numel() for p in model.parameters()) == 494_032_768
