"""The flows' command-line entries (``python -m flows.pipeline``, ``python -m flows.retrain``) end like every
``rewardline`` command: the contract's exit code (:mod:`rewardline.errors`: 1 a gate failed, 2 bad input or usage,
3 transient) and one line on stderr, below Prefect's own log of the failed run; the traceback only when verbose
(``REWARDLINE_VERBOSE=1``). Without this an uncaught exception exited 1, which the contract reserves for a gate."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from rewardline.errors import ConfigError, describe, verbose_from_env
from rewardline.stage import artifact_bars_on_terminal_only


def run_flow_command(call: Callable[[], object]) -> None:
    """Call ``call`` (a flow run); on an exception print :func:`~rewardline.errors.describe`'s line and exit with its
    code. MLflow's artifact bars (the retrain flow downloads the champion) only on a terminal, as in ``rewardline``."""
    artifact_bars_on_terminal_only()
    try:
        call()
    except Exception as err:  # noqa: BLE001 - every failure leaves with the contract's exit code
        code, text = describe(err, verbose=verbose_from_env())
        print(text, file=sys.stderr)
        raise SystemExit(code) from None


def require_project(project: str, *files: str) -> Path:
    """``project`` resolved, or :class:`~rewardline.errors.ConfigError` (exit 2) when it lacks one of ``files``
    (``dvc.yaml``, ``params.yaml``): the flows take the project as ``--project DIR``."""
    root = Path(project).resolve()
    missing = [name for name in files if not (root / name).is_file()]
    if missing:
        raise ConfigError(f"{root}: not a rewardline project (no {' or '.join(missing)}); run the flow in the project "
                          "or pass --project DIR")
    return root
