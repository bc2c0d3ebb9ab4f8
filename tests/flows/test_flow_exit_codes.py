"""The pipeline flow reads a stage's exit code (rewardline.errors): 3 is retried, 1 and 2 are not.

A tiny DVC project (``dvc init --no-scm``) whose stages are one script run through the real
:func:`rewardline.stage.stage_main`: ``flaky`` loses its S3 connection on the first attempt only
(a marker file), ``gate`` fails a gate, ``bad`` meets a malformed row. The flow runs them through
``dvc repro`` against a real Prefect API (the test harness), in seconds rather than the minutes of
tests/flows/test_flows.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
STAGE = """
import sys
from pathlib import Path

from rewardline.errors import BadInput, GateFailed
from rewardline.stage import stage_main


def main() -> None:
    kind = sys.argv[1]
    attempts = Path(f"attempts-{kind}.txt")
    attempts.write_text(attempts.read_text() + "x" if attempts.exists() else "x")
    if kind == "flaky" and len(attempts.read_text()) == 1:
        raise ConnectionError("Could not connect to the endpoint URL: http://127.0.0.1:8333 (first attempt)")
    if kind == "gate":
        raise GateFailed("toy gate failed (1 of 1)\\n  - min_accuracy: 0.40 is not >= 0.99")
    if kind == "bad":
        raise BadInput("data/raw/in.jsonl", line=3, field="response", expected="a string", got="null")
    Path(f"out-{kind}.txt").write_text("done\\n")


stage_main(main)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy-dvc")
    (root / "stage.py").write_text(textwrap.dedent(STAGE))
    stages = {kind: {"cmd": f"python stage.py {kind}", "deps": ["stage.py"], "outs": [f"out-{kind}.txt"]}
              for kind in ("flaky", "gate", "bad")}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    return root


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def run_counts(flow_run_id) -> dict[str, int]:  # noqa: ANN001
    """Task run name -> how many times it ran (1 + retries)."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list:
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    return {run.name: run.run_count for run in asyncio.run(read())}


def run_pipeline(project: Path, stage: str):  # noqa: ANN201
    from flows.pipeline import pipeline

    return pipeline(project=str(project), stages=[stage], retries=2, retry_backoff_s=0.0,
                    env={"PYTHONPATH": str(ROOT)}, return_state=True)


def test_a_transient_failure_is_retried_and_the_flow_succeeds(project: Path, prefect_api: None):
    state = run_pipeline(project, "flaky")
    assert state.is_completed(), state.message
    assert (project / "attempts-flaky.txt").read_text() == "xx"  # exit 3, then success on the retry
    assert (project / "out-flaky.txt").read_text() == "done\n"
    assert run_counts(state.state_details.flow_run_id) == {"dvc repro flaky": 2}


@pytest.mark.parametrize(("stage", "message"), [
    ("gate", "stage gate: toy gate failed (1 of 1)"),
    ("bad", "stage bad: error: data/raw/in.jsonl:3: field 'response': expected a string, got null"),
])
def test_a_failed_gate_or_bad_input_is_not_retried(project: Path, prefect_api: None, stage: str, message: str):
    state = run_pipeline(project, stage)
    assert state.is_failed() and message in state.message, state.message
    assert (project / f"attempts-{stage}.txt").read_text() == "x"  # ran once
    assert run_counts(state.state_details.flow_run_id) == {f"dvc repro {stage}": 1}


def test_the_flow_commands_exit_with_the_contracts_code_and_one_line(project: Path, prefect_api: None):
    """`python -m flows.pipeline` / `flows.retrain` exit 1 on a gate, 2 on bad input, 0 when done (an uncaught
    exception used to exit 1 with a traceback, whatever it was), against the harness's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    env = {"PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(project),
           "PREFECT_API_URL": str(PREFECT_API_URL.value())}

    def flow_command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", *args], cwd=project, capture_output=True, text=True, env=env,
                              timeout=600)

    def lines(run: subprocess.CompletedProcess) -> list[str]:
        return run.stderr.splitlines()

    gate = flow_command("flows.pipeline", "--project", str(project), "--stage", "gate")
    assert gate.returncode == 1, gate.stderr
    assert "stage gate: toy gate failed (1 of 1)" in lines(gate), gate.stderr  # the message, on its own line
    bad = flow_command("flows.pipeline", "--project", str(project), "--stage", "bad")
    assert bad.returncode == 2, bad.stderr
    assert "error: stage bad: error: data/raw/in.jsonl:3: field 'response': expected a string, got null" in lines(bad)
    missing = flow_command("flows.retrain", "run", "--project", str(project / "absent"))
    assert missing.returncode == 2, missing.stderr
    assert f"error: {project / 'absent'}: not a rewardline project (no dvc.yaml or params.yaml); run the flow in " \
           "the project or pass --project DIR" in lines(missing), missing.stderr
    no_params = flow_command("flows.retrain", "run", "--project", str(project))  # a DVC project, not rewardline's
    assert no_params.returncode == 2 and f"error: {project}: not a rewardline project (no params.yaml); run the " \
        "flow in the project or pass --project DIR" in lines(no_params), no_params.stderr
    done = flow_command("flows.pipeline", "--project", str(project), "--stage", "flaky")
    assert done.returncode == 0, done.stderr



