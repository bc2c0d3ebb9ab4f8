"""The ``rewardline`` Typer app: global options, and how every command runs, reports and exits.

The commands live beside this module, by what they act on (``stage_commands``: the pipeline stages;
``model_commands``: scoring, export, best-of-N; ``registry_commands``: MLflow registry); a new command is
one ``@app.command()`` function in one of them (or a new module imported by ``rewardline/cli/__init__.py``).

``dvc repro`` runs the same functions through ``stages/`` with the paths and params
of ``dvc.yaml`` / ``params.yaml``. Stage sections of ``params.yaml`` (when present in
the working directory, or ``--params``) are the defaults here; ``--set key=value``
overrides single keys. Exit codes (:mod:`rewardline.errors`): 0 ok, 1 a gate failed, 2 bad input or
usage, 3 a transient / environment error or an internal error (``-v``: its traceback).

Output: a short table for people (numbers rounded; a stage's headline, the full metrics are in
``<out>/metrics.json``), or with ``rewardline --json <command>`` the whole result as JSON for scripts.
Logs go to stderr through ``logging``: ``-v`` adds rewardline's DEBUG lines and error tracebacks (``-vv``
also third-party INFO lines: MLflow, alembic, urllib3, httpx, Great Expectations), ``-q`` keeps warnings only.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from rewardline import __version__
from rewardline.config import load_params
from rewardline.errors import ConfigError, describe, verbose_from_env
from rewardline.gates import check_output
from rewardline.ops.stack_cli import stack_app
from rewardline.registry.names import model_uri
from rewardline.report import print_summary
from rewardline.stage import INTERRUPTED, configure_logging, headline_metrics

app = typer.Typer(add_completion=True, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Annotator rankings in, calibrated reward models out. "
                       "Exit: 0 ok, 1 gate failed, 2 bad input, 3 transient / environment or internal error, "
                       "130 interrupted.")
app.add_typer(stack_app, name="stack", help="Local stack on 127.0.0.1: S3 (SeaweedFS), MLflow, Prefect.")

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to take stage defaults from")]
SetOpt = Annotated[list[str] | None,
                   typer.Option("--set", help="override a stage param: key=value or section.key=value")]
MODEL_REF = f"a model directory (trained or exported), a Hugging Face id or a registry URI ({model_uri()})"
ModelOpt = Annotated[str, typer.Option("--model", help=MODEL_REF)]
OutOpt = Annotated[Path, typer.Option("--out", help="output directory")]
#: A rows file (rewardline.modeling.rows_files): the layout by its suffix; a path or a URL (kept a str: a Path
#: would fold ``s3://`` into ``s3:/``).
ROWS_LAYOUTS = "JSONL, or Parquet / CSV / TSV by the suffix (.gz: gzip); a path or a URL (s3://...)"
_OUT = "output directory: "
IngestOut = Annotated[Path, typer.Option("--out", help=_OUT + "canonical tables, quarantine, metrics.json, report.md")]
ValidateOut = Annotated[Path, typer.Option("--out", help=_OUT + "validated tables, Data Docs, metrics.json, report.md")]
PairsOut = Annotated[Path, typer.Option("--out", help=_OUT + "train / val / test pair tables and metrics.json")]
TrainOut = Annotated[Path, typer.Option("--out", help=_OUT + "the trained model (weights, tokenizer, config)")]
EvaluateOut = Annotated[Path, typer.Option("--out", help=_OUT + "metrics.json, report.md, calibration, plots/")]
ExportPairsOut = Annotated[Path, typer.Option("--out", help=_OUT + "every split as JSONL / Parquet (and hf/)")]
ExportOut = Annotated[Path, typer.Option("--out", help=_OUT + "the transformers model directory with its model card")]
BonOut = Annotated[Path, typer.Option("--out", help=_OUT + "metrics.json, gates.json, report.md, bon.csv, bon.png")]
EngineOpt = Annotated[str, typer.Option("--engine", help="local: score in this process | ray: model actors on a "
                                                         "Ray cluster (pip install 'rewardline[ray]')")]
RayAddressOpt = Annotated[str | None, typer.Option(
    "--ray-address", help="--engine ray: join this cluster (auto, HOST:PORT of `ray start --head`, ray://...); "
                          "default: start a local one on 127.0.0.1")]
ActorsOpt = Annotated[int | None, typer.Option(
    "--actors", min=1, help="--engine ray: model actors (default: one per GPU of the cluster, else one per CPU)")]
OUTPUT = {"json": False, "verbose": False}  # set by the global options of the app callback


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rewardline {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    json_output: Annotated[bool, typer.Option("--json", help="print results as JSON (for scripts)")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="more log lines and error tracebacks (-vv: third-party INFO too)")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings and errors only")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Annotator rankings in, calibrated reward models out. Exit: 0 ok, 1 gate failed, 2 bad input,
    3 transient / environment or internal error, 130 interrupted. Global options go before the command."""
    OUTPUT["json"], OUTPUT["verbose"] = json_output, verbose > 0
    configure_logging(-1 if quiet else verbose)


