"""prefect.yaml's pull steps: real Prefect step functions with arguments they accept, nothing of the
deployer's machine baked in, and the clone-then-``dvc pull`` steps run for real (offline: a ``file://``
repository and a folder DVC remote) through Prefect's own ``run_steps``, as a worker runs them."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
RESERVED = {"id", "requires"}


def _spec() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def _step_function(fqn: str):  # noqa: ANN202
    module, name = fqn.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def test_every_pull_step_is_a_prefect_step_called_with_arguments_it_takes():
    deployments = {d["name"]: d for d in _spec()["deployments"]}
    assert set(deployments) == {"retrain-weekly", "pipeline", "retrain-weekly-local", "pipeline-local"}
    for name, deployment in deployments.items():
        steps = deployment["pull"]
        assert steps, name
        for step in steps:
            [(fqn, kwargs)] = step.items()
            inspect.signature(_step_function(fqn)).bind(**{k: v for k, v in kwargs.items() if k not in RESERVED})
        first = next(iter(steps[0]))
        expected = "set_working_directory" if name.endswith("-local") else "git_clone"
        assert first == f"prefect.deployments.steps.{expected}", name
        assert deployment["work_pool"]["name"] == "rewardline-process"
    assert "$PWD" not in (ROOT / "prefect.yaml").read_text()  # nothing of the deployer's shell


async def _same(value, *args, **kwargs):  # noqa: ANN001, ANN202
    return value


def _run_pull_steps(steps: list[dict], monkeypatch: pytest.MonkeyPatch) -> dict:
    """Prefect's ``run_steps`` as a worker runs them. Our steps hold no ``prefect.blocks`` / ``prefect.variables``
    placeholders (asserted), so the two resolvers that would ask a Prefect API are identity here; the
    ``{{ id.key }}`` and ``{{ $ENV }}`` templating and the step functions are Prefect's own."""
    from prefect.deployments.steps import core

    assert "prefect.blocks" not in str(steps) and "prefect.variables" not in str(steps)
    monkeypatch.setattr(core, "resolve_block_document_references", _same)
    monkeypatch.setattr(core, "resolve_variables", _same)
    return asyncio.run(core.run_steps(steps))


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=test", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.mark.slow
def test_clone_then_dvc_pull_brings_the_code_and_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bin_dir = Path(sys.executable).parent
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    source, remote, worker = tmp_path / "rewardline", tmp_path / "remote", tmp_path / "worker"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file() and name.startswith((".dvc/", "dvc.yaml", "params.yaml", "flows/", ".gitignore")):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    _git(source, "init", "-q", "-b", "main")
    sample = source / "data" / "sample.jsonl"
    sample.parent.mkdir(parents=True)
    sample.write_text('{"prompt": "2+2?", "response": "4"}\n')
    dvc = [str(bin_dir / "dvc")]
    subprocess.run([*dvc, "add", "data/sample.jsonl"], cwd=source, check=True, capture_output=True)
    subprocess.run([*dvc, "push", "-r", "local", "--", "data/sample.jsonl"], cwd=source, check=True,
                   capture_output=True, env={**os.environ})
    shutil.copytree(source / "dvc-remote", remote)  # the shipped default remote (.dvc/config) of the source
    _git(source, "add", "-A")
    _git(source, "commit", "-qm", "source")

    worker.mkdir()
    monkeypatch.chdir(worker)
    monkeypatch.setenv("REWARDLINE_GIT_URL", source.as_uri())
    monkeypatch.setenv("REWARDLINE_GIT_BRANCH", "main")
    monkeypatch.setenv("REWARDLINE_DVC_REMOTE", str(remote))
    deployment = next(d for d in _spec()["deployments"] if d["name"] == "retrain-weekly")
    output = _run_pull_steps(deployment["pull"], monkeypatch)
    clone = worker / "rewardline"
    assert (worker / output["directory"]).resolve() == clone.resolve(), output  # where the flow then runs
    assert (clone / "flows" / "retrain.py").is_file()
    assert (clone / "data" / "sample.jsonl").read_text() == sample.read_text()  # the data came from the remote
    assert str(remote) in (clone / ".dvc" / "config.local").read_text()
    assert (clone / ".dvc" / "config").read_text() == (ROOT / ".dvc" / "config").read_text()


def test_the_local_variant_runs_in_the_checkout_the_worker_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    here = Path.cwd()
    monkeypatch.setenv("REWARDLINE_PROJECT_DIR", str(tmp_path))
    deployment = next(d for d in _spec()["deployments"] if d["name"] == "retrain-weekly-local")
    try:
        output = _run_pull_steps(deployment["pull"], monkeypatch)
    finally:
        os.chdir(here)
    assert Path(output["directory"]) == tmp_path


def test_the_notification_automations_are_valid_and_do_not_page_on_a_rejection():
    """infra/prefect-automations.yaml parses as Prefect automations; one fires on the retrain flow's own
    Failed / Crashed (never on the pipeline subflow, which fails at a gate), one on a registered challenger."""
    import uuid

    from prefect.automations import AutomationCore

    from flows.retrain import CHALLENGER_EVENT

    text = (ROOT / "infra" / "prefect-automations.yaml").read_text().replace("NOTIFY_BLOCK_ID", str(uuid.uuid4()))
    automations = [AutomationCore.model_validate(spec) for spec in yaml.safe_load(text)["automations"]]
    failed, registered = automations
    assert set(failed.trigger.expect) == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    related = failed.trigger.match_related
    related = related[0] if isinstance(related, list) else related
    assert related.get("prefect.resource.name") in ("retrain", ["retrain"])
    assert registered.trigger.expect == {CHALLENGER_EVENT}
    assert all(a.type == "send-notification" for automation in automations for a in automation.actions)