def test_a_stage_not_in_dvc_yaml_is_exit_2_without_retries(project: Path, prefect_api: None):
    """`python -m flows.pipeline --stage nosuch` ran `dvc repro nosuch` three times over 35 s of backoff, then exited
    3 (transient: retry) with "stage exit None, dvc exit 255": a usage error, which the same command repeats."""
    from prefect.settings import PREFECT_API_URL

    env = {"PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(project),
           "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    run = subprocess.run([sys.executable, "-m", "flows.pipeline", "--project", str(project), "--stage", "nosuch"],
                         cwd=project, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 2, run.stderr
    assert f"error: {project / 'dvc.yaml'}: no stage 'nosuch'; expected one of: flaky, gate, bad" \
        in run.stderr.splitlines(), run.stderr
    assert "Retry" not in run.stderr and "dvc repro nosuch" not in run.stderr

def test_the_retrain_flows_tasks_retry_an_outage_but_not_bad_input(prefect_api: None):
    """The retrain flow's drift-check (and discover, version-ledger) retried a malformed batch's BadInput twice,
    15 s of backoff, before failing with exit 2: the contract retries only exit 3."""
    from prefect import flow, task

    from flows.retrain import TRANSIENT
    from rewardline.errors import BadInput

    calls: list[str] = []

    @task(**{**TRANSIENT, "retry_delay_seconds": 0})
    def fails(kind: str) -> None:
        calls.append(kind)
        if kind == "bad" or calls.count(kind) == 1:
            raise (BadInput("samples.jsonl", line=2, field="response", detail="missing") if kind == "bad"
                   else ConnectionError("Could not connect to the endpoint URL (first attempt)"))

    @flow
    def run(kind: str) -> None:
        fails(kind)

    assert run("outage", return_state=True).is_completed() and calls == ["outage", "outage"]
    calls.clear()
    state = run("bad", return_state=True)
    assert state.is_failed() and "field 'response'" in state.message and calls == ["bad"]


def test_the_retrain_command_says_why_it_skipped_a_batch(tmp_path: Path, prefect_api: None):
    """`python -m flows.retrain run` logged only "inbox data/inbox: 0 ready, 0 new, 0 duplicates, 1 not ready": why
    (a damaged file, a bad manifest) was in the retrain-summary artifact alone, not in the output cron mails."""
    from prefect.settings import PREFECT_API_URL

    from rewardline.ops import storage
    from rewardline.retraining.inbox import write_batch

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("retrain: {}\n")
    write_batch(str(tmp_path / "data/inbox"), "b1", b'{"prompt_id": "p", "prompt": "p", "response": "r"}\n')
    storage.write_bytes(str(tmp_path / "data/inbox/b1/samples.jsonl"), b"changed after the manifest\n")
    env = {"PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    run = subprocess.run([sys.executable, "-m", "flows.retrain", "run", "--project", str(tmp_path)], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "batch b1 skipped: samples.jsonl does not match its sha256 in the manifest" in run.stdout + run.stderr


def test_the_pipeline_command_names_itself_as_it_is_run(tmp_path: Path):
    """`python -m flows.pipeline --help` said `usage: pipeline.py ...`, a file nobody runs (flows.retrain and
    flows.train_distributed name themselves `python -m flows.<name>`); a usage error said the same."""
    def pipeline_command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flows.pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)

    help_ = pipeline_command("--help")
    assert help_.returncode == 0, help_.stderr
    assert help_.stdout.startswith("usage: python -m flows.pipeline [-h] [--project PROJECT] [--stage STAGE]")
    assert "the project directory (default: the current one)" in help_.stdout
    bad = pipeline_command("--nosuch", "--project", str(tmp_path / "absent"))
    assert bad.returncode == 2 and "python -m flows.pipeline: error: unrecognized arguments: --nosuch" in bad.stderr


def test_an_ephemeral_api_that_starts_too_slowly_names_the_setting_that_waits_longer(capsys: pytest.CaptureFixture):
    """On a loaded machine Prefect's ephemeral API server can miss its 20 s start-up window: the flow commands said
    "internal error: RuntimeError: Timed out while attempting to connect to ephemeral Prefect API server." (a bug,
    by the contract's words), naming neither the setting that waits longer nor the way around the ephemeral server."""
    import inspect

    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    from flows.command_line import EPHEMERAL_TIMEOUT, run_flow_command

    assert EPHEMERAL_TIMEOUT in inspect.getsource(SubprocessASGIServer.start)  # Prefect's own words, still

    def slow_server() -> None:
        raise RuntimeError(f"{EPHEMERAL_TIMEOUT}. stdout: ... stderr: ...")

    with pytest.raises(SystemExit) as ended, temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 25}):
        run_flow_command(slow_server)
    assert ended.value.code == 3  # transient: the same command may well start it next time
    said = capsys.readouterr().err.strip()
    assert said.startswith("error: Prefect's ephemeral API server did not start within 25 s "
                           "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); "), said
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=60" in said and "PREFECT_API_URL" in said