def _section(params_path: Path, name: str) -> dict[str, Any]:
    """The ``name`` section of the params file ({} when the file or the section is absent or empty); a section that
    is not a mapping is a ConfigError naming the file and the section."""
    section = load_params(params_path).get(name) if params_path.exists() else None
    if section is not None and not isinstance(section, dict):
        raise ConfigError(f"{params_path}: {name}: expected a mapping of keys, got {type(section).__name__}")
    return section or {}


def _row_limits(params_path: Path) -> Any:
    """The size bounds of an input row (:class:`~rewardline.data.limits.Limits`): ``max_record_bytes``,
    ``max_prompt_chars`` and ``max_response_chars`` of the params file's ``ingest`` section, else the defaults."""
    from rewardline.data.limits import Limits

    section = _section(params_path, "ingest")
    return Limits(**{k: v for k, v in section.items() if k in Limits.model_fields})


def _ray_options(engine: str, address: str | None, actors: int | None) -> Any:
    """The :class:`~rewardline.serving.ray_engine.RayOptions` of ``--engine ray``, None for ``local``
    (``--ray-address`` / ``--actors`` without ``--engine ray``: a usage error)."""
    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"{engine!r} is not one of local, ray", param_hint="--engine")
    if engine == "local":
        if address is not None or actors is not None:
            raise typer.BadParameter("--ray-address and --actors go with --engine ray", param_hint="--engine")
        return None
    from rewardline.serving.ray_engine import RayOptions

    return RayOptions(address=address, actors=actors)


def _show(metrics: dict, title: str, stage: str | None, out: Path | None) -> None:
    """The result: JSON (``--json``), else a table; a stage's headline numbers and where the rest is."""
    if OUTPUT["json"]:
        json.dump(metrics, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
        return
    print_summary(title, headline_metrics(metrics, stage) if stage else metrics)
    if stage and out is not None:
        typer.echo(f"all metrics: {out / 'metrics.json'}")


def _run(action: Callable[[], dict], gated_out: Path | None = None, stage: str | None = None,
         out: Path | None = None) -> None:
    """Run a stage; check its gates (``gated_out``: its output directory); show its metrics (a
    ``stage``'s headline, :func:`_show`); turn known failures into a message and an exit code."""
    try:
        metrics = action()
        if gated_out is not None:
            check_output(gated_out)
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback, 128 + SIGINT
        typer.secho(INTERRUPTED, fg=typer.colors.RED, err=True)
        raise typer.Exit(130) from None
    except Exception as err:  # noqa: BLE001 - every failure leaves with the contract's exit code
        code, text = describe(err, verbose=OUTPUT["verbose"] or verbose_from_env())
        typer.secho(text, fg=typer.colors.RED, err=True)
        raise typer.Exit(code) from None
    command = sys._getframe(1).f_code.co_name.replace("_", "-")  # the command function that called _run
    out = out or gated_out
    _show(metrics, f"{command}: {out}" if out is not None else command, stage, out)


def _require_project() -> None:
    """The registry commands need a project (params.yaml or dvc.yaml here) or MLFLOW_TRACKING_URI: else
    exit 2 without creating the embedded store."""
    if not (Path("params.yaml").exists() or Path("dvc.yaml").exists() or os.environ.get("MLFLOW_TRACKING_URI")):
        typer.secho(f"error: {Path.cwd()} is not a rewardline project (no params.yaml or dvc.yaml) and "
                    "MLFLOW_TRACKING_URI is not set: cd to the project or set MLFLOW_TRACKING_URI",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
