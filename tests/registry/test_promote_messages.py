"""`rewardline promote --version V` on a version that is not there says where it looked and what the registry holds
(as every ``--model models:/...`` does), a version that is not a number is a usage error, and ``01`` is version 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import register_tiny_bundle
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.registry import open_registry
from rewardline.registry.names import MODEL_NAME

runner = CliRunner()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Version 1 of ``reward-model`` (gates passed, alias ``challenger``) in a sqlite store; returns its URI."""
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    register_tiny_bundle(tmp_path, seed=5)
    return uri


def _error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (args, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_promote_to_a_missing_version_or_model_names_the_store_and_what_it_holds(store: str):
    missing = _error(["promote", "--version", "9"])
    assert f"'reward-model' has no version 9 in the registry at {store}" in missing
    assert "version 1; @challenger → version 1" in missing
    unknown = _error(["promote", "--version", "1", "--name", "nope"])
    assert f"no registered model 'nope' in the registry at {store}; it holds: reward-model" in unknown


def test_registry_of_a_name_that_is_not_registered_exits_2_naming_the_ones_there_are(store: str, tmp_path: Path):
    line = _error(["registry", "--name", "nope"])
    assert line == (f"error: no registered model 'nope' in the registry at {store}; it holds: reward-model "
                    "(choose one with --name or in the URI)")
    open_registry().register("other-model", tmp_path / "bundle", {"gates_passed": "true"})
    assert "it holds: other-model, reward-model" in _error(["registry", "--name", "reward-modle"])
    listed = runner.invoke(app, ["--json", "registry", "--name", "other-model"])
    assert listed.exit_code == 0, listed.output
    assert [v["version"] for v in json.loads(listed.output)["versions"]] == [1]


def test_promote_to_an_alias_mlflow_refuses_names_the_alias(store: str):
    assert _error(["promote", "--version", "1", "--alias", "v2"]) == "error: alias 'v2': Version alias name 'v2' " \
                                                                    "is reserved."
    assert "alias 'my alias': Invalid alias name" in _error(["promote", "--version", "1", "--alias", "my alias"])


def test_a_bad_register_setting_names_the_params_file_it_came_from(store: str, tmp_path: Path):
    params = tmp_path / "release.yaml"
    params.write_text("register: {alias: v1}\n")
    line = _error(["register", "--project", str(tmp_path), "--params", str(params)])
    assert line == f"error: {params}: register.alias: 'v1' Version alias name 'v1' is reserved.", line


def test_promote_version_must_be_a_number_and_is_normalised(store: str):
    for bad in ("abc", "0", "-1"):
        assert "expected a model version number" in _error(["promote", "--version", bad])
    moved = runner.invoke(app, ["--json", "promote", "--version", "01"])
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.output)["version"] == 1  # normalised, and an int as `registry --json` prints versions
    assert open_registry().resolve_alias(MODEL_NAME, "champion") == "1"


def test_a_model_uri_with_a_name_alone_asks_for_a_version_or_alias(store: str, tmp_path: Path):
    for command in (["export", "--model", "models:/reward-model", "--out", str(tmp_path / "hf")],
                    ["score", "--model", "models:/reward-model/", "--input", "x.jsonl", "--out", str(tmp_path / "s")]):
        line = _error(command)
        assert "names no version or alias; expected models:/reward-model@ALIAS (e.g. models:/reward-model@champion) " \
               "or models:/reward-model/VERSION" in line, line
    assert not (tmp_path / "hf").exists()


def test_promoting_a_version_without_a_gates_passed_tag_says_it_has_none(store: str, tmp_path: Path):
    registry = open_registry()
    untagged = registry.register(MODEL_NAME, tmp_path / "bundle", {"note": "by hand"}).version
    result = runner.invoke(app, ["promote", "--version", untagged])
    assert result.exit_code == 1, result.output
    assert f"refusing to make version {untagged} of 'reward-model' the champion: it has no gates_passed tag " \
           "(registered outside the register stage, its gates unknown); use --force to promote anyway" in result.output
    assert registry.resolve_alias(MODEL_NAME, "champion") is None


def test_registry_json_gives_numbers_as_numbers_and_flags_as_booleans(store: str, tmp_path: Path):
    """``rewardline --json registry`` printed ``"aliases": {"challenger": "1"}`` beside ``"version": 1``,
    ``"gates_passed": "true"`` and ``"temperature": "1.0"``: the registry tags' strings, so a script's
    ``summary["aliases"]["champion"] == version["version"]`` was never true and ``if version["gates_passed"]``
    held for ``"false"`` too."""
    registry = open_registry()
    bundle = tmp_path / "bundle"
    config = json.loads((bundle / "reward_config.json").read_text())
    (bundle / "reward_config.json").write_text(json.dumps({**config, "objective": "thurstone", "link": "probit",
                                                           "anchored": False, "residual_sd": 0.5}))
    from rewardline.registry.bundle import calibration_tags

    registry.register(MODEL_NAME, bundle, {"gates_passed": "false", **calibration_tags(bundle)})
    registry.register(MODEL_NAME, bundle, {})  # registered by hand: no gates_passed tag
    listed = runner.invoke(app, ["--json", "registry"])
    assert listed.exit_code == 0, listed.output
    summary = json.loads(listed.output)
    assert summary["aliases"] == {"challenger": 1}
    assert [(v["version"], v["gates_passed"]) for v in summary["versions"]] == [(1, True), (2, False), (3, None)]
    assert summary["versions"][0]["calibration"] == {"objective": "bt", "temperature": 1.0}
    assert summary["versions"][1]["calibration"] == {"anchored": False, "link": "probit", "objective": "thurstone",
                                                     "residual_sd": 0.5, "temperature": 1.0}
    assert isinstance(summary["versions"][0]["created"], str)  # ISO-8601 UTC, as the human listing shows it



def test_promote_json_gives_the_version_numbers_as_registry_json_does(store: str):
    """``rewardline --json promote`` printed ``"version": "1"`` while ``registry --json`` prints ``"version": 1``."""
    first = runner.invoke(app, ["--json", "promote", "--version", "01"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["version"] == 1 and json.loads(first.output)["previous_version"] is None
    again = json.loads(runner.invoke(app, ["--json", "promote", "--version", "1"]).output)
    assert (again["version"], again["previous_version"]) == (1, 1)
    assert json.loads(runner.invoke(app, ["--json", "registry"]).output)["aliases"]["champion"] == again["version"]