def test_a_bad_batch_is_rejected_and_the_batches_after_it_are_processed(tmp_path: Path, prefect_api: None,
                                                                        monkeypatch: pytest.MonkeyPatch):
    """Batches a, b (rankings in another format: bad input), c: the run failed at b with exit 2 and the next run
    rolled b back and failed at it again, so c waited for ever (until a person deleted b). Now b is recorded
    ``rejected`` and c processed; the run ends Failed naming b (exit 2, the alert fires once); the next run has
    nothing to do and completes; b corrected under a new id is processed."""
    import json

    from conftest import save_tiny_reward_model

    from flows.retrain import retrain
    from rewardline.retraining.inbox import write_batch

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")  # nothing registered
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    save_tiny_reward_model(tmp_path, max_length=64).rename(project / "models/reward-model")
    (project / "reports/evaluate").mkdir(parents=True)
    (project / "reports/evaluate/reference_rewards.json").write_text(json.dumps({"rewards": [0.0, 0.1, 0.2, 0.3]}))
    (project / "reports/evaluate/metrics.json").write_text(json.dumps({"accuracy": 0.6}))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["retrain"]["drift_permutations"] = 0
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (project / "dvc.yaml").write_text("stages: {}\n")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, check=True)
    fixture = ROOT / "tests/fixtures/fresh_batches/batch-01-in-distribution"
    samples = (fixture / "samples.jsonl").read_bytes()
    pairs = b"".join(json.dumps({"prompt": r["prompt"], "chosen": r["responses"][0]["text"],
                                 "rejected": r["responses"][1]["text"]}).encode() + b"\n"
                     for r in map(json.loads, (fixture / "rankings.jsonl").read_bytes().splitlines()))
    inbox = str(project / "data/inbox")
    lines = samples.splitlines(keepends=True)
    for batch_id, data, rankings in (("a", lines[:48], None), ("b", lines, pairs), ("c", lines[48:], None)):
        write_batch(inbox, batch_id, b"".join(data), rankings)

    def states() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for line in (project / "data/retrain/ledger.jsonl").read_text().splitlines():
            event = json.loads(line)
            out.setdefault(event["batch_id"], []).append(event["state"])
        return out

    first = retrain(project=str(project), return_state=True)
    assert first.is_failed(), first.message
    assert f"batch b rejected: {inbox}/b/rankings.jsonl:1: field 'annotator_id'" in first.message, first.message
    assert states() == {"a": ["started", "decided", "done"], "b": ["started", "rejected"],
                        "c": ["started", "decided", "done"]}
    summary = artifacts(first.state_details.flow_run_id)["retrain-summary"]
    assert f"## Batch `b`: rejected: {inbox}/b/rankings.jsonl:1: field 'annotator_id'" in summary
    assert "## Batch `c`:" in summary and (project / "data/retrain/ledger.jsonl.dvc").exists()

    again = retrain(project=str(project), return_state=True)
    assert again.is_completed() and again.result() == [], again.message  # b is not retried
    write_batch(inbox, "b-fixed", samples)
    fixed = retrain(project=str(project), return_state=True)
    assert fixed.is_completed() and [r["batch_id"] for r in fixed.result()] == ["b-fixed"], fixed.message
    assert states()["b"] == ["started", "rejected"] and states()["b-fixed"][-1] == "done"


def artifacts(flow_run_id) -> dict[str, str]:  # noqa: ANN001
    """key -> Markdown of the flow run's artifacts."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read() -> list:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))

    return {a.key: a.data for a in asyncio.run(read()) if a.key}
