""":class:`MlflowTracker`: the live-MLflow-run :class:`rewardline.tracking.Tracker` (``rewardline train --mlflow``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rewardline.registry.mlflow_backend import client, experiment_id
from rewardline.registry.mlflow_values import log_batch, metric_values, param_values, tag_value
from rewardline.registry.names import EXPERIMENT


class MlflowTracker:
    """A :class:`Tracker` that writes to one MLflow run: ``run_id``, or one created at the first call
    (so ranks of a distributed run that never log create nothing).

    Use as a context manager, or call :meth:`close`, to mark the run finished (or failed)."""

    def __init__(self, run_name: str | None = None, experiment: str = EXPERIMENT, run_id: str | None = None,
                 tags: Mapping[str, Any] | None = None, parent_run_id: str | None = None) -> None:
        self.run_name, self.experiment, self._run_id = run_name, experiment, run_id
        self.tags = {**(tags or {}), **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})}
        self.client = client()
        if run_id is not None and self.tags:
            log_batch(self.client, run_id, tags=self.tags)

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            run = self.client.create_run(experiment_id(self.experiment, self.client.tracking_uri),
                                         run_name=self.run_name, tags={k: tag_value(v) for k, v in self.tags.items()})
            self._run_id = run.info.run_id
        return self._run_id

    def log_params(self, params: dict[str, Any]) -> None:
        log_batch(self.client, self.run_id, params=param_values(params))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        log_batch(self.client, self.run_id, metrics=[(k, v, now, int(step)) for k, v in metric_values(metrics).items()])

    def log_artifact(self, path: Path) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
        else:
            self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str = "FINISHED") -> None:
        if self._run_id is not None:
            self.client.set_terminated(self._run_id, status)

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close("FAILED" if exc_type else "FINISHED")
