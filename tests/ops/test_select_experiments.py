"""``rewardline select``: rank DVC experiments by mean val accuracy over seeds, apply the best run.

The slow test runs a real grid (tiny backbone, ``dvc exp run --queue`` + ``--run-all``) in a fresh DVC
project and checks the selection against an oracle computed here from ``dvc exp show --json``, then that
``dvc exp apply`` put the selected run's params and model into the workspace."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rewardline.errors import BadInput
from rewardline.ops.experiments import ExperimentRun, group_configurations, parse_exp_show, summarize

FIXTURES = Path(__file__).parents[1] / "fixtures"
BIN = Path(sys.executable).parent


def _run(name: str, lr: float, seed: int, acc: float | None) -> ExperimentRun:
    metrics = {} if acc is None else {"val_accuracy": acc}
    return ExperimentRun(name, name * 5, {"train.lr": lr, "train.seed": seed, "train.epochs": 2}, metrics)


def test_the_best_mean_over_seeds_wins_not_the_luckiest_run():
    runs = [_run("a0", 1e-4, 0, 0.60), _run("a1", 1e-4, 1, 0.62), _run("a2", 1e-4, 2, 0.61),
            _run("b0", 5e-5, 0, 0.66), _run("b1", 5e-5, 1, 0.50), _run("b2", 5e-5, 2, 0.52),  # one lucky seed
            _run("c0", 2e-5, 0, None)]  # no metric (failed before writing it): left out
    configs = group_configurations(runs)
    assert [c.key for c in configs] == ["train.epochs=2 train.lr=0.0001", "train.epochs=2 train.lr=5e-05"]
    result = summarize(configs, "val_accuracy", {"val_accuracy": 0.55})
    assert result["selected"] == "a1" and result["selected_val_accuracy"] == 0.62
    assert result["configuration"] == "train.lr=0.0001" and result["configurations"][1]["train.lr"] == "5e-05"
    assert result["configuration_val_accuracy_mean"] == pytest.approx(0.61)
    assert result["configuration_val_accuracy_sd"] == pytest.approx(statistics.stdev([0.60, 0.62, 0.61]))
    assert result["configuration_n_seeds"] == 3 and result["baseline_val_accuracy"] == 0.55
    assert result["varied_params"] == ["train.lr", "train.seed"]
    assert result["configurations"][1]["val_accuracy_sd"] == pytest.approx(statistics.stdev([0.66, 0.50, 0.52]), 1e-3)


def test_failed_and_queued_experiments_are_ignored_and_none_left_is_bad_input():
    def exp(name: str, state: str, acc: float) -> dict:
        data = {"params": {"params.yaml": {"data": {"train": {"lr": 0.1, "seed": 0}}}},
                "metrics": {"metrics/train.json": {"data": {"val_accuracy": acc}}}}
        return {"name": name, "executor": {"state": state}, "revs": [{"rev": name * 8, "name": name, "data": data}]}

    rows = [{"rev": "workspace", "data": {"metrics": {}}},
            {"rev": "c0ffee", "data": {"metrics": {"metrics/train.json": {"data": {"val_accuracy": 0.5}}}},
             "experiments": [exp("failed", "failed", 0.9), exp("queued", "queued", 0.9), exp("ok", "success", 0.6)]}]
    runs, baseline, left_out = parse_exp_show(rows)
    assert [r.name for r in runs] == ["ok"]
    assert baseline == {"val_accuracy": 0.5, "metrics/train.json:val_accuracy": 0.5}
    assert left_out == ["failed (failed)", "queued (queued)"]  # named in the result: a whole configuration may fail
    assert runs[0].params == {"train.lr": 0.1, "train.seed": 0}
    with pytest.raises(BadInput, match=r"no finished experiment has a numeric 'val_accuracy' "
                                       r"\(left out: failed \(failed\), queued \(queued\)\): run the grid first"):
        summarize(group_configurations(runs[:0]), "val_accuracy", baseline, left_out=left_out)


# -- a real grid -----------------------------------------------------------------------------
DVC_YAML = """stages:
  train:
    cmd: rewardline -q --json train --data pairs --out model > train.json
    deps: [pairs]
    params: [train]
    outs: [model]
    metrics:
      - train.json:
          cache: false
