"""The pinned dependency set works together: pip check, a real Prefect flow, a real MLflow registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_pip_check_is_clean():
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_a_real_prefect_flow_runs_against_a_real_prefect_api():
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    @task(retries=1, retry_delay_seconds=0)
    def square(x: int) -> int:
        return x * x

    @flow(name="rewardline-dependency-check")
    def total(n: int) -> int:
        return sum(square.map(range(n)).result())

    with prefect_test_harness(server_startup_timeout=120):
        state = total(4, return_state=True)
        assert state.is_completed() and state.result() == 14
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(state.state_details.flow_run_id)
            assert run.state.is_completed()


def test_a_real_mlflow_registry_call(tmp_path: Path):
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("dependency-check")
    with mlflow.start_run() as run:
        mlflow.log_metric("accuracy", 0.7)
        (tmp_path / "weights.txt").write_text("w")
        mlflow.log_artifact(str(tmp_path / "weights.txt"), artifact_path="model")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not a registry URI an earlier test left behind
    client.create_registered_model("dependency-check-model")
    version = client.create_model_version(
        "dependency-check-model", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias("dependency-check-model", "challenger", version.version)
    got = client.get_model_version_by_alias("dependency-check-model", "challenger")
    assert got.version == version.version and got.run_id == run.info.run_id
