"""The ``rewardline`` command: every stage on explicit paths, for ad-hoc use and tests.

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
from rewardline.config import build, load_params, parse_overrides
from rewardline.errors import ConfigError, GateFailed, describe, verbose_from_env
from rewardline.gates import check_output
from rewardline.ops.stack_cli import stack_app
from rewardline.registry.names import CHAMPION, MODEL_NAME, model_uri
from rewardline.report import print_summary
from rewardline.stage import configure_logging, headline_metrics

app = typer.Typer(add_completion=True, no_args_is_help=True,
                  help="Annotator rankings in, calibrated reward models out. "
                       "Exit: 0 ok, 1 gate failed, 2 bad input, 3 transient / environment or internal error.")
app.add_typer(stack_app, name="stack", help="Local stack on 127.0.0.1: S3 (SeaweedFS), MLflow, Prefect.")

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to take stage defaults from")]
SetOpt = Annotated[list[str] | None,
                   typer.Option("--set", help="override a stage param: key=value or section.key=value")]
OutOpt = Annotated[Path, typer.Option("--out", help="output directory")]
_OUT = "output directory: "
IngestOut = Annotated[Path, typer.Option("--out", help=_OUT + "canonical tables, quarantine, metrics.json, report.md")]
ValidateOut = Annotated[Path, typer.Option("--out", help=_OUT + "validated tables, Data Docs, metrics.json, report.md")]
PairsOut = Annotated[Path, typer.Option("--out", help=_OUT + "train / val / test pair tables and metrics.json")]
TrainOut = Annotated[Path, typer.Option("--out", help=_OUT + "the trained model (weights, tokenizer, config)")]
EvaluateOut = Annotated[Path, typer.Option("--out", help=_OUT + "metrics.json, report.md, calibration, plots/")]
ExportPairsOut = Annotated[Path, typer.Option("--out", help=_OUT + "every split as JSONL / Parquet (and hf/)")]
ExportOut = Annotated[Path, typer.Option("--out", help=_OUT + "the transformers model directory with its model card")]
BonOut = Annotated[Path, typer.Option("--out", help=_OUT + "metrics.json, gates.json, report.md, bon.csv, bon.png")]
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
    3 transient / environment or internal error. Global options go before the command."""
    OUTPUT["json"], OUTPUT["verbose"] = json_output, verbose > 0
    configure_logging(-1 if quiet else verbose)


def _section(params_path: Path, name: str) -> dict[str, Any]:
    return load_params(params_path).get(name, {}) if params_path.exists() else {}


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


