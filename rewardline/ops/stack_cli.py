"""``rewardline stack up|down|status``: the local S3 + MLflow + Prefect stack (see :mod:`rewardline.ops.stack`).

Mounted in ``rewardline/cli/app.py`` with ``app.add_typer(stack_app, name="stack")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rewardline.errors import describe, verbose_from_env
from rewardline.ops import stack

stack_app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="stack config (default infra/stack.yaml)")]
StateOpt = Annotated[Path, typer.Option("--state-dir", help="pids, logs, data and credentials of the stack")]


def _fail(err: Exception) -> None:
    """Exit with the contract's code (:func:`rewardline.errors.describe`): 3 for a stack that cannot start."""
    code, text = describe(err, verbose=verbose_from_env())
    typer.secho(text, fg=typer.colors.RED, err=True)
    raise typer.Exit(code) from None


@stack_app.command()
def up(config: ConfigOpt = None, state_dir: StateOpt = Path(".stack")) -> None:
    """Start S3 (SeaweedFS), MLflow and the Prefect server + worker on 127.0.0.1; wait until healthy."""
    try:
        cfg = stack.load_config(config)
        stack.up(cfg, state_dir, echo=typer.echo)
    except (stack.StackError, OSError) as err:
        _fail(err)
    typer.echo("\n# point the pipeline at the stack:")
    typer.echo(stack.exports(cfg, state_dir))


@stack_app.command()
def down(state_dir: StateOpt = Path(".stack")) -> None:
    """Stop every service of the stack (process groups; nothing left running)."""
    try:
        stopped = stack.down(state_dir)
    except (stack.StackError, OSError) as err:
        _fail(err)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing running")


@stack_app.command()
def status(config: ConfigOpt = None, state_dir: StateOpt = Path(".stack")) -> None:
    """Each service with its pid, URL and health; exit 1 when any is down (a failed health check)."""
    try:
        rows = stack.status(stack.load_config(config), state_dir)
    except (stack.StackError, OSError) as err:
        _fail(err)
    for row in rows:
        state = "healthy" if row["healthy"] else ("running, unhealthy" if row["running"] else "stopped")
        typer.echo(f"{row['name']:15s} {state:19s} pid={row['pid'] or '-':<8} {row['url']}")
    if not all(row["healthy"] for row in rows):
        raise typer.Exit(1)