"""
TRAIN = {"backbone": "tiny-bert", "max_length": 32, "batch_tokens": 1024, "max_steps": 6, "lr": 1e-5, "seed": 0,
         "warmup_ratio": 0.0, "checkpoint_every": 0, "checkpoint_dir": ".cache/ck", "progress": False}


def _sh(project: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    proc = subprocess.run(list(cmd), cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc


def _oracle(rows: list[dict]) -> tuple[str, float, float, float]:
    """Best lr by mean val accuracy over seeds, its best run, mean and sd: straight from exp show."""
    by_lr: dict[float, list[tuple[float, str]]] = {}
    for row in rows:
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                train = rev["data"]["params"]["params.yaml"]["data"]["train"]
                by_lr.setdefault(train["lr"], []).append((rev["data"]["metrics"]["train.json"]["data"]["val_accuracy"],
                                                          rev["name"]))
    lr = max(by_lr, key=lambda k: statistics.fmean(a for a, _ in by_lr[k]))
    scores = [a for a, _ in by_lr[lr]]
    best = min(by_lr[lr], key=lambda run: (-run[0], run[1]))  # ties: the lexically first name
    return best[1], lr, statistics.fmean(scores), statistics.stdev(scores)


@pytest.mark.slow
def test_select_promotes_the_best_configurations_best_run_of_a_real_grid(tmp_path: Path):
    project = tmp_path / "project"
    project.mkdir()
    sources = (str(FIXTURES / "hh_rlhf_30.jsonl"), str(FIXTURES / "alpacaeval_20x3.json"))
    _sh(tmp_path, "rewardline", "-q", "ingest", *sources, "--out", "ingested")
    _sh(tmp_path, "rewardline", "-q", "validate", "ingested", "--out", "validated")
    _sh(tmp_path, "rewardline", "-q", "pairs", "validated", "--out", str(project / "pairs"))
    (project / "params.yaml").write_text(yaml.safe_dump({"train": TRAIN}))
    (project / "dvc.yaml").write_text(DVC_YAML)
    (project / ".gitignore").write_text(".cache/\n")
    _sh(project, "git", "init", "-q")
    _sh(project, "dvc", "init", "-q")
    _sh(project, "git", "add", "-A")
    _sh(project, "git", "commit", "-qm", "tiny project")
    for lr, seed in ((1e-5, 0), (1e-5, 1), (3e-3, 0), (3e-3, 1)):  # a 2 x 2 grid: lr x seed
        _sh(project, "dvc", "exp", "run", "--queue", "-S", f"train.lr={lr}", "-S", f"train.seed={seed}")
    _sh(project, "dvc", "exp", "run", "--run-all")
    rows = json.loads(_sh(project, "dvc", "exp", "show", "--json").stdout)
    name, lr, mean, sd = _oracle(rows)

    result = json.loads(_sh(project, "rewardline", "--json", "select").stdout)

    assert result["selected"] == name and result["applied"] is True
    assert result["configuration_val_accuracy_mean"] == pytest.approx(mean)
    assert result["configuration_val_accuracy_sd"] == pytest.approx(sd)
    assert result["configuration_n_seeds"] == 2 and len(result["configurations"]) == 2
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == lr  # applied: params...
    applied = json.loads((project / "train.json").read_text())  # ...its metrics and its model
    assert applied["val_accuracy"] == pytest.approx(result["selected_val_accuracy"])
    assert (project / "model" / "model.safetensors").stat().st_size > 0


def test_select_outside_a_dvc_project_says_so(tmp_path: Path):
    """It printed "field 'dvc exp show --json': exited with 253: ..." as if a field of the input were wrong."""
    from rewardline.ops.experiments import exp_show

    with pytest.raises(BadInput) as err:
        exp_show(tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path}: `dvc exp show --json` exited with ") and "field" not in message
    assert "not inside of a DVC repository" in message and message.endswith(
        "; expected a DVC project with experiments (`dvc exp run`)"), message


def test_a_seed_param_no_experiment_has_is_bad_input_not_one_configuration_per_seed():
    """``--seed-param train.sed`` grouped nothing: every seed became its own configuration and a lucky seed won."""
    runs = [_run("a0", 1e-4, 0, 0.60), _run("a1", 1e-4, 1, 0.62), _run("b0", 5e-5, 0, 0.66), _run("b1", 5e-5, 1, 0.50)]
    with pytest.raises(BadInput, match=r"^--seed-param: 'train\.sed' is not a param of the experiments; "
                                       r"did you mean 'train\.seed'\?"):
        group_configurations(runs, seed_params=("train.seed", "train.sed"))
    assert [c.key for c in group_configurations(runs)] == ["train.epochs=2 train.lr=0.0001",
                                                           "train.epochs=2 train.lr=5e-05"]


@pytest.mark.parametrize("metric", ["val_acc", "metrics/train.json:val_accuracy"])
def test_a_metric_no_experiment_has_names_the_metrics_they_have(metric: str):
    """A typo in --metric said "no finished experiment has a numeric 'val_acc': run the grid first" to someone
    whose grid had run; dvc's FILE:KEY form (dvc exp show --sort-by) got the same."""
    runs = [_run("a0", 1e-4, 0, 0.60), _run("b0", 5e-5, 0, None)]
    runs[0].metrics["train_loss"] = 0.69
    with pytest.raises(BadInput) as err:
        group_configurations(runs, metric)
    assert str(err.value) == (f"--metric: {metric!r} is not a metric of the finished experiments; did you mean "
                              "'val_accuracy'? expected one of: train_loss, val_accuracy")


