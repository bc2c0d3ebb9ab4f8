"""Model selection over DVC experiments: ``rewardline select`` (see :mod:`rewardline.ops.experiments`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rewardline.cli.app import _run, app
from rewardline.ops.experiments import DEFAULT_METRIC, DEFAULT_SEED_PARAMS, LOWER_IS_BETTER_SUFFIXES


@app.command("select")
def select(
    project: Annotated[Path, typer.Option(help="the DVC project whose experiments to rank")] = Path("."),
    metric: Annotated[str, typer.Option(help="validation metric to rank on (val_*): a key of the experiments' "
                                           "metrics files, or FILE:KEY (metrics/prm_train.json:val_accuracy)")]
    = DEFAULT_METRIC,
    higher_is_better: Annotated[bool | None, typer.Option(
        "--higher-is-better/--lower-is-better", help="the metric's direction; default: lower is better for a "
                                                     f"name ending in {', '.join(LOWER_IS_BETTER_SUFFIXES)} "
                                                     "(val_loss), else higher", show_default=False)] = None,
    seed_param: Annotated[list[str] | None, typer.Option(
        "--seed-param", help="param that only changes the seed (repeatable); runs differing in these alone "
                             "are one configuration")] = None,
    apply: Annotated[bool, typer.Option("--apply/--dry-run", help="dvc exp apply the selected run")] = True,
) -> None:
    """Rank the finished DVC experiments (``dvc exp show --json``) by the mean val accuracy (``--metric``) of
    each configuration over its seeds (the highest first; the lowest for a loss), report each configuration's
    mean / sd / n, and ``dvc exp apply`` the best configuration's best run, so the pipeline's model is the
    promoted one (not over uncommitted changes to tracked files: commit or stash them first)."""
    from rewardline.ops.experiments import select_experiment

    seeds = tuple(seed_param) if seed_param else DEFAULT_SEED_PARAMS
    _run(lambda: select_experiment(project, metric, seeds, apply, higher_is_better))
