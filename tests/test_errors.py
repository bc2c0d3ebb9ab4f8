"""The exit-code contract (rewardline/errors.py): which failure leaves with which code, and what it prints."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rewardline.errors import (
    BadInput,
    ConfigError,
    GateFailed,
    ModelLoadError,
    NonFiniteLoss,
    TransientError,
    describe,
    exit_code,
)
from rewardline.ops.storage import StorageError, StorageNotFound

ROOT = Path(__file__).parents[1]


def raised(make_error, cause: BaseException | None = None, during: BaseException | None = None) -> BaseException:
    """The exception as a handler gets it: raised ``from cause``, or while handling ``during``."""
    try:
        if during is None:
            raise make_error() from cause
        try:
            raise during
        except BaseException:
            raise make_error()  # noqa: B904 - the implicit __context__ is the point
    except BaseException as err:  # noqa: BLE001
        return err


def botocore_endpoint_error() -> BaseException:
    from botocore.exceptions import EndpointConnectionError

    return EndpointConnectionError(endpoint_url="http://127.0.0.1:1/bucket")


def s3_no_such_key() -> BaseException:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": "NoSuchKey", "Message": "The specified key does not exist."}}, "GetObject")


@pytest.mark.parametrize(("error", "code"), [
    (GateFailed("evaluate gate failed (1 of 5)"), 1),
    (ConfigError("train.lr: -1 is not > 0"), 2),
    (BadInput("in.jsonl", line=3, field="response", expected="a string", got="null"), 2),
    (ModelLoadError("m/model.safetensors", detail="truncated"), 2),
    (NonFiniteLoss(3, float("nan"), float("inf"), 1e30), 2),
    (ValueError("invalid literal for int() with base 10: 'x'"), 2),  # parsing user data
    (FileNotFoundError(2, "No such file or directory", "data/raw/x.jsonl"), 2),
    (StorageNotFound("listing /nope failed: no such file or directory"), 2),
    # a file this user cannot read, a folder it cannot write, met mid-run: a retry fails the same (was 3, retried)
    (PermissionError(13, "Permission denied", "models/reward-model"), 2),
    (PermissionError(1, "Operation not permitted", "data/raw"), 2),
    (OSError(30, "Read-only file system", "metrics/ingest.json"), 2),
    (OSError(28, "No space left on device"), 3),
    (ConnectionError("connection refused"), 3),
    (TimeoutError("timed out"), 3),
    (socket.gaierror(-2, "Name or service not known"), 3),
    (TransientError("mlflow server down"), 3),
    (KeyError("response"), 3),  # a bug: internal error
    (TypeError("unsupported operand"), 3),
])
def test_each_failure_has_the_contracts_exit_code(error: BaseException, code: int):
    assert exit_code(raised(lambda: error)) == code


def test_the_cause_decides_for_wrapped_errors():
    # storage wraps botocore: an endpoint down is transient, a missing key is bad input
    assert exit_code(raised(lambda: StorageError("reading s3://b/k failed"), cause=botocore_endpoint_error())) == 3
    assert exit_code(raised(lambda: StorageError("reading s3://b/k failed"), cause=s3_no_such_key())) == 2
    assert exit_code(raised(lambda: StorageError("reading x failed"), cause=FileNotFoundError(2, "gone"))) == 2
    assert exit_code(raised(lambda: StorageError("reading x failed"), cause=PermissionError(13, "denied", "x"))) == 2
    # a permission error met while handling a network failure is still the outage
    assert exit_code(raised(lambda: PermissionError(13, "denied"), during=ConnectionError("refused"))) == 3
    assert exit_code(botocore_endpoint_error()) == 3
    # MLflow raises its own exception while handling the connection error (implicit context)
    assert exit_code(raised(lambda: RuntimeError("API request to http://127.0.0.1:1 failed"),
                            during=ConnectionError("refused"))) == 3
    # MLflow: a refused request is bad input, an unreachable server (its cause) an outage
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    assert exit_code(MlflowException("no version 99", error_code=RESOURCE_DOES_NOT_EXIST)) == 2
    assert exit_code(raised(lambda: MlflowException("API request to http://127.0.0.1:1 failed"),
                            during=ConnectionError("Max retries exceeded"))) == 3
    # a missing file only counts when it is the cause, not a caught one nearby
    assert exit_code(raised(lambda: KeyError("bug"), during=FileNotFoundError(2, "cache miss"))) == 3
    # a file missing because the network failed while fetching it (transformers' OSError from the Hub's cache miss,
    # raised while handling the refused connection) is an outage; the same miss with no network failure is bad input
    cache_miss = raised(lambda: FileNotFoundError(2, "not in the cache"), during=ConnectionError("refused"))
    assert exit_code(raised(lambda: OSError("We couldn't connect to the Hub"), cause=cache_miss)) == 3
    assert exit_code(raised(lambda: OSError("not cached"), cause=FileNotFoundError(2, "not in the cache"))) == 2
    # an S3 answer (it carries a response) is not a network failure
    assert exit_code(raised(lambda: FileNotFoundError(2, "s3://b/k"), during=s3_no_such_key())) == 2


def test_messages_are_one_line_and_internal_errors_say_so():
    code, text = describe(BadInput("in.jsonl", line=2, field="response", expected="a string", got="null"))
    assert (code, text) == (2, "error: in.jsonl:2: field 'response': expected a string, got null")
    code, text = describe(raised(lambda: KeyError("pooling")))
    assert code == 3 and text.startswith("internal error: KeyError: 'pooling'") and "\n" not in text
    assert "--verbose" in text
    code, text = describe(raised(lambda: ValueError("first line\n  second line")))
    assert (code, text) == (2, "error: first line; second line")
    code, text = describe(raised(lambda: KeyError("pooling")), verbose=True)
    assert text.startswith("Traceback (most recent call last):")
    assert text.endswith("internal error: KeyError: 'pooling'")
    gate = "evaluate gate failed (1 of 2)\n  - min_accuracy: 0.51 is not >= 0.60"
    assert describe(GateFailed(gate)) == (1, gate)  # the gate report's lines are kept


STAGE = """
import sys
from rewardline.stage import stage_main

