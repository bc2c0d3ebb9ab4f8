"""The MLflow registry: register the pipeline run, promote an alias, list versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rewardline.cli.app import (
    ParamsOpt,
    SetOpt,
    _require_project,
    _run,
    _section,
    app,
)
from rewardline.config import build, parse_overrides
from rewardline.errors import GateFailed
from rewardline.paths import REGISTRATION
from rewardline.registry.names import CHAMPION, MODEL_NAME


@app.command()
def register(
    project: Annotated[Path, typer.Option(help="project directory holding the stage outputs")] = Path("."),
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Log the pipeline run to MLflow (nested run per stage, lineage tags); register the model if every gate passed."""
    from rewardline.registry import open_registry
    from rewardline.registry.record import RegisterConfig, register_pipeline

    def action() -> dict:
        config = build(RegisterConfig, _section(params, "register"), parse_overrides(set_ or [], "register"),
                       name="register", source=str(params))
        registry = open_registry(project)
        result = register_pipeline(project, config, registry)
        if not result["registered"]:
            raise GateFailed(f"register: not registering the model ({result.get('reason')}); "
                             f"pipeline run {result['parent_run_id']} logged; see {project / REGISTRATION}")
        name = "" if result["model_name"] == MODEL_NAME else f" --name {result['model_name']}"
        return {**result, "mlflow_ui": registry.ui_command(),
                "promote": f"rewardline promote --version {result['version']}{name}"}

    _run(action)


@app.command()
def promote(
    version: Annotated[str, typer.Option("--version", help="model version to point the alias at")],
    name: Annotated[str, typer.Option(help="registered model name")] = MODEL_NAME,
    alias: Annotated[str, typer.Option(help="alias to move")] = CHAMPION,
    force: Annotated[bool, typer.Option("--force", help="promote even if the version's gates did not pass")] = False,
) -> None:
    """Move an alias (default: champion) to a model version, after checking its gate tags."""
    from rewardline.registry import open_registry
    from rewardline.registry.base import promote as move_alias
    from rewardline.registry.base import version_number

    _require_project()

    def action() -> dict:
        registry = open_registry(".")
        number = version_number(version)
        before = move_alias(registry, name, number, alias, require_gates=not force)
        # version numbers as ints, as `registry --json` prints them
        return {"model_name": name, "alias": alias, "version": int(number),
                "previous_version": int(before) if before is not None else None,
                "tracking_uri": registry.tracking_uri}

    _run(action)


@app.command()
def registry(
    name: Annotated[str, typer.Option(help="registered model name")] = MODEL_NAME,
) -> None:
    """The registered model's versions, their aliases and gate status, and the command to open the MLflow UI."""
    from rewardline.registry import open_registry
    from rewardline.registry.base import registry_summary

    _require_project()

    def action() -> dict:
        registry = open_registry(".")
        return {**registry_summary(registry, name), "mlflow_ui": registry.ui_command()}

    _run(action)