@app.command()
def ingest(
    sources: Annotated[list[str], typer.Argument(help="files, directories or s3://bucket/prefix")],
    out: IngestOut,
    format: Annotated[str, typer.Option(help="auto | rankings | hh-rlhf | alpaca-eval | pairwise | trl | rewardbench")
                      ] = "auto",
    batch_id: Annotated[str | None, typer.Option(help="ingest batch id (default: from file name)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Read annotator rankings into the canonical tables; quarantine malformed records."""
    from rewardline.data.ingest import IngestConfig, Source, run_ingest

    def action() -> dict:
        section = {k: v for k, v in _section(params, "ingest").items() if k != "sources"}
        try:
            given = [Source(path=s, format=format, batch_id=batch_id) for s in sources]
        except ConfigError as err:
            raise ConfigError(f"--format/--batch-id: {err}") from None
        config = build(IngestConfig, {**section, "sources": given}, parse_overrides(set_ or [], "ingest"),
                       source=str(params))
        return run_ingest(config, out)

    _run(action, gated_out=out, stage="ingest")


@app.command()
def validate(
    data: Annotated[Path, typer.Argument(help="an ingest output directory")],
    out: ValidateOut,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Great Expectations suite + inter-annotator agreement; exclude annotators; gate."""
    from rewardline.validation.validate import ValidateConfig, run_validate

    _run(lambda: run_validate(data, out, build(ValidateConfig, _section(params, "validate"),
                                               parse_overrides(set_ or [], "validate"), source=str(params))),
         gated_out=out, stage="validate")


@app.command()
def pairs(
    data: Annotated[Path, typer.Argument(help="a validate output directory")],
    out: PairsOut,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Expand rankings into soft-labelled pairwise comparisons, split by prompt."""
    from rewardline.pairs.expand import PairsConfig, run_pairs

    _run(lambda: run_pairs(data, out, build(PairsConfig, _section(params, "pairs"),
                                            parse_overrides(set_ or [], "pairs"), source=str(params))),
         stage="pairs", out=out)


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="a pairs output directory")],
    out: TrainOut,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    log: Annotated[Path | None, typer.Option(help="JSONL file for the training curves")] = None,
    mlflow: Annotated[bool, typer.Option("--mlflow", help="also log params and curves live to an MLflow run")] = False,
) -> None:
    """Train a reward model (K-wise grouped Bradley-Terry) on a pairs directory. torchrun works too."""
    from rewardline.registry.mlflow_tracking import MlflowTracker
    from rewardline.tracking import JsonlTracker, MultiTracker, Tracker
    from rewardline.training.loop import TrainConfig
    from rewardline.training.loop import train as run_train

    def action() -> dict:
        config = build(TrainConfig, _section(params, "train"), parse_overrides(set_ or [], "train"), source=str(params))
        trackers: list[Tracker] = [JsonlTracker(log)] if log else []
        live = MlflowTracker(run_name="train", tags={"stage": "train"}) if mlflow else None
        try:
            metrics = run_train(data, out, config, MultiTracker(*trackers, *([live] if live else [])))
        except BaseException:
            if live:
                live.close("FAILED")
            raise
        if live:
            live.close()
            metrics["mlflow_run_id"] = live.run_id
        return metrics

    _run(action, stage="train", out=out)


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option("--model", help="a trained model directory")],
    data: Annotated[str, typer.Option("--data", help="a pairs directory (val and test splits), or a raw "
                                                     "source file / folder / s3:// (every pair is test)")],
    out: EvaluateOut,
    champion: Annotated[str | None, typer.Option(
        help=f"champion to compare against: a model directory or {model_uri()}")] = None,
    format: Annotated[str, typer.Option(help="format of a raw --data source: auto | " + " | ".join(
        ("rankings", "hh-rlhf", "alpaca-eval", "pairwise", "trl", "rewardbench")))] = "auto",
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Held-out accuracy, calibration and length bias; write the gate report; fail on a failed gate."""
    from rewardline.evaluation.evaluate import EvalConfig
    from rewardline.evaluation.source import evaluate_data
    from rewardline.registry.champion import resolved_model_dir, split_champion

    def action() -> dict:
        _, section = split_champion(_section(params, "evaluate"))  # --champion names it here
        config = build(EvalConfig, section, parse_overrides(set_ or [], "evaluate"), source=str(params))
        with resolved_model_dir(champion) as champion_dir:  # None when the URI's model / alias does not exist
            return evaluate_data(model, data, out, config, champion_dir, format)

    _run(action, gated_out=out, stage="evaluate")


@app.command()
def score(
    model: Annotated[Path, typer.Option("--model", help="a trained model directory")],
    input: Annotated[Path, typer.Option("--input", help="JSONL rows with prompt and response")],
    out: Annotated[Path, typer.Option("--out", help="output JSONL file (the input rows plus reward)")],
) -> None:
    """Add a ``reward`` to each {prompt, response} row (batched, length-sorted, inference mode).

    Fails fast: the first malformed row (invalid JSON, not an object, prompt or response missing or
    not text) exits 2 naming file, line and field; so does a model directory that is not complete
    (no tokenizer files, pickle-only or truncated weights, a bad reward_config.json)."""
    from rewardline.modeling.score import score_jsonl

    _run(lambda: {"rows_scored": score_jsonl(model, input, out), "output": str(out)})


@app.command("export-pairs")
def export_pairs(
    data: Annotated[Path, typer.Argument(help="a pairs output directory")],
    out: ExportPairsOut,
    format: Annotated[str, typer.Option(help="trl: {prompt, chosen, rejected[, margin]} rows")] = "trl",
    files: Annotated[str, typer.Option(help="jsonl | parquet | both")] = "both",
    hf: Annotated[bool, typer.Option("--hf", help="also a Hugging Face datasets save_to_disk dir (OUT/hf)")] = False,
) -> None:
    """Write every split of a pairs directory with its prompt and response texts (TRL's preference format)."""
    from rewardline.pairs.export import export_pairs as run_export

    _run(lambda: run_export(data, out, format, files, hf), out=out)  # type: ignore[arg-type]


@app.command()
def export(
    model: Annotated[str, typer.Option("--model", help=f"a model directory or a registry URI ({model_uri()})")],
    out: ExportOut,
    metrics: Annotated[Path | None, typer.Option(help="evaluate metrics.json or its directory, for the card")] = None,
    train_metrics: Annotated[Path | None, typer.Option(
        help="train metrics (models/reward-model/metrics.json), for the card")] = None,
    push_to_hub: Annotated[str | None, typer.Option(help="also upload the directory to this Hub repo")] = None,
) -> None:
    """Write a standard transformers reward model (AutoModelForSequenceClassification, num_labels=1) + model card."""
    from rewardline.modeling.export import export_model
    from rewardline.registry.base import is_registry_uri
    from rewardline.registry.champion import resolved_model_dir

    def action() -> dict:
        if not is_registry_uri(model):  # any directory RewardModel.load reads, or an HF id
            return export_model(Path(model), out, metrics, train_metrics, push_to_hub)
        with resolved_model_dir(model) as model_dir:
            if model_dir is None:
                raise ConfigError(f"--model {model}: no such registered model, version or alias")
            return export_model(model_dir, out, metrics, train_metrics, push_to_hub)

    _run(action, out=out)


@app.command()
def bon(
    model: Annotated[Path, typer.Option("--model", help="the proxy reward model directory")],
    data: Annotated[list[Path], typer.Option("--data", help="candidates: file or directory (repeatable)")],
    out: BonOut,
    format: Annotated[str, typer.Option(help="auto | jsonl (prompt, response, gold) | alpaca-eval | gsm8k")] = "auto",
    gold_model: Annotated[Path | None, typer.Option(help="score gold with this model instead of the data")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Best-of-N: exact expected gold of the proxy's pick vs N and KL, Gao et al.'s fit, gates (evaluate.*)."""
    from rewardline.evaluation.bon import BonConfig, bon_from_sources

    def action() -> dict:
        section = {k: v for k, v in _section(params, "evaluate").items() if k in BonConfig.model_fields}
        config = build(BonConfig, section, parse_overrides(set_ or [], "evaluate"), source=str(params))
        return bon_from_sources(model, data, out, config, format, gold_model)

    _run(action, gated_out=out, out=out)


@app.command()
def register(
    project: Annotated[Path, typer.Option(help="project directory holding the stage outputs")] = Path("."),
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Log the pipeline run to MLflow (nested run per stage, lineage tags); register the model if every gate passed."""
    from rewardline.registry.record import RegisterConfig, register_pipeline

    def action() -> dict:
        config = build(RegisterConfig, _section(params, "register"), parse_overrides(set_ or [], "register"),
                       name="register")
        result = register_pipeline(project, config)
        if not result["registered"]:
            raise GateFailed(f"register: not registering the model ({result.get('reason')})")
        return result

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

    _require_project()

    def action() -> dict:
        registry = open_registry(".")
        before = move_alias(registry, name, version, alias, require_gates=not force)
        return {"model_name": name, "alias": alias, "version": str(version), "previous_version": before,
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


if __name__ == "__main__":
    app()
