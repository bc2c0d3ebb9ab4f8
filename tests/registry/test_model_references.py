"""``--model models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) on every command that uses a model: the registered
bundle is downloaded and used as its directory would be; a URI that names nothing exits 2 saying what the registry
holds instead and how to get what was asked for, without creating an embedded store outside a project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import register_tiny_bundle
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.registry.names import CHALLENGER, model_uri

runner = CliRunner()
ROWS = [{"prompt": "What is 2+2?", "response": "4"}, {"prompt": "What is 2+2?", "response": "Five, I think."},
        {"prompt": "Name a colour.", "response": "Blue."}]


@pytest.fixture
def registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny model bundle registered as version 1 of ``reward-model`` with alias ``challenger`` (no champion);
    MLFLOW_TRACKING_URI points at its store. Returns the bundle directory."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    # this test's own store (MLflow's set_tracking_uri also sets the variable: monkeypatch puts it back afterwards)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    bundle = register_tiny_bundle(tmp_path, seed=3, reward_mean=0.25)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return bundle


def _rewards(path: Path) -> list[float]:
    return [json.loads(line)["reward"] for line in path.read_text().splitlines()]


def test_score_and_rerank_take_a_registry_uri_as_they_take_its_directory(registered: Path, tmp_path: Path):
    rows = str(tmp_path / "rows.jsonl")
    by_dir = runner.invoke(app, ["score", "--model", str(registered), "--input", rows, "--out", str(tmp_path / "d")])
    assert by_dir.exit_code == 0, by_dir.output
    for uri in (model_uri(alias=CHALLENGER), model_uri(version=1)):
        by_uri = runner.invoke(app, ["score", "--model", uri, "--input", rows, "--out", str(tmp_path / "u")])
        assert by_uri.exit_code == 0, by_uri.output
        assert _rewards(tmp_path / "u") == pytest.approx(_rewards(tmp_path / "d"), abs=1e-6)
    reranked = runner.invoke(app, ["rerank", "--model", model_uri(alias=CHALLENGER), "--input", rows,
                                   "--out", str(tmp_path / "r")])
    assert reranked.exit_code == 0, reranked.output
    assert sorted(_rewards(tmp_path / "r")) == pytest.approx(sorted(_rewards(tmp_path / "d")), abs=1e-6)


def test_evaluate_takes_a_registry_uri(registered: Path, tmp_path: Path):
    data = str(Path(__file__).parents[1] / "fixtures/hh_rlhf_30.jsonl")
    runs = {}
    for name, ref in (("dir", str(registered)), ("uri", model_uri(alias=CHALLENGER))):
        done = runner.invoke(app, ["evaluate", "--model", ref, "--data", data, "--format", "hh-rlhf",
                                   "--out", str(tmp_path / name)])
        assert done.exit_code in (0, 1), done.output  # 1: this untrained model may fail a gate; it was evaluated
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert runs["uri"]["n_pairs"] == runs["dir"]["n_pairs"] == 30
    assert runs["uri"]["accuracy"] == pytest.approx(runs["dir"]["accuracy"])


@pytest.mark.parametrize(("uri", "said"), [
    (model_uri(), ["'reward-model' has no alias 'champion'", "@challenger → version 1", "version 1)",
                   "rewardline promote --version N`"]),
    (model_uri(alias="staging"), ["no alias 'staging'", "rewardline promote --version N --alias staging`"]),
    (model_uri(version=7), ["'reward-model' has no version 7", "(version 1; @challenger → version 1)"]),
    (model_uri(name="nobody"), ["no registered model 'nobody'", "it holds: reward-model (choose one"]),
])
def test_a_uri_that_names_nothing_says_what_the_registry_holds(registered: Path, tmp_path: Path, uri: str,
                                                               said: list[str]):
    for command in (["score", "--input", str(tmp_path / "rows.jsonl")], ["export"]):
        result = runner.invoke(app, [*command, "--model", uri, "--out", str(tmp_path / "out")])
        assert result.exit_code == 2, result.output
        assert f"error: {uri}: " in result.output and "in the registry at sqlite:///" in result.output
        for text in said:
            assert text in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_outside_a_project_a_uri_names_the_store_it_looked_in_and_creates_none(tmp_path: Path):
    (tmp_path / "rows.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # a new user's shell, in a new process
    result = subprocess.run([str(Path(sys.executable).parent / "rewardline"), "score", "--model", model_uri(),
                             "--input", "rows.jsonl", "--out", "out.jsonl"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert f"no registered model 'reward-model' in the registry at sqlite:///{tmp_path / 'mlflow.db'}" in result.stderr
    assert "cd to it or set MLFLOW_TRACKING_URI" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]  # no store made, no output


def test_a_served_alias_is_named_with_the_version_it_points_to(registered: Path):
    from rewardline.registry.champion import pinned

    label = "models:/reward-model@challenger (version 1)"
    assert pinned(model_uri(alias=CHALLENGER)) == ("models:/reward-model/1", label)
    assert pinned(model_uri(version=1)) == ("models:/reward-model/1", "models:/reward-model/1")
    assert pinned(str(registered)) == (str(registered), str(registered))
    assert pinned(model_uri()) == (model_uri(), model_uri())  # no champion: model_dir says so


def test_a_champion_name_close_to_a_registered_one_skips_the_gate_saying_did_you_mean(registered: Path, tmp_path: Path):
    """``models:/reward-modle@champion`` read as "no champion registered": the champion gate skipped silently. It still
    skips (a new model's name is no error), but the gate's reason and stderr say which registered name is close."""
    data = str(Path(__file__).parents[1] / "fixtures/hh_rlhf_30.jsonl")
    done = runner.invoke(app, ["evaluate", "--model", str(registered), "--data", data, "--format", "hh-rlhf",
                               "--champion", "models:/reward-modle@champion", "--out", str(tmp_path / "ev")])
    assert done.exit_code in (0, 1), done.output
    gate = json.loads((tmp_path / "ev" / "gates.json").read_text())["gates"]["champion_non_inferiority"]
    said = "no registered model 'reward-modle' in the registry at sqlite:///"
    assert gate["skipped"] and gate["reason"].startswith("no champion: ") and said in gate["reason"]
    assert "did you mean 'reward-model'?" in gate["reason"]
    assert "WARNING" in done.output and f"--champion models:/reward-modle@champion: {said}" in done.output  # stderr
