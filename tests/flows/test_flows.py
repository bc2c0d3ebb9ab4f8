"""The Prefect flows on a fresh copy of the project, against a real Prefect API, real DVC and MLflow (sqlite).

One module-scoped project: the ``pipeline`` flow trains the champion (tiny-bert), which is
promoted; the retrain tests then feed it the two fresh batches of tests/fixtures/fresh_batches
(AlpacaEval best-of-16 samples 7..10, never trained on). The project's sample is restricted to
its AlpacaEval-derived sources so that "like the training data" means the same policy and
prompt sources; the tiny model's accuracy is noise, so the retrain decision rests on PSI/KS
with the thresholds below (measured: in-distribution PSI ~0.8, KS ~0.13; terse PSI ~5, KS ~0.75).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
FRESH = Path(__file__).parents[1] / "fixtures" / "fresh_batches"
IN_DIST, SHIFTED = "batch-01-in-distribution", "batch-02-shifted-terse"
OVERLAY = {
    "ingest": {"sources": [
        {"path": "data/raw/alpacaeval_bon_k4.json", "format": "alpaca-eval"},
        {"path": "data/raw/synthetic_multiannotator.jsonl", "format": "rankings"},
        {"path": "data/raw/fresh", "format": "rankings", "optional": True},
    ]},
    "train": {"backbone": "tiny-bert", "max_length": 256, "batch_tokens": 8192, "max_steps": 60, "lr": 1.0e-3,
              "warmup_ratio": 0.1, "checkpoint_every": 0, "progress": False},
    "evaluate": {"min_accuracy": 0.4, "max_ece_calibrated": 0.5, "max_length_bias": 0.5, "champion_delta": 0.5,
                 "bootstrap_samples": 200, "min_bon_gain": -1.0, "max_overoptimization": 1.0},  # bon: wiring only
    "retrain": {"psi_threshold": 2.0, "ks_threshold": 0.4, "accuracy_drop_threshold": 0.5, "min_pairs": 20,
                "auto_promote": False},
}

pytestmark = pytest.mark.slow


def _merge(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for key, value in overlay.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def copy_project(dest: Path) -> Path:
    """A fresh clone: tracked + untracked-not-ignored files, the overlay merged into params.yaml, git init."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(_merge(params, OVERLAY), sort_keys=False))
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=test"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "clone"], cwd=dest, check=True)
    return dest


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, prefect_api: None) -> Iterator[dict]:
    """The pipeline flow on the project copy, then its registered model promoted to champion."""
    from flows.pipeline import pipeline
    from rewardline.registry import open_registry
    from rewardline.registry.base import promote

    project = copy_project(tmp_path_factory.mktemp("project"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("REWARDLINE_RETRAIN_FAIL_AT", raising=False)
        mp.delenv("REWARDLINE_MLFLOW_TAGS", raising=False)
        state = pipeline(project=str(project), return_state=True)
        registration = json.loads((project / "reports/register/registration.json").read_text())
        promote(open_registry(project), registration["model_name"], registration["version"])
        yield {"project": project, "state": state, "registration": registration}


def api(call):  # noqa: ANN001, ANN201
    """``await call(client)`` with an async Prefect client (the harness's API)."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def go():  # noqa: ANN202
        async with get_client() as client:
            return await call(client)

    return asyncio.run(go())


def artifacts(flow_run_id) -> dict[str, str]:  # noqa: ANN001
    """key -> Markdown of the run's artifacts."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run_filter = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    found = api(lambda c: c.read_artifacts(artifact_filter=run_filter))
    return {a.key: a.data for a in found if a.key}


def task_runs(flow_run_id) -> list:  # noqa: ANN001
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    return api(lambda c: c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                          sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200))


def logged(flow_run_id, text: str, timeout: float = 30) -> bool:  # noqa: ANN001
    """Whether ``text`` appears in the run's logs in Prefect's API (logs are shipped in the background)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    deadline = time.monotonic() + timeout
    while True:
        logs = api(lambda c: c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                         sort=LogSort.TIMESTAMP_DESC, limit=200, offset=0))
        if any(text in log.message for log in logs) or time.monotonic() > deadline:
            return any(text in log.message for log in logs)
        time.sleep(1)


def ledger(project: Path) -> list[dict]:
    path = project / "data/retrain/ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def submit(project: Path, batch_id: str, source: str) -> None:
    shutil.copytree(FRESH / source, project / "data/inbox" / batch_id)


def run_retrain(project: Path):  # noqa: ANN201
    from flows.retrain import retrain

    return retrain(project=str(project), return_state=True)


# ---------------------------------------------------------------- the pipeline flow


def test_pipeline_flow_runs_every_stage_through_dvc(champion: dict):
    project, state = champion["project"], champion["state"]
    assert state.is_completed(), state.message
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert [r["stage"] for r in state.result()] == list(stages) and "register" in stages
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(stages)  # versioned by DVC exactly as `dvc repro` would
    runs = task_runs(state.state_details.flow_run_id)
    assert sorted(r.name for r in runs) == sorted(f"dvc repro {s}" for s in stages)
    assert all(r.state.is_completed() for r in runs)
    report = artifacts(state.state_details.flow_run_id)["evaluate-gate-report"]
    assert "| gate | value | threshold | passed |" in report and "min_accuracy" in report
    assert logged(state.state_details.flow_run_id, "Registered reward-model version 1")  # stage output in the logs
    assert champion["registration"]["registered"] and champion["registration"]["version"] in (1, "1")


# ---------------------------------------------------------------- the retrain flow


def test_a_batch_like_the_training_data_is_not_retrained_on(champion: dict):
    project = champion["project"]
    submit(project, IN_DIST, IN_DIST)
    state = run_retrain(project)
    assert state.is_completed(), state.message
    [result] = state.result()
    drift, thresholds = result["drift"], OVERLAY["retrain"]
    assert result["champion"].startswith("models:/reward-model@champion (version 1)")
    assert drift["n_samples"] == 96 and drift["n_pairs"] > 100 and drift["n_reference"] > 100
    assert 0 <= drift["psi"] < thresholds["psi_threshold"] and 0 <= drift["ks"] < thresholds["ks_threshold"]
    assert 0 < drift["batch_accuracy"] < 1 and drift["reference_accuracy"] > 0
    assert result["decision"] == {"retrain": False, "reasons": []}
    assert [e["state"] for e in ledger(project)] == ["started", "decided", "done"]
    assert not (project / "data/raw/fresh").exists()
    summary = artifacts(state.state_details.flow_run_id)["retrain-summary"]
    assert f"Batch `{IN_DIST}`" in summary and "Decision: **no retrain**" in summary
    assert (project / "data/retrain/ledger.jsonl.dvc").exists()  # the ledger is DVC-tracked


def test_the_same_batch_submitted_twice_is_processed_once(champion: dict):
    project = champion["project"]
    before = ledger(project)
    state = run_retrain(project)  # the same inbox again: nothing new
    assert state.is_completed() and state.result() == [] and ledger(project) == before
    submit(project, f"{IN_DIST}-resubmitted", IN_DIST)  # the same data under another name
    state = run_retrain(project)
    assert state.is_completed() and state.result() == []
    events = ledger(project)
    assert [(e["batch_id"], e["state"]) for e in events[len(before):]] == [(f"{IN_DIST}-resubmitted", "duplicate")]
    assert sum(e["state"] == "started" for e in events) == 1
    assert "resubmitted = batch-01" in artifacts(state.state_details.flow_run_id)["retrain-summary"]


def test_a_shifted_batch_is_retrained_on_exactly_once_even_after_a_crash(champion: dict,
                                                                        monkeypatch: pytest.MonkeyPatch):
    project = champion["project"]
    submit(project, SHIFTED, SHIFTED)
    fresh = project / "data/raw/fresh" / f"{SHIFTED}.jsonl"

    monkeypatch.setenv("REWARDLINE_RETRAIN_FAIL_AT", "appended")  # crash after the data was appended
    crashed = run_retrain(project)
    assert crashed.is_failed() and "injected failure" in crashed.message
    assert [e["state"] for e in ledger(project) if e["batch_id"] == SHIFTED] == ["started", "decided", "appended"]

    monkeypatch.delenv("REWARDLINE_RETRAIN_FAIL_AT")
    state = run_retrain(project)
    assert state.is_completed(), state.message
    [result] = state.result()
    states = [e["state"] for e in ledger(project) if e["batch_id"] == SHIFTED]
    assert states == ["started", "decided", "appended", "rolled_back", "started", "decided", "appended", "done"]
    # No partial or duplicated data: the batch's rankings are in the raw data once, and ingested once.
    assert sorted(p.name for p in fresh.parent.iterdir()) == [fresh.name]
    assert fresh.read_bytes() == (FRESH / SHIFTED / "rankings.jsonl").read_bytes()
    ingest = json.loads((project / "data/ingested/metrics.json").read_text())  # the full metrics, not the headline
    assert ingest["rows_in_by_format"]["rankings"] == 450 + 24

    drift = result["drift"]
    assert drift["psi"] > OVERLAY["retrain"]["psi_threshold"] and drift["ks"] > OVERLAY["retrain"]["ks_threshold"]
    assert result["decision"]["retrain"] and result["outcome"].startswith("retrained; challenger registered")
    registration = json.loads((project / "reports/register/registration.json").read_text())
    assert registration["registered"] and str(registration["version"]) == "2"  # a new challenger
    assert result["promotion"] == {"version": registration["version"], "registered": True, "promoted": False,
                                   "reason": "retrain.auto_promote is false: promote by hand (rewardline promote)"}
    comparison = result["comparison"]
    assert comparison["n_pairs"] > 0 and 0 <= comparison["challenger_accuracy"] <= 1
    from rewardline.registry import open_registry

    registry = open_registry(project)
    assert registry.resolve_alias("reward-model", "champion") == "1"
    assert registry.resolve_alias("reward-model", "challenger") == "2"
    summary = artifacts(state.state_details.flow_run_id)["retrain-summary"]
    assert "Decision: **retrain**" in summary and "### Challenger gates" in summary and "redone" in summary


def test_a_failed_gate_fails_the_pipeline_flow_naming_the_gate(champion: dict):
    from flows.pipeline import pipeline

    project = champion["project"]
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["evaluate"]["min_accuracy"] = 0.99
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        state = pipeline(project=str(project), return_state=True)
    finally:
        params_path.write_text(original)
    assert state.is_failed()
    assert "stage evaluate" in state.message and "min_accuracy" in state.message
    runs = {r.name: r for r in task_runs(state.state_details.flow_run_id)}
    assert runs["dvc repro evaluate"].run_count == 1  # a gate is not retried
    assert "dvc repro register" not in runs  # the flow stopped at the gate
    report = artifacts(state.state_details.flow_run_id)["evaluate-gate-report"]
    assert "evaluate: gate failed" in report and "FAILED" in report


def test_the_deployment_schedule_is_the_params_schedule():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["retrain"]
    deployments = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    retrain = deployments["retrain-weekly"]
    assert retrain["entrypoint"] == "flows/retrain.py:retrain"
    assert retrain["schedules"][0]["cron"] == params["schedule_cron"]
    assert retrain["schedules"][0]["timezone"] == params["timezone"]
    assert retrain["work_pool"]["name"] == "rewardline-process"
    assert os.path.exists(ROOT / "flows/retrain.py")