def main():
    kind = sys.argv[1]
    if kind == "oserror":
        with open("/dev/full", "w") as full:  # a real OSError from the OS: ENOSPC, disk full
            full.write("x")
    if kind == "bug":
        {}["missing"]
    print("ran")

stage_main(main)
"""


@pytest.mark.parametrize(("kind", "code", "first_words"), [
    ("ok", 0, None),
    ("oserror", 3, "error: [Errno 28] No space left on device"),
    ("bug", 3, "internal error: KeyError"),
])
def test_stage_main_exits_with_the_contracts_code(tmp_path: Path, kind: str, code: int, first_words: str | None):
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent(STAGE))
    run = subprocess.run([sys.executable, str(script), kind], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert run.returncode == code, run.stderr
    if first_words:
        assert run.stderr.startswith(first_words) and len(run.stderr.strip().splitlines()) == 1, run.stderr
    verbose = subprocess.run([sys.executable, str(script), "bug"], cwd=tmp_path, capture_output=True, text=True,
                             env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "REWARDLINE_VERBOSE": "1"})
    assert verbose.returncode == 3 and verbose.stderr.startswith("Traceback") and 'stage.py", line' in verbose.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_s3_endpoint_that_is_down_exits_3_in_the_stage_and_the_cli(tmp_path: Path):
    """A real stage script (stages/ingest.py) and `rewardline ingest` on an S3 source whose endpoint refuses."""
    (tmp_path / "params.yaml").write_text("ingest:\n  sources: [{path: 's3://bucket/rankings/', format: rankings}]\n")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1", "REWARDLINE_S3_MAX_ATTEMPTS": "1"}
    stage_first = "error: params.yaml: ingest.sources[0].path: checking the bucket of s3://bucket/rankings/ failed"
    for command, first in (([str(ROOT / "stages" / "ingest.py")], stage_first),  # the stage names the params key
                           (["-m", "rewardline.cli", "ingest", "s3://bucket/rankings/", "--out", "out"],
                            "error: listing s3://bucket/rankings/ failed")):
        run = subprocess.run([sys.executable, *command], cwd=tmp_path, capture_output=True, text=True, env=env,
                             timeout=120)
        assert run.returncode == 3, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(first), run.stderr
