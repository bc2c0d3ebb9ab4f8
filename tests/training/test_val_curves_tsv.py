"""``metrics/val_log.tsv``: the val evaluations of the last run, one row per evaluation (DVC plots)."""

from __future__ import annotations

import csv
from pathlib import Path

from rewardline.tracking import JsonlTracker, write_curves_tsv


def test_val_tsv_holds_the_last_runs_evaluations_only(tmp_path: Path):
    log = JsonlTracker(tmp_path / "log.jsonl")
    log.log_params({"lr": 1.0})  # an earlier run: left out
    log.log_metrics({"val/accuracy": 0.9}, step=5)
    log.log_params({"lr": 2.0})
    for step in (10, 20, 30, 40):
        log.log_metrics({"train/loss": 0.7 - step / 1000}, step=step)
        if step % 20 == 0:
            log.log_metrics({"val/accuracy": 0.5 + step / 1000, "val/loss": 0.69, "val/best_step": float(step)}, step)
    val = write_curves_tsv(log.path, tmp_path / "val_log.tsv", prefix="val/")
    train = write_curves_tsv(log.path, tmp_path / "train_log.tsv")
    with val.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["step"] for r in rows] == ["20", "40"]
    assert [float(r["accuracy"]) for r in rows] == [0.52, 0.54] and rows[-1]["best_step"] == "40.0"
    with train.open() as f:
        assert [r["step"] for r in csv.DictReader(f, delimiter="\t")] == ["10", "20", "30", "40"]
