"""Using a trained model: score rows, export it or its pairs, best-of-N analysis."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from rewardline.cli.app import (
    MODEL_REF,
    ROWS_LAYOUTS,
    ActorsOpt,
    BonOut,
    EngineOpt,
    ExportOut,
    ExportPairsOut,
    ModelOpt,
    ParamsOpt,
    RayAddressOpt,
    SetOpt,
    _ray_options,
    _row_limits,
    _run,
    _section,
    app,
)
from rewardline.config import build, parse_overrides
from rewardline.modeling.step_scores import AGGREGATES


@app.command()
def score(
    model: ModelOpt,
    input: Annotated[str, typer.Option("--input", help=f"rows with prompt and response: {ROWS_LAYOUTS}")],
    out: Annotated[str, typer.Option("--out", help=f"output rows file, the input rows plus reward: {ROWS_LAYOUTS}")],
    params: ParamsOpt = Path("params.yaml"),
    aggregate: Annotated[str | None, typer.Option(
        help="process reward model: min | prod | last | mean of the step scores (default: the model's)")] = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    actors: ActorsOpt = None,
) -> None:
    """Add a ``reward`` to each {prompt, response} row (batched, length-sorted, inference mode); with a
    process reward model, ``step_scores`` (P(step correct)) and their aggregate ``reward`` to each
    {prompt, steps: [...]} row.

    Fails fast: the first malformed row (invalid JSON, not an object, prompt or response missing or
    not text) exits 2 naming file, line and field; so does a row over the size bounds (``ingest.max_record_bytes``,
    ``max_prompt_chars``, ``max_response_chars`` of params.yaml, else their defaults) and a model directory
    that is not complete (no tokenizer files, pickle-only or truncated weights, a bad reward_config.json).

    ``--engine ray``: the same rows, order and columns, scored by model actors on a Ray cluster (outcome
    models; docs/serving.md)."""
    from rewardline.modeling.score import score_jsonl
    from rewardline.registry.champion import model_dir

    if aggregate is not None and aggregate not in AGGREGATES:
        raise typer.BadParameter(f"{aggregate!r} is not one of {', '.join(AGGREGATES)}", param_hint="--aggregate")
    ray = _ray_options(engine, ray_address, actors)

    def action() -> dict:
        bounds = _row_limits(params)
        with model_dir(model) as path:
            if ray is not None:
                from rewardline.serving.ray_engine import score_jsonl_ray

                rows = score_jsonl_ray(path, input, out, limits=bounds, options=ray)
            else:
                rows = score_jsonl(path, input, out, limits=bounds, aggregate=aggregate)
        return {"rows_scored": rows, "output": str(out)}

    _run(action)


@app.command("export-pairs")
def export_pairs(
    data: Annotated[Path, typer.Argument(help="a pairs output directory")],
    out: ExportPairsOut,
    format: Annotated[str, typer.Option(
        help="trl: {prompt, chosen, rejected[, margin][, category], prompt_id} rows")] = "trl",
    files: Annotated[str, typer.Option(help="jsonl | parquet | both")] = "both",
    hf: Annotated[bool, typer.Option("--hf", help="also a Hugging Face datasets save_to_disk dir (OUT/hf)")] = False,
) -> None:
    """Write every split of a pairs directory with its prompt and response texts (TRL's preference format)."""
    from rewardline.pairs.export import export_pairs as run_export

    _run(lambda: run_export(data, out, format, files, hf), out=out)  # type: ignore[arg-type]


@app.command()
def export(
    model: ModelOpt,
    out: ExportOut,
    metrics: Annotated[Path | None, typer.Option(help="evaluate metrics.json or its directory, for the card")] = None,
    train_metrics: Annotated[Path | None, typer.Option(
        help="train metrics (models/reward-model/metrics.json), for the card")] = None,
    push_to_hub: Annotated[str | None, typer.Option(help="also upload the directory to this Hub repo")] = None,
) -> None:
    """Write a standard transformers reward model (AutoModelForSequenceClassification, num_labels=1) + model card."""
    from rewardline.modeling.export import export_model
    from rewardline.registry.champion import model_dir

    def action() -> dict:
        with model_dir(model) as path:
            return export_model(path, out, metrics, train_metrics, push_to_hub)

    _run(action, out=out)


@app.command()
def bon(
    model: Annotated[str, typer.Option("--model", help="the proxy reward model: " + MODEL_REF)],
    data: Annotated[list[Path], typer.Option("--data", help="candidates: file or directory (repeatable)")],
    out: BonOut,
    format: Annotated[str, typer.Option(help="auto | jsonl (prompt, response, gold) | alpaca-eval | gsm8k")] = "auto",
    gold_model: Annotated[str | None, typer.Option(
        help="score gold with this model instead of the data (a directory, Hub id or registry URI)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Best-of-N: exact expected gold of the proxy's pick vs N and KL, Gao et al.'s fit, gates (evaluate.*)."""
    from rewardline.evaluation.bon import BonConfig, bon_from_sources
    from rewardline.registry.champion import model_dir

    def action() -> dict:
        section = {k: v for k, v in _section(params, "evaluate").items() if k in BonConfig.model_fields}
        config = build(BonConfig, section, parse_overrides(set_ or [], "evaluate"), source=str(params))
        with model_dir(model) as proxy, contextlib.ExitStack() as stack:
            gold = None if gold_model is None else stack.enter_context(model_dir(gold_model))
            return bon_from_sources(proxy, data, out, config, format, gold)

    _run(action, gated_out=out, out=out)
