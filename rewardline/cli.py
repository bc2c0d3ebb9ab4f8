"""The ``rewardline`` command: every stage on explicit paths, for ad-hoc use and tests.

``dvc repro`` runs the same functions through ``stages/`` with the paths and params
of ``dvc.yaml`` / ``params.yaml``. Stage sections of ``params.yaml`` (when present in
the working directory, or ``--params``) are the defaults here; ``--set key=value``
overrides single keys. Exit codes: 0 ok, 1 a gate failed, 2 bad input or usage.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from rewardline.config import build, load_params, parse_overrides
from rewardline.errors import ConfigError, GateFailed

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to take stage defaults from")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a stage param: key=value")]
OutOpt = Annotated[Path, typer.Option("--out", help="output directory")]


def _section(params_path: Path, name: str) -> dict[str, Any]:
    return load_params(params_path).get(name, {}) if params_path.exists() else {}


def _run(action: Callable[[], dict]) -> None:
    """Run a stage; print its metrics; turn known failures into a message and an exit code."""
    try:
        metrics = action()
    except GateFailed as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    except (ConfigError, OSError, ValueError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    json.dump(metrics, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


@app.command()
def ingest(
    sources: Annotated[list[str], typer.Argument(help="files, directories or s3://bucket/prefix")],
    out: OutOpt,
    format: Annotated[str, typer.Option(help="auto | rankings | hh-rlhf | alpaca-eval | pairwise")] = "auto",
    batch_id: Annotated[str | None, typer.Option(help="ingest batch id (default: from file name)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Read annotator rankings into the canonical tables; quarantine malformed records."""
    from rewardline.ingest import IngestConfig, Source, run_ingest

    section = {k: v for k, v in _section(params, "ingest").items() if k != "sources"}

    def action() -> dict:
        config = build(IngestConfig, {**section, "sources": [Source(s, format, batch_id) for s in sources]},
                       parse_overrides(set_ or []), name="ingest")
        return run_ingest(config, out)

    _run(action)


@app.command()
def validate(
    data: Annotated[Path, typer.Argument(help="an ingest output directory")],
    out: OutOpt,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Great Expectations suite + inter-annotator agreement; exclude annotators; gate."""
    from rewardline.validate import ValidateConfig, run_validate

    _run(lambda: run_validate(data, out, build(ValidateConfig, _section(params, "validate"),
                                               parse_overrides(set_ or []), name="validate")))


@app.command()
def pairs(
    data: Annotated[Path, typer.Argument(help="a validate output directory")],
    out: OutOpt,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Expand rankings into soft-labelled pairwise comparisons, split by prompt."""
    from rewardline.pairs import PairsConfig, run_pairs

    _run(lambda: run_pairs(data, out, build(PairsConfig, _section(params, "pairs"),
                                            parse_overrides(set_ or []), name="pairs")))


if __name__ == "__main__":
    app()
