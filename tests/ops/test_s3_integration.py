"""S3 end to end against real SeaweedFS servers: multipart writes, ingest from a prefix, a server
killed mid-upload, a DVC remote round trip and MLflow artifacts proxied into the bucket."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import S3_BUCKET, S3_CREDENTIALS, WeedProcess, _free_ports

from rewardline.data.ingest import IngestConfig, Source, run_ingest
from rewardline.ops import storage

BIN = Path(sys.executable).parent


@pytest.fixture
def small_parts() -> Iterator[storage.S3Settings]:
    """Multipart from 6 MiB up, 5 MiB parts; the module settings restored afterwards."""
    before = storage._settings
    yield storage.configure(multipart_threshold=6 * storage.MIB, multipart_chunksize=5 * storage.MIB)
    storage._settings = before


def _boto(endpoint: str):  # noqa: ANN202
    import boto3

    keys = {"aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"]}
    keys["aws_secret_access_key"] = S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys)


def _uploads(client, bucket: str) -> list[dict]:
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_multipart_write_round_trip(s3_env, small_parts, tmp_path: Path) -> None:
    payload = os.urandom(13 * storage.MIB + 123)  # 3 parts, the last one short
    src = tmp_path / "big.bin"
    src.write_bytes(payload)
    uri = f"s3://{s3_env.bucket}/multipart/big.bin"
    seen: list[int] = []
    storage.upload_file(src, uri, progress=seen.append)
    assert sorted(seen) == [123 + 3 * storage.MIB, 5 * storage.MIB, 5 * storage.MIB]
    assert storage.exists(uri) and storage.read_bytes(uri) == payload
    storage.write_bytes(f"s3://{s3_env.bucket}/multipart/from-bytes.bin", payload[: 7 * storage.MIB])
    assert storage.read_bytes(f"s3://{s3_env.bucket}/multipart/from-bytes.bin") == payload[: 7 * storage.MIB]
    storage.download_file(uri, tmp_path / "back" / "big.bin")
    assert (tmp_path / "back" / "big.bin").read_bytes() == payload
    assert list((tmp_path / "back").iterdir()) == [tmp_path / "back" / "big.bin"]  # no temp file left
    assert not any(u["Key"].startswith("multipart/") for u in _uploads(_boto(s3_env.endpoint_url), s3_env.bucket))


def test_local_writes_are_atomic(tmp_path: Path) -> None:
    target = tmp_path / "out" / "x.bin"
    with pytest.raises(storage.StorageError, match="x.bin"):
        storage.upload_file(tmp_path / "missing", str(target))
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []  # no temp file either
    storage.write_bytes(str(target), b"v1")
    storage.write_bytes(str(target), b"v2")
    assert target.read_bytes() == b"v2" and len(list((tmp_path / "out").iterdir())) == 1
    assert storage.exists(str(target)) and not storage.exists(str(tmp_path / "nope"))


def test_configure_and_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    before = storage._settings
    try:
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        storage.configure(endpoint_url="http://127.0.0.1:1", max_attempts=2)
        assert storage.endpoint_url() == "http://127.0.0.1:1" and storage.settings().max_attempts == 2
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
        monkeypatch.setenv("REWARDLINE_S3_MAX_ATTEMPTS", "7")
        assert storage.endpoint_url() == "http://127.0.0.1:2" and storage.settings().max_attempts == 7
        with pytest.raises(ValueError, match="minimum part size"):
            storage.configure(multipart_chunksize=1024)
    finally:
        storage._settings = before


def test_ingest_from_s3_prefix(s3_env, fixtures_dir: Path, tmp_path: Path) -> None:
    prefix = f"s3://{s3_env.bucket}/inbox/batch-1/"
    names = ["hh_rlhf_30.jsonl", "rankings_nested.jsonl"]
    for name in names:
        storage.upload_file(fixtures_dir / name, prefix + name)
    metrics = run_ingest(IngestConfig(sources=[Source(path=prefix)]), tmp_path / "ingested")
    local = run_ingest(
        IngestConfig(sources=[Source(path=str(fixtures_dir / n)) for n in names]), tmp_path / "ingested-local"
    )
    assert metrics["rows_in"] == local["rows_in"] > 0
    assert metrics["rows_quarantined"] == local["rows_quarantined"]
    assert (tmp_path / "ingested" / "rankings" / "part-000.parquet").exists()


def test_server_killed_mid_upload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill the S3 server after the first part: bounded retries, a clear error, nothing visible after restart."""
    weed = WeedProcess(tmp_path / "weed", buckets=(S3_BUCKET,))
    weed.data_dir.mkdir()
    before = storage._settings
    try:
        weed.start()
        for key, value in weed.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        storage.configure(
            multipart_threshold=6 * storage.MIB,
            multipart_chunksize=5 * storage.MIB,
            max_concurrency=1,
            max_attempts=3,
            connect_timeout=1,
            read_timeout=2,
        )
        src = tmp_path / "big.bin"
        src.write_bytes(os.urandom(40 * storage.MIB))
        uri = f"s3://{S3_BUCKET}/models/big.bin"
        killed = threading.Event()

        def kill_after_first_part(_: int) -> None:
            if not killed.is_set():
                weed.kill()
                killed.set()

        errors: list[BaseException] = []

        def upload() -> None:
            try:
                storage.upload_file(src, uri, progress=kill_after_first_part)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                errors.append(err)

        started = time.monotonic()
        worker = threading.Thread(target=upload)
        worker.start()
        worker.join(timeout=120)
        elapsed = time.monotonic() - started
        assert not worker.is_alive(), "upload did not give up"
        assert killed.is_set()
        [error] = errors
        assert isinstance(error, storage.StorageError)
        assert uri in str(error) and "not visible" in str(error)
        assert elapsed < 60, f"retries took {elapsed:.0f} s"

        weed.start()  # same ports, same data dir
        client = weed.client()
        assert not storage.exists(uri)
        assert storage.list_files(f"s3://{S3_BUCKET}/models/") == []
        # The dangling upload (if the server kept it) is invisible, and removable:
        storage.abort_incomplete_uploads(f"s3://{S3_BUCKET}/models/")
        assert _uploads(client, S3_BUCKET) == []
        assert not storage.exists(uri)
    finally:
        storage._settings = before
        weed.stop()


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.mark.slow
def test_dvc_push_pull_round_trip(s3_env, fixtures_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, **s3_env.env, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    env.pop("AWS_ENDPOINT_URL", None)  # the remote's endpointurl must be what dvc uses
    dvc = str(BIN / "dvc")
    _run(["git", "init", "-q"], repo, env)
    _run([dvc, "init", "-q"], repo, env)
    _run([dvc, "remote", "add", "-d", "storage", f"s3://{s3_env.bucket}/dvc"], repo, env)
    _run([dvc, "remote", "modify", "storage", "endpointurl", s3_env.endpoint_url], repo, env)
    config = (repo / ".dvc" / "config").read_text()
    assert "rewardline-test-secret" not in config and "access_key" not in config

    data = repo / "data" / "raw"
    shutil.copytree(fixtures_dir, data)
    original = {p.relative_to(data): p.read_bytes() for p in data.rglob("*") if p.is_file()}
    _run([dvc, "add", "data/raw"], repo, env)
    _run([dvc, "push"], repo, env)
    pushed = storage.list_files(f"s3://{s3_env.bucket}/dvc/")
    assert len(pushed) >= len(original)  # one object per file + the .dir manifest

    shutil.rmtree(data)
    shutil.rmtree(repo / ".dvc" / "cache")
    _run([dvc, "pull"], repo, env)
    pulled = {p.relative_to(data): p.read_bytes() for p in data.rglob("*") if p.is_file()}
    assert pulled == original


@pytest.mark.slow
def test_mlflow_artifacts_land_in_bucket(s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import requests
    from mlflow.tracking import MlflowClient

    port = _free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **s3_server.env, "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint_url}
    args = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{s3_server.bucket}/mlartifacts", "--serve-artifacts",
    ]  # fmt: skip
    with (tmp_path / "mlflow.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "mlflow server not healthy after 120 s"
            time.sleep(0.5)
        # The client has no S3 credentials at all: artifacts go through the server's proxy.
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
            monkeypatch.delenv(key, raising=False)
        tracking = MlflowClient(tracking_uri=url)
        experiment_id = tracking.create_experiment("s3-artifacts")
        run = tracking.create_run(experiment_id)
        run_id = run.info.run_id
        report = tmp_path / "report.txt"
        report.write_text("accuracy 0.7\n")
        tracking.log_artifact(run_id, str(report), artifact_path="eval")
        tracking.log_metric(run_id, "accuracy", 0.7)
        tracking.set_terminated(run_id)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")

        client = _boto(s3_server.endpoint_url)
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_server.bucket, Prefix="mlartifacts/")["Contents"]]
        [key] = [k for k in keys if k.endswith("eval/report.txt") and run_id in k]
        assert client.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read() == b"accuracy 0.7\n"
        local = tracking.download_artifacts(run_id, "eval", str(tmp_path / "dl"))
        assert (Path(local) / "report.txt").read_text() == "accuracy 0.7\n"
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)
