"""The Prefect flows on a fresh copy of the project, against a real Prefect API, real DVC and MLflow (sqlite).

One module-scoped project: the ``pipeline`` flow trains the champion (tiny-bert), which is
promoted; the retrain tests then feed it the two fresh batches of tests/fixtures/fresh_batches
(AlpacaEval best-of-16 samples 7..10, never trained on). The project's sample is restricted to
its AlpacaEval-derived sources so that "like the training data" means the same policy and
prompt sources; the tiny model's accuracy is noise, so the accuracy-drop threshold is overlaid
(0.5) and the retrain decision rests on PSI/KS, with the project's own shipped thresholds
(``params.yaml: retrain``: psi_threshold, ks_threshold, drift_alpha, drift_permutations; not
overlaid). Measured with this champion on 2026-12-04 (189ad26; docs/retraining.md, "Drift under sampling
noise"): in-distribution PSI 0.295 (prompt-level permutation p 0.744: within noise), KS 0.137 (p 0.72);
terse PSI 2.55, KS 0.53 (both p 0.001). The figures move with the champion; the tests assert the decisions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from faults.fault_log import record

from rewardline.retraining import inbox

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
              "warmup_ratio": 0.1, "checkpoint_every": 0, "progress": False,
              "freeze_layers": 1},  # the recipe freezes 3 of MiniLM's 6 blocks; tiny-bert has 2 (as in .ci/params.yaml)
    "evaluate": {"min_accuracy": 0.4, "max_ece_calibrated": 0.5, "max_length_bias": 0.5, "champion_delta": 0.5,
                 "bootstrap_samples": 200, "min_bon_gain": -1.0, "max_overoptimization": 1.0},  # bon: wiring only
    "retrain": {"accuracy_drop_threshold": 0.5, "min_pairs": 20, "auto_promote": False},
    "prm": yaml.safe_load((ROOT / ".ci" / "params.yaml").read_text())["prm"],  # CI's tiny PRM, not MiniLM for 2 epochs
}
SHIPPED_DRIFT = {k: yaml.safe_load((ROOT / "params.yaml").read_text())["retrain"][k]
                 for k in ("psi_threshold", "ks_threshold", "drift_alpha", "drift_permutations")}

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
    """Submit fixture batch ``source`` as ``batch_id`` the way an uploader does (``inbox.write_batch``: the data files,
    then a manifest naming ``batch_id``), so a batch resubmitted under another name is well-formed."""
    files = FRESH / source
    inbox.write_batch(str(project / "data/inbox"), batch_id, (files / "samples.jsonl").read_bytes(),
                      (files / "rankings.jsonl").read_bytes())


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


def counted(drift: dict, name: str, p_key: str) -> bool:
    """Whether the shipped rule counts statistic ``name``: over its threshold with permutation p <= alpha."""
    return drift[name] > SHIPPED_DRIFT[f"{name}_threshold"] and drift[p_key] <= SHIPPED_DRIFT["drift_alpha"]


def test_the_project_copy_runs_the_shipped_drift_thresholds(champion: dict):
    copied = yaml.safe_load((champion["project"] / "params.yaml").read_text())["retrain"]
    assert {k: copied[k] for k in SHIPPED_DRIFT} == SHIPPED_DRIFT and SHIPPED_DRIFT["drift_permutations"] > 0


def test_a_batch_like_the_training_data_is_not_retrained_on_with_the_shipped_thresholds(champion: dict):
    """Decided by the shipped PSI / KS thresholds and permutation test: neither counts."""
    project = champion["project"]
    submit(project, IN_DIST, IN_DIST)
    state = run_retrain(project)
    assert state.is_completed(), state.message
    [result] = state.result()
    drift, decision = result["drift"], result["decision"]
    assert result["champion"].startswith("models:/reward-model@champion (version 1)")
    assert drift["n_samples"] == 96 and drift["n_pairs"] > 100 and drift["n_reference"] > 100
    assert drift["n_prompts"] == 24 and drift["n_reference_prompts"] > 20  # groups: the reference has prompt ids
    assert 0 < drift["psi_pvalue"] <= 1 and 0 < drift["ks_perm_pvalue"] <= 1
    assert not counted(drift, "psi", "psi_pvalue") and not counted(drift, "ks", "ks_perm_pvalue"), drift
    assert 0 < drift["batch_accuracy"] < 1 and drift["reference_accuracy"] > 0
    assert decision["retrain"] is False and decision["reasons"] == [], decision
    crossed = [n for n in ("psi", "ks") if drift[n] > SHIPPED_DRIFT[f"{n}_threshold"]]
    assert [r.split()[0] for r in decision["within_noise"]] == crossed  # reported, not counted
    assert [e["state"] for e in ledger(project)] == ["started", "decided", "done"]
    assert not (project / "data/raw/fresh").exists()
    summary = artifacts(state.state_details.flow_run_id)["retrain-summary"]
    assert f"Batch `{IN_DIST}`" in summary and "Decision: **no retrain**" in summary
    assert (project / "data/retrain/ledger.jsonl.dvc").exists()  # the ledger is DVC-tracked


def test_the_same_batch_submitted_twice_is_processed_once(champion: dict):
    """Stands alone: submits its own batch (a copy of the in-distribution fixture under its own
    id), whatever the other tests left in the module's project."""
    project = champion["project"]
    first, again = "batch-03-submitted-twice", "batch-03-submitted-twice-resubmitted"
    submit(project, first, IN_DIST)
    state = run_retrain(project)  # processes `first` (and anything else new; not asserted)
    assert state.is_completed(), state.message
    mine = [e for e in ledger(project) if e["batch_id"] in (first, again)]
    assert [e["state"] for e in mine] in (["started", "decided", "done"], ["duplicate"])
    before = ledger(project)
    state = run_retrain(project)  # the same inbox again: nothing new
    assert state.is_completed() and state.result() == [] and ledger(project) == before
    submit(project, again, IN_DIST)  # the same data under another name
    state = run_retrain(project)
    assert state.is_completed() and state.result() == []
    events = ledger(project)
    [(batch_id, event_state, of)] = [(e["batch_id"], e["state"], e.get("of")) for e in events[len(before):]]
    assert (batch_id, event_state) == (again, "duplicate") and of in (first, IN_DIST)
    assert sum(e["state"] == "started" for e in events if e["batch_id"] in (first, again)) <= 1
    assert f"{again} = {of}" in artifacts(state.state_details.flow_run_id)["retrain-summary"]


