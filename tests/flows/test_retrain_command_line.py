"""`python -m flows.retrain run | serve`: each sub-command takes its own options and says so in its --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def retrain_command(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.retrain", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)


@pytest.mark.parametrize(("args", "unknown"), [(("serve", "--force"), "--force"), (("run", "--name", "x"), "--name x")])
def test_an_option_of_the_other_sub_command_is_a_usage_error(args: tuple[str, ...], unknown: str, tmp_path: Path):
    """`serve --force` served the schedule without forcing anything, `run --name x` ran without a word: both options
    were accepted by either sub-command and ignored by the one that does not use them. (A project that does not
    exist: should the options be accepted again, the command fails at once instead of running a flow here.)"""
    done = retrain_command(*args, "--project", str(tmp_path / "absent"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"python -m flows.retrain: error: unrecognized arguments: {unknown}" in done.stderr


def test_each_sub_command_has_its_own_help():
    run = retrain_command("run", "--help")
    assert run.returncode == 0 and run.stdout.startswith("usage: python -m flows.retrain run [-h] [--force]")
    assert "--name" not in run.stdout
    serve = retrain_command("serve", "--help")
    assert serve.returncode == 0 and serve.stdout.startswith("usage: python -m flows.retrain serve [-h] [--name NAME]")
    assert "--force" not in serve.stdout


def test_the_champion_download_prints_no_progress_bar_off_a_terminal(tmp_path: Path, capfd: pytest.CaptureFixture,
                                                                       monkeypatch: pytest.MonkeyPatch):
    """Was: `python -m flows.retrain run` from cron mailed MLflow's 'Downloading artifacts' bar (a line of carriage
    returns per file of the champion's bundle), where `rewardline` commands show it on a terminal only. The flows'
    command-line entry now applies the same rule: stderr not a terminal, no bar."""
    from conftest import register_tiny_bundle

    from flows.command_line import run_flow_command
    from rewardline.registry import open_registry
    from rewardline.registry.names import CHALLENGER, MODEL_NAME, model_uri

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")  # restored to absent at the end
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    register_tiny_bundle(tmp_path, seed=0)
    capfd.readouterr()
    loaded = []
    run_flow_command(lambda: loaded.append(open_registry().load(model_uri(MODEL_NAME, CHALLENGER), tmp_path / "dl")))
    assert loaded[0] is not None and (loaded[0] / "reward_config.json").is_file()
    assert "Downloading artifacts" not in capfd.readouterr().err
