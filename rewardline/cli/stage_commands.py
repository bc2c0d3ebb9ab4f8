"""Pipeline stages on explicit paths: ingest, validate, pairs, train, evaluate (``dvc repro`` runs the same
functions through ``stages/``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from rewardline.cli.app import (
    EvaluateOut,
    IngestOut,
    ModelOpt,
    PairsOut,
    ParamsOpt,
    SetOpt,
    TrainOut,
    ValidateOut,
    _run,
    _section,
    app,
)
from rewardline.config import build, parse_overrides
from rewardline.errors import ConfigError
from rewardline.registry.names import model_uri


@app.command()
def ingest(
    sources: Annotated[list[str], typer.Argument(help="files, directories or URLs (s3://bucket/prefix, hf://...)")],
    out: IngestOut,
    format: Annotated[str, typer.Option(help="auto | rankings | hh-rlhf | alpaca-eval | pairwise | trl | rewardbench"
                                             " | prm800k | math-shepherd | gsm8k | solutions (step-level)")] = "auto",
    batch_id: Annotated[str | None, typer.Option(help="ingest batch id (default: from file name)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Read annotator rankings (or step-labelled solutions) into the canonical tables; quarantine malformed
    records."""
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
    data: Annotated[Path, typer.Argument(help="a validate output directory (an ingest output is read with a warning: "
                                                 "no annotator exclusions, no gates)")],
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
    from rewardline.data.tables import write_json
    from rewardline.paths import METRICS_FILE
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
        if os.environ.get("RANK", "0") == "0":  # the full metrics beside the model (torchrun: rank 0 writes)
            write_json(metrics, out / METRICS_FILE)
        return metrics

    _run(action, stage="train", out=out)


@app.command()
def evaluate(
    model: ModelOpt,
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
    from rewardline.registry.champion import model_dir, resolved_champion, split_champion

    def action() -> dict:
        _, section = split_champion(_section(params, "evaluate"), str(params))  # --champion names it here
        config = build(EvalConfig, section, parse_overrides(set_ or [], "evaluate"), source=str(params))
        with model_dir(model) as path, resolved_champion(champion, "--champion") as (champion_dir, why):  # None: none
            return evaluate_data(path, data, out, config, champion_dir, format, why)

    _run(action, gated_out=out, stage="evaluate")
