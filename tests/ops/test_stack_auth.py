"""The stack's secrets and the Prefect API auth string (issue 12, "Who may promote").

``auth.env`` is created 0600, the environment of ``up`` overrides it, no secret is in a command
line; Prefect's server started as ``rewardline stack up`` starts it refuses (401) a client without
the auth string and serves one with it (health stays open for probes).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import _free_ports, stop_process_group

from rewardline.ops import stack


def test_auth_secrets_are_generated_once_0600_and_env_wins(tmp_path: Path, monkeypatch) -> None:
    for env in stack.AUTH_FROM_ENV.values():
        monkeypatch.delenv(env, raising=False)
    first = stack.auth_secrets(tmp_path)
    assert (tmp_path / stack.AUTH_FILE).stat().st_mode & 0o777 == 0o600
    assert first == stack.auth_secrets(tmp_path) and first["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert ":" in first["PREFECT_API_AUTH_STRING"] and len(first["MLFLOW_TRACKING_PASSWORD"]) >= 24
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "from-the-environment")
    assert stack.auth_secrets(tmp_path)["MLFLOW_TRACKING_PASSWORD"] == "from-the-environment"

    config = stack.load_config()
    commands = stack.commands(config, tmp_path)
    cmd, env = commands["mlflow"]
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "from-the-environment"
    assert "default_permission = READ" in Path(env["MLFLOW_AUTH_CONFIG_PATH"]).read_text()
    assert commands["prefect-server"][1]["PREFECT_SERVER_API_AUTH_STRING"] == first["PREFECT_API_AUTH_STRING"]
    assert commands["prefect-worker"][1]["PREFECT_API_AUTH_STRING"] == first["PREFECT_API_AUTH_STRING"]
    secrets = {first["PREFECT_API_AUTH_STRING"], "from-the-environment", env["MLFLOW_FLASK_SERVER_SECRET_KEY"]}
    assert not secrets & {part for c, _ in commands.values() for part in c}  # never on a command line (ps)
    assert "from-the-environment" not in stack.exports(config, tmp_path)

    (tmp_path / stack.AUTH_FILE).chmod(0o644)
    with pytest.raises(stack.StackError, match="readable by other users"):
        stack.auth_secrets(tmp_path)


def _status(url: str, headers: dict[str, str] | None = None, body: bytes | None = b"{}") -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})},
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:  # not listening yet
        return 0


@pytest.mark.slow
def test_prefect_server_refuses_a_client_without_the_auth_string(tmp_path: Path) -> None:
    config = stack.load_config()
    config["prefect"]["port"] = _free_ports(1)[0]
    cmd, extra = stack.commands(config, tmp_path)["prefect-server"]
    log = tmp_path / "prefect.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env={**env, **extra}, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
                                start_new_session=True)
    api = stack.urls(config)["prefect-server"]
    try:
        deadline = time.monotonic() + 240
        while _status(f"{api}/health", body=None) != 200:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        auth = stack.auth_secrets(tmp_path)["PREFECT_API_AUTH_STRING"]
        assert _status(f"{api}/flows/filter") == 401
        assert _status(f"{api}/flows/filter", stack.prefect_auth_header("rewardline:wrong")) == 401
        assert _status(f"{api}/flows/filter", stack.prefect_auth_header(auth)) == 200

        # the Prefect client reads PREFECT_API_AUTH_STRING, as the stack's worker and `prefect deploy` do
        script = "from prefect.client.orchestration import get_client\n" \
                 "with get_client(sync_client=True) as c: print(len(c.read_flows()))"
        client_env = {**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "client")}
        refused = subprocess.run([str(Path(cmd[0]).parent / "python"), "-c", script], env=client_env,
                                 capture_output=True, text=True, timeout=300)
        assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr[-2000:]
        served = subprocess.run([str(Path(cmd[0]).parent / "python"), "-c", script],
                                env={**client_env, "PREFECT_API_AUTH_STRING": auth},
                                capture_output=True, text=True, timeout=300)
        assert served.returncode == 0 and json.loads(served.stdout.strip()) == 0, served.stderr[-2000:]
    finally:
        stop_process_group(proc)


def _request(method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_seaweedfs_filer_refuses_unsigned_http_while_s3_with_keys_works(tmp_path: Path) -> None:
    """``weed mini`` as the stack starts it: every port on 127.0.0.1; the filer's HTTP port refuses an
    unsigned write (and read) and a volume server an upload without a master token, while S3 with the
    stack's keys reads and writes. What stays open on loopback is documented in infra/README.md."""
    import boto3

    config = stack.load_config()
    names = [n for n in stack.ports(config) if n.startswith("s3.")]
    for name, port in zip(names, _free_ports(len(names)), strict=True):
        config["s3"][name.split(".")[1]] = port
    cmd, extra = stack.commands(config, tmp_path)["s3"]
    jwt_keys = [v for k, v in extra.items() if k.startswith("WEED_JWT_")]
    assert "-ip.bind=127.0.0.1" in cmd and len(jwt_keys) == 3 and not any(v in " ".join(cmd) for v in jwt_keys)
    assert (tmp_path / "data" / "weed-jwt.env").stat().st_mode & 0o777 == 0o600
    log = tmp_path / "weed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env={**os.environ, **extra}, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not stack._s3_ok(config, tmp_path):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        filer = f"http://127.0.0.1:{config['s3']['filer_port']}"
        bucket = config["s3"]["buckets"][0]
        assert _request("PUT", f"{filer}/buckets/{bucket}/planted.txt", b"x") == 401
        assert _request("POST", f"{filer}/planted.txt", b"x") == 401
        assert _request("GET", f"{filer}/buckets/{bucket}/") == 401

        keys = stack.credentials(tmp_path)
        s3 = boto3.client("s3", endpoint_url=stack.urls(config)["s3"], region_name="us-east-1",
                          aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])
        s3.put_object(Bucket=bucket, Key="ok.txt", Body=b"hello")
        assert s3.get_object(Bucket=bucket, Key="ok.txt")["Body"].read() == b"hello"
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["ok.txt"]

        # a volume server takes no upload without the token the master hands out with a file id
        with urllib.request.urlopen(f"http://127.0.0.1:{config['s3']['master_port']}/dir/assign", timeout=10) as r:
            assign = json.load(r)
        body = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nx\r\n--B--\r\n'
        upload = f"http://{assign['url']}/{assign['fid']}"
        assert _request("POST", upload, body, {"Content-Type": "multipart/form-data; boundary=B"}) == 401
    finally:
        stop_process_group(proc)
