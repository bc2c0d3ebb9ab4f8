"""The flows' command-line entries (``python -m flows.pipeline``, ``python -m flows.retrain``) end like every
``rewardline`` command: the contract's exit code (:mod:`rewardline.errors`: 1 a gate failed, 2 bad input or usage,
3 transient) and one line on stderr, below Prefect's own log of the failed run; the traceback only when verbose
(``REWARDLINE_VERBOSE=1``). Without this an uncaught exception exited 1, which the contract reserves for a gate.
Prefect's ephemeral API server not starting in time (a loaded machine) is a transient error naming the setting
that waits longer, not an internal one."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from rewardline.errors import ConfigError, TransientError, describe, verbose_from_env
from rewardline.stage import artifact_bars_on_terminal_only

#: How Prefect (3.x, ``SubprocessASGIServer.start``) says its ephemeral API server did not start in time.
EPHEMERAL_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API server"
STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"  # Prefect's setting; its default: 20 s


def run_flow_command(call: Callable[[], object]) -> None:
    """Call ``call`` (a flow run); on an exception print :func:`~rewardline.errors.describe`'s line and exit with its
    code. MLflow's artifact bars (the retrain flow downloads the champion) only on a terminal, as in ``rewardline``."""
    artifact_bars_on_terminal_only()
    try:
        call()
    except Exception as err:  # noqa: BLE001 - every failure leaves with the contract's exit code
        code, text = describe(_explained(err), verbose=verbose_from_env())
        print(text, file=sys.stderr)
        raise SystemExit(code) from None


def _explained(err: Exception) -> Exception:
    """``err``, or for Prefect's ephemeral-server timeout a :class:`TransientError` (exit 3) saying how to wait
    longer or do without it."""
    if not (isinstance(err, RuntimeError) and str(err).startswith(EPHEMERAL_TIMEOUT)):
        return err
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    seconds = PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
    explained = TransientError(
        f"Prefect's ephemeral API server did not start within {seconds} s ({STARTUP_TIMEOUT_ENV}); on a loaded "
        f"machine wait longer ({STARTUP_TIMEOUT_ENV}=60), or run against a "
        "server (`prefect server start`, then PREFECT_API_URL=http://127.0.0.1:4200/api)")
    explained.__cause__ = err
    return explained


def require_project(project: str, *files: str) -> Path:
    """``project`` resolved, or :class:`~rewardline.errors.ConfigError` (exit 2) when it lacks one of ``files``
    (``dvc.yaml``, ``params.yaml``): the flows take the project as ``--project DIR``."""
    root = Path(project).resolve()
    missing = [name for name in files if not (root / name).is_file()]
    if missing:
        raise ConfigError(f"{root}: not a rewardline project (no {' or '.join(missing)}); run the flow in the project "
                          "or pass --project DIR")
    return root
