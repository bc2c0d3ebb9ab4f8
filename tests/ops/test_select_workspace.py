"""``rewardline select`` and the workspace it applies into: ``dvc exp apply`` overwrites every tracked file the
experiment's commit holds, so uncommitted edits must stop it, while the previous selection's own changes must not.

The project is a real git + DVC project whose ``train`` stage writes ``val_accuracy`` from its params with a one-line
script (no model), and its experiments are real ``dvc exp run --temp`` runs: seconds, not minutes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rewardline.errors import BadInput
from rewardline.ops.experiments import select_experiment

BIN = Path(sys.executable).parent
WRITE_METRIC = ("python -c \"import json, yaml; p = yaml.safe_load(open('params.yaml'))['train']; "
                "json.dump({'val_accuracy': p['lr'] / 10 + p['seed'] / 100} if p['lr'] else {'val_loss': 1}, "
                "open('m.json', 'w')); open('model.txt', 'w').write(str(p['lr']))\"")
DVC_YAML = {"stages": {"train": {"cmd": WRITE_METRIC, "params": ["train"], "outs": ["model.txt"],
                                 "metrics": [{"m.json": {"cache": False}}]}}}


def _sh(project: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    proc = subprocess.run(list(cmd), cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert not check or proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed project with two finished experiments: lr=2 (val 0.2) and lr=3 (val 0.3, the winner)."""
    project = tmp_path_factory.mktemp("grid") / "project"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 1, "seed": 0}}))
    (project / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    (project / "NOTES.md").write_text("notes\n")
    _sh(project, "git", "init", "-q")
    _sh(project, "dvc", "init", "-q")
    _sh(project, "git", "add", "-A")
    _sh(project, "git", "commit", "-qm", "project")
    for lr in (2, 3):
        _sh(project, "dvc", "exp", "run", "--temp", "-S", f"train.lr={lr}", "-n", f"lr{lr}")
    return project


@pytest.fixture
def project(grid: Path, tmp_path: Path) -> Path:
    """A fresh copy of the grid's project (its git refs hold the experiments)."""
    return Path(shutil.copytree(grid, tmp_path / "project", symlinks=True))


def test_select_refuses_to_apply_over_uncommitted_edits(project: Path):
    """``dvc exp apply`` replaced NOTES.md with the committed version: the edit was lost, exit 0."""
    (project / "NOTES.md").write_text("notes\nmy uncommitted edit\n")

    done = _sh(project, "rewardline", "select", check=False)

    assert done.returncode == 2, done.stdout + done.stderr
    message = done.stderr.strip()
    assert "NOTES.md" in message and "lr3" in message and "--dry-run" in message and "Traceback" not in message
    assert (project / "NOTES.md").read_text() == "notes\nmy uncommitted edit\n"  # the edit is still there
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == 1  # nothing applied
    assert select_experiment(project, apply=False)["selected"] == "lr3"  # ranking alone still works


def test_select_again_after_a_failed_apply(project: Path):
    """``dvc exp apply`` that fails at checkout (an output not in the cache) has already written the run's params
    and metrics, and records nothing: the next select refused, calling them uncommitted changes it would overwrite."""
    rev = select_experiment(project, apply=False)["selected_rev"]
    _sh(project, "git", "checkout", rev, "--", "params.yaml")  # what the failed apply left in the workspace

    assert select_experiment(project)["applied"] is True
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == 3


def test_an_apply_that_cannot_check_out_the_model_names_it_and_what_was_applied(project: Path):
    """With the run's model not in the DVC cache, ``dvc exp apply`` wrote its params and metrics, not its model,
    and select passed on dvc's "Checkout failed for following targets: ... Is your cache up to date?"."""
    shutil.rmtree(project / ".dvc" / "cache")

    with pytest.raises(BadInput) as err:
        select_experiment(project)

    assert str(err.value) == (f"{project}: `dvc exp apply lr3` wrote the run's params and metrics but could not "
                              "check out model.txt (not in the DVC cache), so the workspace lacks them; `dvc pull` "
                              "them (or `dvc repro` their stages), then select again")
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == 3


def test_select_names_the_experiments_it_left_out(project: Path):
    """A queued experiment and one without val_accuracy vanished from the ranking without a word."""
    _sh(project, "dvc", "exp", "run", "--temp", "-S", "train.lr=0", "-n", "lr0")  # writes no val_accuracy
    _sh(project, "dvc", "exp", "run", "--queue", "-S", "train.lr=5", "-n", "lr5")  # no worker: stays queued

    result = select_experiment(project, apply=False)

    assert result["selected"] == "lr3" and [c["runs"] for c in result["configurations"]] == ["lr3", "lr2"]
    assert result["left_out"] == ["lr0 (no val_accuracy)", "lr5 (queued)"]


def test_select_twice_replaces_its_own_selection_but_not_edits_made_after_it(project: Path):
    assert select_experiment(project)["selected"] == "lr3"
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == 3
    assert select_experiment(project)["selected"] == "lr3"  # the dirty files are the applied run's own

    params = yaml.safe_load((project / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump({"train": {**params["train"], "seed": 7}}))
    with pytest.raises(BadInput, match="params.yaml"):
        select_experiment(project)
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["seed"] == 7


def test_lower_is_better_picks_the_lowest(project: Path):
    """``--lower-is-better`` (the default for ``val_loss``) ranks the lowest mean first: lr2's val_accuracy 0.2."""
    done = _sh(project, "rewardline", "--json", "select", "--dry-run", "--lower-is-better")

    result = json.loads(done.stdout)
    assert result["selected"] == "lr2" and result["direction"] == "lower is better"
    assert [c["runs"] for c in result["configurations"]] == ["lr2", "lr3"]
