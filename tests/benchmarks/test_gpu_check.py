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
