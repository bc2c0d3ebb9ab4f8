"""``rewardline stack``: a taken port fails before anything starts; up → pipeline against it → down."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import _free_ports
from typer.testing import CliRunner

from rewardline.ops import stack
from rewardline.ops.stack_cli import stack_app

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path) -> Path:
    """infra/stack.yaml with every port replaced by a free one."""
    config = stack.load_config()
    names = list(stack.ports(config))
    free = dict(zip(names, _free_ports(len(names)), strict=True))
    for name, port in free.items():
        section, key = name.split(".")
        config[section][key] = port
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_default_config_ports_are_distinct() -> None:
    config = stack.load_config()
    values = list(stack.ports(config).values())
    assert len(values) == len(set(values)) and set(config["timeouts"]) == set(stack.SERVICES)


def test_prefect_ui_is_on_and_bound_to_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = stack.load_config()
    server, server_env = stack.commands(config, tmp_path / "state")["prefect-server"]
    assert server_env["PREFECT_SERVER_UI_ENABLED"] == "true"
    assert server[server.index("--host") + 1] == "127.0.0.1" == config["host"]
    worker, worker_env = stack.commands(config, tmp_path / "state")["prefect-worker"]
    assert worker[worker.index("--pool") + 1] == "rewardline-process"  # prefect.yaml's pool
    assert worker_env["REWARDLINE_PROJECT_DIR"] == str(tmp_path.resolve())  # the *-local deployments' checkout


def test_taken_port_fails_before_anything_starts(tmp_path: Path) -> None:
    config_path = _config(tmp_path)
    config = stack.load_config(config_path)
    state = tmp_path / "state"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", config["mlflow"]["port"]))
        sock.listen()
        result = CliRunner().invoke(stack_app, ["up", "--config", str(config_path), "--state-dir", str(state)])
    assert result.exit_code == 3  # an environment error (exit-code contract, rewardline.errors)
    assert f"mlflow.port={config['mlflow']['port']}" in result.output and "already in use" in result.output
    assert stack.read_state(state) == {} and not (state / "logs").exists()


@pytest.mark.slow
def test_stack_up_pipeline_down(tmp_path: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from mlflow.tracking import MlflowClient

    config_path, state = _config(tmp_path), tmp_path / "state"
    config = stack.load_config(config_path)
    runner = CliRunner()
    args = ["--config", str(config_path), "--state-dir", str(state)]
    started = time.monotonic()
    result = runner.invoke(stack_app, ["up", *args])
    try:
        assert result.exit_code == 0, result.output
        up_s = time.monotonic() - started
        secret = stack.credentials(state)["AWS_SECRET_ACCESS_KEY"]
        assert secret not in result.output and "export MLFLOW_TRACKING_URI=" in result.output
        assert (state / stack.CREDENTIALS_FILE).stat().st_mode & 0o777 == 0o600
        assert (state / stack.AUTH_FILE).stat().st_mode & 0o777 == 0o600
        auth = stack.auth_secrets(state)
        assert all(secret not in result.output for secret in auth.values() if secret != "admin")
        services = stack.read_state(state)
        assert set(services) == set(stack.SERVICES)

        status = runner.invoke(stack_app, ["status", *args])
        assert status.exit_code == 0 and status.output.count("healthy") == 4, status.output

        # the pipeline, pointed at the stack the way the README says
        env = {**os.environ, **stack.client_env(config, state), **stack.credentials(state), **auth}
        env.pop("AWS_ENDPOINT_URL_S3", None)
        bucket = config["s3"]["buckets"][0]
        s3 = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        s3.upload_file(str(fixtures_dir / "hh_rlhf_30.jsonl"), bucket, "inbox/hh_rlhf_30.jsonl")
        out = tmp_path / "ingested"
        done = subprocess.run(
            [str(BIN / "rewardline"), "--json", "ingest", f"s3://{bucket}/inbox/", "--out", str(out)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert (out / "rankings" / "part-000.parquet").exists() and '"rows_in": 30' in done.stdout

        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # the in-process client: the admin
            monkeypatch.setenv(key, auth[key])
        tracking = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        run = tracking.create_run(tracking.create_experiment("stack-test"))
        (tmp_path / "m.txt").write_text("ok")
        tracking.log_artifact(run.info.run_id, str(tmp_path / "m.txt"))
        tracking.set_terminated(run.info.run_id)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="mlartifacts/").get("Contents", [])]
        assert any(k.endswith(f"{run.info.run_id}/artifacts/m.txt") for k in keys), keys

        import urllib.request

        with urllib.request.urlopen(f"{env['PREFECT_API_URL']}/health", timeout=5) as resp:
            assert resp.status == 200

        # prefect.yaml's deployments, deployed the way docs/retraining.md says, into the pool the
        # stack's worker polls (the pinned fastapi must accept the client's null limit/offset)
        # the embedded stack's variants, by name (docs/retraining.md: --all would schedule retraining twice)
        deployed = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "-n", "retrain-weekly-local",
                                   "-n", "pipeline-local"],
                                  env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        headers = {"Content-Type": "application/json", **stack.prefect_auth_header(auth["PREFECT_API_AUTH_STRING"])}
        request = urllib.request.Request(f"{env['PREFECT_API_URL']}/deployments/filter", data=b"{}",
                                         headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            deployments = {d["name"]: d for d in json.load(resp)}
        assert set(deployments) == {"retrain-weekly-local", "pipeline-local"}
        assert {d["work_pool_name"] for d in deployments.values()} == {config["prefect"]["work_pool"]}
        assert [s["schedule"]["cron"] for s in deployments["retrain-weekly-local"]["schedules"]] == ["0 3 * * 1"]
        print(f"stack up in {up_s:.1f} s")
    finally:
        down = runner.invoke(stack_app, ["down", "--state-dir", str(state)])
    assert down.exit_code == 0, down.output
    for service in services.values():
        assert not stack.alive(service), f"{service.name} still running"
        with pytest.raises(ProcessLookupError):
            os.killpg(service.pid, 0)
    stack.check_ports(config)  # every port free again
    assert runner.invoke(stack_app, ["status", *args]).exit_code == 1
