"""Live MLflow logging of a DVC stage while it runs (the train stage): :class:`LiveRun`.

Where: ``MLFLOW_TRACKING_URI`` when set, else the project's embedded store (as ``register`` resolves it,
:func:`rewardline.registry.mlflow_backend.configure_mlflow`); ``REWARDLINE_MLFLOW_LIVE=0`` turns it off.
The run gets the stage's params and step-wise curves through the :class:`~rewardline.tracking.Tracker`
interface, and system metrics (CPU, memory, GPU: MLflow's ``SystemMetricsMonitor``, when psutil is
installed) every :data:`SYSTEM_METRICS_INTERVAL_S` seconds. Its id goes into the stage's metrics, so
``register`` nests that run under the pipeline run instead of writing a record after the fact.

A tracking server that fails must not fail the stage: the first error is logged as a warning naming
the URI, and the run is dropped (the stage's JSONL log still has everything; ``register`` then writes
the record from it as before).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rewardline.registry.mlflow_backend import configure_mlflow
from rewardline.registry.mlflow_tracking import MlflowTracker

log = logging.getLogger(__name__)
LIVE_ENV = "REWARDLINE_MLFLOW_LIVE"  # "0" / "false": no live run
SYSTEM_METRICS_INTERVAL_S = 10.0


# The first request to the server (creating the run) with few retries and a short timeout, so a server
# that is down costs seconds, not MLflow's default backoff of minutes (unless the env sets them).
FIRST_CONTACT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@contextlib.contextmanager
def _first_contact_limits() -> Iterator[None]:
    """:data:`FIRST_CONTACT_ENV` for the duration of the block, for the variables the env does not set."""
    added = {k: v for k, v in FIRST_CONTACT_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def live_enabled() -> bool:
    """False when ``REWARDLINE_MLFLOW_LIVE`` is ``0`` / ``false`` / ``no``."""
    return os.environ.get(LIVE_ENV, "1").strip().lower() not in ("0", "false", "no")


class LiveRun:
    """A :class:`~rewardline.tracking.Tracker` on a new MLflow run named ``stage`` that never raises:
    after the first failure it warns once and drops every later call (``failed`` holds the reason)."""

    def __init__(self, stage: str, project_dir: Path | str = ".", system_metrics: bool = True) -> None:
        self.stage, self.failed, self._monitor = stage, None, None
        self.tracking_uri = ""
        self._tracker: MlflowTracker | None = None
        try:
            self.tracking_uri = configure_mlflow(project_dir)
            with _first_contact_limits():
                self._tracker = MlflowTracker(run_name=stage, tags={"stage": stage, "live": "true"})
                self._tracker.run_id  # noqa: B018 - create the run now: its start time is the stage's
            if system_metrics:
                self._start_system_metrics()
        except Exception as err:  # noqa: BLE001 - an unreachable server must not stop the stage
            self._fail(err)

    @property
    def run_id(self) -> str | None:
        """The run's id, None when none was created or logging failed."""
        if self._tracker is None or self.failed:
            return None
        return self._call(lambda t: t.run_id)

    def _fail(self, err: Exception) -> None:
        self.failed = f"{type(err).__name__}: {err}"
        log.warning("MLflow live logging of stage %s to %s failed (%s); the stage continues without it "
                    "(its log file keeps the curves; register records them afterwards)",
                    self.stage, self.tracking_uri or "MLflow", self.failed)
        self._stop_system_metrics()

    def _call(self, fn: Any) -> Any:
        if self._tracker is None or self.failed:
            return None
        try:
            return fn(self._tracker)
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return None

    def _start_system_metrics(self) -> None:
        try:
            import psutil  # noqa: F401 - MLflow's monitor needs it
        except ImportError:
            log.info("psutil not installed: no system metrics in the MLflow run")
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitor = SystemMetricsMonitor(self._tracker.run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                             tracking_uri=self.tracking_uri)
        self._monitor.start()

    def _stop_system_metrics(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            try:
                monitor.finish()
            except Exception as err:  # noqa: BLE001
                log.warning("stopping MLflow system metrics failed: %s", err)

    # -- the Tracker interface ---------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        self._call(lambda t: t.log_params(params))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._call(lambda t: t.log_metrics(metrics, step))

    def log_artifact(self, path: Path) -> None:
        self._call(lambda t: t.log_artifact(path))

    def close(self, status: str = "FINISHED") -> None:
        """Stop the system metrics and mark the run ``status`` (FINISHED / FAILED)."""
        self._stop_system_metrics()
        self._call(lambda t: t.close(status))

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close("FAILED" if exc_type else "FINISHED")