KILL_POINTS = ("started", "decided", "appended", "registered")  # `registered`: registered, not yet `done`


def runs_log(project: Path) -> Path:
    return project.parent / f"{project.name}-retrain-runs.log"


def run_retrain_process(project: Path, kill_at: str | None, timeout: float = 2400) -> int:
    """``python -m flows.retrain run`` as its own process (own session) against the harness's Prefect
    API; ``kill_at``: the process SIGKILLs itself there (``REWARDLINE_RETRAIN_KILL_AT``). Returns its
    exit status; output appended to :func:`runs_log`. On a timeout the whole session
    (a DVC stage it runs included) is killed."""
    import sys

    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value()}
    env.pop("REWARDLINE_RETRAIN_KILL_AT", None)
    if kill_at:
        env["REWARDLINE_RETRAIN_KILL_AT"] = kill_at
    with runs_log(project).open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flows.retrain", "run", "--project", str(project)],
                                cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise


def test_a_shifted_batch_is_retrained_on_exactly_once_after_a_sigkill_at_every_state(champion: dict):
    """The retrain flow, a real process, SIGKILLed right after each ledger state in turn (and after
    the challenger was registered, before `done`), re-run after each kill; then one clean run.
    Exactly once: the batch's rankings are in the raw data once and ingested once, one new
    challenger version is registered, the ledger ends in one `done`."""
    from rewardline.registry import open_registry

    project = champion["project"]
    submit(project, SHIFTED, SHIFTED)
    fresh = project / "data/raw/fresh" / f"{SHIFTED}.jsonl"
    versions_before = {v.version for v in open_registry(project).list_versions("reward-model")}
    for kill_at in KILL_POINTS:
        status = run_retrain_process(project, kill_at)
        assert status == -signal.SIGKILL, (kill_at, status, runs_log(project).read_text()[-3000:])
        states = [e["state"] for e in ledger(project) if e["batch_id"] == SHIFTED]
        if kill_at == "registered":  # registered, not done: the batch counts as interrupted
            assert states[-1] == "appended", states
            assert json.loads((project / "reports/register/registration.json").read_text())["registered"]
        else:
            assert states[-1] == kill_at, states
    final = run_retrain_process(project, None)

    states = [e["state"] for e in ledger(project) if e["batch_id"] == SHIFTED]
    registration = json.loads((project / "reports/register/registration.json").read_text())
    registry = open_registry(project)
    new_versions = {v.version for v in registry.list_versions("reward-model")} - versions_before
    once = (fresh.exists() and fresh.read_bytes() == (FRESH / SHIFTED / "rankings.jsonl").read_bytes()
            and states.count("done") == 1 and new_versions == {str(registration["version"])})
    record("SIGKILL the retrain flow", "REWARDLINE_RETRAIN_KILL_AT = started, decided, appended, registered",
           "each re-run rolls the batch back and redoes it; the batch's data once, one new version"
           if final == 0 and once else "not exactly once", len(KILL_POINTS), len(KILL_POINTS) * (final == 0 and once),
           int(not once))
    assert final == 0, runs_log(project).read_text()[-3000:]
    assert states == ["started", "rolled_back",
                      "started", "decided", "rolled_back",
                      "started", "decided", "appended", "rolled_back",
                      "started", "decided", "appended", "rolled_back",
                      "started", "decided", "appended", "done"]
    [done] = [e for e in ledger(project) if e["batch_id"] == SHIFTED and e["state"] == "done"]
    # No partial or duplicated data: the batch's rankings are in the raw data once, and ingested once.
    assert sorted(p.name for p in fresh.parent.iterdir()) == [fresh.name]
    assert fresh.read_bytes() == (FRESH / SHIFTED / "rankings.jsonl").read_bytes()
    ingest = json.loads((project / "data/ingested/metrics.json").read_text())  # the full metrics, not the headline
    assert ingest["rows_in_by_format"]["rankings"] == 450 + 24

    assert done["outcome"].startswith("retrained; challenger registered"), done
    # Retrained because of the shipped thresholds (not forced): PSI and KS crossed, beyond sampling noise.
    decided = [e for e in ledger(project) if e["batch_id"] == SHIFTED and e["state"] == "decided"][-1]
    assert decided["decision"]["retrain"] and [r.split()[0] for r in decided["decision"]["reasons"]] == ["psi", "ks"]
    assert counted(decided["drift"], "psi", "psi_pvalue") and counted(decided["drift"], "ks", "ks_perm_pvalue")
    assert new_versions == {str(registration["version"])}  # one challenger, registered once across 5 runs
    assert done["promotion"] == {"version": registration["version"], "registered": True, "promoted": False,
                                 "reason": "retrain.auto_promote is false: promote by hand (rewardline promote)"}
    assert done["comparison"]["n_pairs"] > 0 and 0 <= done["comparison"]["challenger_accuracy"] <= 1
    assert registry.resolve_alias("reward-model", "champion") == "1"
    assert registry.resolve_alias("reward-model", "challenger") == str(registration["version"])


