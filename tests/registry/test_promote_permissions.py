"""Who may promote (issue 12): the stack's MLflow server runs the basic-auth app; a READ user's
``rewardline promote`` exits 2 naming the user and the missing permission, a user with MANAGE on the
registered model moves ``champion``.

The server is started with the exact command line and environment of ``rewardline stack up``
(:func:`rewardline.ops.stack.commands`), alone: no S3 is needed to register a version from a source URI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import _free_ports, stop_process_group

from rewardline.ops import stack

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
NAME = "reward-model"


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - loopback
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} not up after {timeout} s: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory):
    """The stack's MLflow service (basic-auth app) on a free loopback port: (url, state_dir)."""
    tmp = tmp_path_factory.mktemp("auth")
    config = stack.load_config()
    config["mlflow"]["port"] = _free_ports(1)[0]
    state = tmp / "state"
    (tmp / "stack.yaml").write_text(yaml.safe_dump(config))
    cmd, extra = stack.commands(config, state)["mlflow"]
    log = tmp / "mlflow.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env={**env, **extra}, stdout=out, stderr=subprocess.STDOUT, cwd=state,
                                start_new_session=True)
    url = stack.urls(config)["mlflow"]
    try:
        _wait_http(f"{url}/health", proc, log)
        yield url, state
    finally:
        stop_process_group(proc)


def _promote(project: Path, url: str, user: str | None, password: str | None,
             version: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"MLFLOW_TRACKING_URI": url, "PYTHONPATH": str(ROOT), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    if user:
        env.update({"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password or ""})
    return subprocess.run([sys.executable, "-m", "rewardline.cli", "promote", "--version", version], cwd=project,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_only_a_user_with_manage_on_the_model_moves_champion(auth_server, tmp_path: Path, monkeypatch) -> None:
    from mlflow import MlflowClient
    from mlflow.server.auth.client import AuthServiceClient

    url, state = auth_server
    secrets = stack.auth_secrets(state)
    assert (state / stack.AUTH_FILE).stat().st_mode & 0o777 == 0o600
    ini = (state / "data" / "mlflow" / "basic_auth.ini").read_text()
    assert "default_permission = READ" in ini and secrets["MLFLOW_TRACKING_PASSWORD"] not in ini

    # the admin (credentials from the stack's 0600 file) registers a version and adds two users
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", secrets["MLFLOW_TRACKING_USERNAME"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secrets["MLFLOW_TRACKING_PASSWORD"])
    admin = MlflowClient(tracking_uri=url, registry_uri=url)
    admin.create_registered_model(NAME)
    run = admin.create_run(admin.create_experiment("promote-auth"))
    version = admin.create_model_version(NAME, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                         tags={"gates_passed": "true"}).version
    users = AuthServiceClient(url)
    users.create_user("viewer", "viewer-password-123")
    users.create_user("maintainer", "maintainer-password-123")
    users.grant_user_permission("maintainer", "registered_model", NAME, "MANAGE")

    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text("{}\n")

    refused = _promote(project, url, "viewer", "viewer-password-123", str(version))
    assert refused.returncode == 2, refused.stderr
    message = refused.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "user 'viewer'" in message and "403" in message and f"EDIT or MANAGE on registered model '{NAME}'" in message
    assert "champion" not in admin.get_registered_model(NAME).aliases

    anonymous = _promote(project, url, None, None, str(version))
    assert anonymous.returncode == 2 and "401" in anonymous.stderr and "MLFLOW_TRACKING_USERNAME" in anonymous.stderr

    moved = _promote(project, url, "maintainer", "maintainer-password-123", str(version))
    assert moved.returncode == 0, moved.stderr
    assert admin.get_registered_model(NAME).aliases == {"champion": str(version)}
