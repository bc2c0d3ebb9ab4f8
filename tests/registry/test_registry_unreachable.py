"""An MLflow server that does not answer is an outage (exit 3, naming the server), never "no registered model":
`rewardline registry` must not list nothing with exit 0, `promote` must not say the version does not exist (exit 2),
and a ``models:/`` reference (the evaluate stage's champion) must not resolve to "no champion"."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.errors import ConfigError, TransientError
from rewardline.registry.mlflow_backend import MlflowRegistry
from rewardline.registry.names import CHAMPION, MODEL_NAME, model_uri

runner = CliRunner()


@pytest.fixture
def mlflow_uris_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """MlflowRegistry makes its URI MLflow's process-wide one (mlflow.set_registry_uri also exports
    MLFLOW_REGISTRY_URI): restored after the test, so later tests' default clients do not use this test's URI."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)


@pytest.fixture
def down_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_uris_restored: None) -> str:
    """``MLFLOW_TRACKING_URI`` of a loopback port nothing listens on; no retries, so that failing is quick."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)
    return uri


def test_registry_and_promote_on_a_server_that_is_down_exit_3_naming_it(down_uri: str):
    for args in (["registry"], ["promote", "--version", "1"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 3, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: cannot read registered model 'reward-model'"), lines
        assert f"the MLflow store at {down_uri} did not answer" in lines[0]


def test_a_registry_reference_on_a_server_that_is_down_is_an_outage_not_a_missing_model(down_uri: str):
    registry = MlflowRegistry()
    with pytest.raises(TransientError, match="did not answer"):
        registry.resolve_alias(MODEL_NAME, CHAMPION)
    with pytest.raises(TransientError, match="did not answer"):
        registry.load(model_uri(alias=CHAMPION))
    with pytest.raises(TransientError, match="did not answer"):
        registry.list_versions(MODEL_NAME)


def _reading_commands_say(uri: str, line: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With ``MLFLOW_TRACKING_URI=uri`` in ``tmp_path``, `registry`, `promote` and `score --model models:/...` each
    exit 2 printing ``line`` alone."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    for args in (["registry"], ["promote", "--version", "1"],
                 ["score", "--model", model_uri(), "--input", "in.jsonl", "--out", "out.jsonl"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.strip() == line, args


@pytest.mark.parametrize(("uri", "reason"), [("sqllite:///store.db", "unknown scheme 'sqllite'"),
                                             ("sqlite://store.db", "a malformed sqlite URL"),
                                             ("store.db", "a path, which MLflow reads as its retired file store")])
def test_a_tracking_uri_mlflow_cannot_open_is_a_usage_error_not_a_missing_model(
        uri: str, reason: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_uris_restored: None):
    """A typo in MLFLOW_TRACKING_URI exits 2 naming it (it read as "no registered model", so the evaluate stage
    skipped the champion gate; `sqlite://` was an internal error), and creates nothing."""
    from rewardline.registry.champion import resolved_model_dir

    line = (f"error: MLFLOW_TRACKING_URI={uri!r}: not a store MLflow can open ({reason}); expected http(s)://HOST:PORT "
            "(a server), sqlite:////ABSOLUTE/PATH.db or sqlite:///RELATIVE/PATH.db (docs/registry.md)")
    _reading_commands_say(uri, line, monkeypatch, tmp_path)
    with pytest.raises(ConfigError, match="not a store MLflow can open"), resolved_model_dir(model_uri()):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_a_tracking_uri_naming_a_sqlite_file_that_is_not_there_says_so(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path, mlflow_uris_restored: None):
    """``sqlite:///tmp/x.db`` (three slashes: relative to the current directory) listed nothing with exit 0 and
    read as "no registered model"; the commands that read the registry now name the file they did not find. A
    models:/ champion in a store not made yet is still no champion (a first run), and nothing is created."""
    from rewardline.registry.champion import resolved_champion, resolved_model_dir

    uri = "sqlite:///tmp/store.db"
    line = (f"error: MLFLOW_TRACKING_URI={uri!r}: no MLflow store there (no file {tmp_path / 'tmp/store.db'}: nothing "
            "was logged or registered there); a sqlite URI is sqlite:////ABSOLUTE/PATH.db or "
            "sqlite:///PATH/RELATIVE/TO/CWD.db")
    _reading_commands_say(uri, line, monkeypatch, tmp_path)
    with resolved_model_dir(model_uri()) as champion:
        assert champion is None
    with resolved_champion(model_uri(name="reward-modle")) as (champion, why):  # nothing registered: nothing close
        assert champion is None and why is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