def test_register_through_the_cli_exits_0_1_and_2(champion: dict, tmp_path: Path):
    """``rewardline register`` on the project: 0, and no new version (the retrain flow registered this very
    bundle already: its version is reused); 1 and none when a gate failed (a copy of the project whose gates.json
    says so); 2 and none for a bad --set."""
    import sys

    from rewardline.registry import open_registry

    project = champion["project"]

    def versions() -> set[str]:
        return {v.version for v in open_registry(project).list_versions("reward-model")}

    def register(where: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rewardline.cli", "register", "--project", str(where), *args],
                              cwd=where, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                              text=True, timeout=600)

    before = versions()
    done = register(project)
    assert done.returncode == 0, done.stderr[-3000:]
    registration = json.loads((project / "reports/register/registration.json").read_text())
    assert registration["already_registered"] and versions() == before and registration["version"] in before
    failed = tmp_path / "failed-gates"
    shutil.copytree(project, failed, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    gates = json.loads((failed / "reports/evaluate/gates.json").read_text())
    gates["passed"] = False
    gates["gates"]["min_accuracy"]["passed"] = False
    (failed / "reports/evaluate/gates.json").write_text(json.dumps(gates))
    before = versions()
    refused = register(failed)
    assert refused.returncode == 1 and "not registering the model" in refused.stderr, refused.stderr[-3000:]
    bad = register(project, "--set", "alias=champion")
    assert bad.returncode == 2 and "promote_to_champion" in bad.stderr, bad.stderr[-3000:]
    assert versions() == before


def test_a_challenger_rejected_by_a_gate_is_a_completed_retrain_run(champion: dict):
    """The pipeline subflow fails at the evaluate gate; the retrain run itself ends Completed, its summary
    names the rejection and holds the gate table. A new batch (the shifted one under new prompt ids), forced."""
    from flows.retrain import retrain
    from rewardline.registry import open_registry
    from rewardline.retraining.inbox import write_batch

    project = champion["project"]
    batch_id = "batch-03-rejected"
    rename = {SHIFTED.encode(): batch_id.encode()}
    data = {}
    for name in ("samples.jsonl", "rankings.jsonl"):
        raw = (FRESH / SHIFTED / name).read_bytes()
        for old, new in rename.items():
            raw = raw.replace(old, new)
        data[name] = raw
    write_batch(str(project / "data/inbox"), batch_id, data["samples.jsonl"], data["rankings.jsonl"])
    versions_before = {v.version for v in open_registry(project).list_versions("reward-model")}
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["evaluate"]["min_accuracy"] = 0.99
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        state = retrain(project=str(project), force=True, return_state=True)
    finally:
        params_path.write_text(original)
    assert state.is_completed(), state.message
    [result] = state.result()
    assert result["outcome"].startswith("retrained; challenger rejected") and "min_accuracy" in result["outcome"]
    summary = artifacts(state.state_details.flow_run_id)["retrain-summary"]
    assert f"## Batch `{batch_id}`: retrained; challenger rejected" in summary
    assert "Decision: **retrain**" in summary and "### Challenger gates" in summary
    assert "| gate | value | threshold | passed |" in summary and "min_accuracy" in summary
    assert [e["state"] for e in ledger(project) if e["batch_id"] == batch_id][-1] == "done"
    assert {v.version for v in open_registry(project).list_versions("reward-model")} == versions_before

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    subflows = api(lambda c: c.read_flow_runs(flow_run_filter=FlowRunFilter(
        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[state.state_details.flow_run_id]))))
    assert [run.state.is_failed() for run in subflows] == [True]  # the pipeline subflow: Failed at the gate


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