@pytest.mark.parametrize("first", ["a", "b"])
def test_equal_seed_scores_tie_whatever_order_the_runs_come_in(first: str):
    """The mean summed in run order: 0.1 + 0.2 + 0.3 != 0.3 + 0.2 + 0.1 in floats, so of two configurations with the
    same scores the one whose runs came in ascending order won, not the documented tie-break (then the name)."""
    ascending = [_run(f"{first}{i}", 1e-4 if first == "a" else 5e-5, i, acc) for i, acc in enumerate((0.1, 0.2, 0.3))]
    other = "b" if first == "a" else "a"
    descending = [_run(f"{other}{i}", 1e-4 if other == "a" else 5e-5, i, acc) for i, acc in enumerate((0.3, 0.2, 0.1))]
    configs = group_configurations(ascending + descending)
    assert configs[0].mean == configs[1].mean
    assert [c.key for c in configs] == ["train.epochs=2 train.lr=0.0001", "train.epochs=2 train.lr=5e-05"]


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_select_with_a_project_that_is_no_directory_is_bad_input(tmp_path: Path, kind: str):
    """--project /nope said "dvc not found: ... No such file or directory: '/nope'" and exited 3 (retryable)."""
    project = tmp_path / "nope"
    if kind == "file":
        project.write_text("")
    done = subprocess.run([str(BIN / "rewardline"), "select", "--project", str(project)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    expected = "no such directory" if kind == "missing" else "not a directory"
    assert done.stderr.strip() == f"error: {project}: {expected}; expected the DVC project's directory (--project)"


def test_the_spread_of_a_single_seed_is_unknown_not_zero():
    """One run per configuration reported sd 0.000: no seed noise at all, when nothing measured it."""
    runs = [_run("a0", 1e-4, 0, 0.60), _run("b0", 5e-5, 0, 0.55), _run("b1", 5e-5, 1, 0.57)]
    result = summarize(group_configurations(runs), "val_accuracy", None)
    assert result["selected"] == "a0" and result["configuration_val_accuracy_sd"] is None
    assert [row["val_accuracy_sd"] for row in result["configurations"]] == [None, pytest.approx(0.0141, abs=1e-4)]


def test_file_key_metric_names_pick_the_file_dvc_exp_show_names():
    """metrics/train.json and metrics/prm_train.json both hold val_accuracy: the name meant the first file's, and
    a PRM grid (-S prm.train.lr=...) could not be ranked on its own val accuracy at all."""
    def rev(name: str, lr: float, reward_val: float, prm_val: float) -> dict:
        metrics = {"metrics/train.json": {"data": {"val_accuracy": reward_val}},
                   "metrics/prm_train.json": {"data": {"val_accuracy": prm_val}}}
        params = {"params.yaml": {"data": {"prm": {"train": {"lr": lr, "seed": 0}}}}}
        return {"name": name, "revs": [{"rev": name * 8, "name": name, "data": {"params": params, "metrics": metrics}}]}

    rows = [{"rev": "c0ffee", "data": {}, "experiments": [rev("low", 1e-4, 0.6, 0.55), rev("high", 2e-4, 0.6, 0.70)]}]
    runs, _, _ = parse_exp_show(rows)
    assert runs[0].metrics["val_accuracy"] == 0.6  # a bare name: the first file's (dvc.yaml order)
    configs = group_configurations(runs, "metrics/prm_train.json:val_accuracy", ("prm.train.seed",))
    assert [c.runs[0].name for c in configs] == ["high", "low"]
    result = summarize(configs, "metrics/prm_train.json:val_accuracy", None, ("prm.train.seed",))
    assert result["selected"] == "high" and result["selected_metrics/prm_train.json:val_accuracy"] == 0.70
    with pytest.raises(BadInput, match=r"expected one of: val_accuracy \(or FILE:KEY: metrics/train.json:KEY, "
                                       r"metrics/prm_train.json:KEY\)"):
        group_configurations(runs, "val_acc", ("prm.train.seed",))


@pytest.mark.parametrize("metric", ["accuracy", "metrics/evaluate.json:accuracy", "train_accuracy"])
def test_a_metric_that_is_not_a_validation_metric_is_refused(metric: str):
    """``--metric accuracy`` ranked the runs on metrics/evaluate.json's TEST accuracy (and ``train_accuracy`` on the
    training split), though selection is documented to read val metrics only: the test split leaked into the choice."""
    def rev(name: str, lr: float, val: float, test: float) -> dict:
        metrics = {"metrics/train.json": {"data": {"val_accuracy": val, "val_loss": 1 - val, "train_accuracy": test}},
                   "metrics/evaluate.json": {"data": {"accuracy": test}}}
        params = {"params.yaml": {"data": {"train": {"lr": lr, "seed": 0}}}}
        return {"name": name, "revs": [{"rev": name * 8, "name": name, "data": {"params": params, "metrics": metrics}}]}

    rows = [{"rev": "c0ffee", "data": {}, "experiments": [rev("a", 1e-4, 0.6, 0.7), rev("b", 2e-4, 0.7, 0.6)]}]
    runs, _, _ = parse_exp_show(rows)
    with pytest.raises(BadInput) as err:
        group_configurations(runs, metric)
    key = metric.rsplit(":", 1)[-1]
    file = "metrics/train.json" if key == "train_accuracy" else "metrics/evaluate.json"
    assert str(err.value) == (f"--metric: {key!r} of {file} is not a validation metric: selection reads only val_* "
                              "metrics, so the test split stays untouched until the chosen model is evaluated; "
                              "expected one of: val_accuracy, val_loss")
    assert group_configurations(runs)[0].runs[0].name == "b"  # val_accuracy still ranks


def test_a_boolean_metric_is_no_score():
    """bool is an int in Python: a run whose metric was ``true`` ranked as 1.0 and beat every real accuracy, and
    ``--metric`` on a true/false metric ranked the runs on it instead of saying it is no number."""
    runs = [_run("a0", 1e-4, 0, 0.60), _run("b0", 5e-5, 0, True)]  # type: ignore[arg-type]  # what a JSON file holds
    configs = group_configurations(runs)
    assert [run.name for config in configs for run in config.runs] == ["a0"]
    flags = [_run("a0", 1e-4, 0, False), _run("b0", 5e-5, 0, True)]  # type: ignore[arg-type]
    with pytest.raises(BadInput, match=r"no finished experiment has a numeric 'val_accuracy'"):
        summarize(group_configurations(flags), "val_accuracy", None)


@pytest.mark.parametrize("metric", ["val_loss", "metrics/train.json:val_loss", "val_nll", "val_ece", "val_brier"])
def test_a_loss_is_minimised_not_maximised(metric: str):
    """``--metric val_loss`` selected the run with the HIGHEST val loss: the worst configuration was promoted."""
    runs = [ExperimentRun(name, name * 5, {"train.lr": lr, "train.seed": seed},
                          {metric: loss, "val_accuracy": 1 - loss})
            for name, lr, seed, loss in (("a0", 1e-4, 0, 0.40), ("a1", 1e-4, 1, 0.50), ("b0", 5e-5, 0, 0.70))]
    result = summarize(group_configurations(runs, metric), metric, None)
    assert result["selected"] == "a0" and result["direction"] == "lower is better"
    assert [row["runs"] for row in result["configurations"]] == ["a0,a1", "b0"]
    assert summarize(group_configurations(runs), "val_accuracy", None)["direction"] == "higher is better"
    assert summarize(group_configurations(runs, metric, higher_is_better=True), metric, None)["selected"] == "b0"
    assert summarize(group_configurations(runs, "val_accuracy", higher_is_better=False), "val_accuracy",
                     None)["selected"] == "b0"
