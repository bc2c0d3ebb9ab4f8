"""Live MLflow logging of the train stage (:class:`rewardline.registry.live.LiveRun`) and how ``register``
records the stage runs: the live run nested under the pipeline run, the other stages with their real
start and end times. A real embedded MLflow store (sqlite in a temp dir); no mocks."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from rewardline.paths import METRICS_FILE, MODEL_DIR, PAIRS_DIR, stage_times
from rewardline.registry import live as live_module
from rewardline.registry.live import LiveRun
from rewardline.registry.mlflow_backend import client
from rewardline.registry.record import log_pipeline_run
from rewardline.stage import record_stage_times


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return uri


def test_live_run_logs_params_curves_and_system_metrics(store: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(live_module, "SYSTEM_METRICS_INTERVAL_S", 0.2)
    before = int(time.time() * 1000)
    with LiveRun("train", tmp_path) as run:
        run.log_params({"lr": 0.001, "objective": "bt"})
        for step in range(1, 4):
            run.log_metrics({"train/loss": 1.0 / step}, step)
        time.sleep(1.5)  # a few system-metric samples
        run_id = run.run_id
    assert run.failed is None and run_id
    found = client(store).get_run(run_id)
    assert found.data.params == {"lr": "0.001", "objective": "bt"}
    history = client(store).get_metric_history(run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert any(k.startswith("system/") for k in found.data.metrics), sorted(found.data.metrics)
    assert found.info.status == "FINISHED" and before <= found.info.start_time <= found.info.end_time


def test_an_unreachable_server_warns_and_the_stage_goes_on(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    for var in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)  # MLflow's defaults: 7 retries with backoff (minutes)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="rewardline.registry.live"):
        run = LiveRun("train", tmp_path, system_metrics=False)
        run.log_params({"lr": 0.1})
        run.log_metrics({"train/loss": 1.0}, 1)
        run.close()
    elapsed = time.monotonic() - started
    assert run.failed and run.run_id is None
    assert elapsed < 30, f"giving up on a server that is down took {elapsed:.0f} s"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the limits were for the first contact only
    [warning] = [r for r in caplog.records if "continues without it" in r.getMessage()]
    assert f"127.0.0.1:{port}" in warning.getMessage()


def test_register_nests_the_live_run_and_gives_stage_runs_their_real_times(
        store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "project"
    root.mkdir()
    with LiveRun("train", root, system_metrics=False) as run:
        run.log_metrics({"train/loss": 0.5}, 1)
        live_id = run.run_id
    for split in ("train", "val"):  # partitioned splits: the digest covers the parts in order
        (root / PAIRS_DIR / split).mkdir(parents=True)
        for part in (0, 1):
            (root / PAIRS_DIR / split / f"part-00{part}.parquet").write_bytes(split.encode() * (10 + part))
    lock = {"schema": "2.0", "stages": {"pairs": {"cmd": "python stages/pairs.py", "outs": [
        {"path": "data/pairs", "hash": "md5", "md5": "0123456789abcdef0123456789abcdef.dir"}]}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    (root / MODEL_DIR).mkdir(parents=True)
    (root / MODEL_DIR / METRICS_FILE).write_text(json.dumps({"mlflow_run_id": live_id, "val_accuracy": 0.7}))
    started, ended = datetime(2026, 1, 2, 3, 4, 5, 600000, UTC), datetime(2026, 1, 2, 3, 9, 0, tzinfo=UTC)
    monkeypatch.chdir(root)
    record_stage_times("ingest", started, ended)
    assert json.loads((root / stage_times("ingest")).read_text())["started_at"] == "2026-01-02T03:04:05.600+00:00"

    ids = log_pipeline_run(root, stages=("ingest", "pairs", "train"))
    mlflow_client = client(store)
    assert ids["train"] == live_id  # no second, after-the-fact train run
    train = mlflow_client.get_run(live_id)
    assert train.data.tags["mlflow.parentRunId"] == ids["parent"] and train.data.tags["stage"] == "train"
    assert train.data.metrics["val_accuracy"] == 0.7
    # The splits it read, as dataset inputs: the md5 of each split's bytes, the output's dvc.lock md5 as a tag.
    inputs = {d.dataset.name: d for d in train.inputs.dataset_inputs}
    assert set(inputs) == {"pairs-train", "pairs-val"}
    assert inputs["pairs-train"].dataset.digest == hashlib.md5(b"train" * 10 + b"train" * 11).hexdigest()
    tags = {t.key: t.value for t in inputs["pairs-val"].tags}
    assert tags == {"mlflow.data.context": "val", "dvc_out": "data/pairs",
                    "dvc_md5": "0123456789abcdef0123456789abcdef.dir"}
    ingest = mlflow_client.get_run(ids["ingest"])
    assert ingest.data.tags["mlflow.parentRunId"] == ids["parent"]
    assert (ingest.info.start_time, ingest.info.end_time) == (int(started.timestamp() * 1000),
                                                              int(ended.timestamp() * 1000))
    pairs = mlflow_client.get_run(ids["pairs"])  # no recorded times: the time of recording
    assert pairs.info.start_time >= ingest.info.end_time and pairs.info.status == "FINISHED"
