"""Experiment trackers: how training reports params, curves and artifacts.

Training reports through the small :class:`Tracker` interface (``log_params``,
``log_metrics(metrics, step)``, ``log_artifact(path)``). Implementations here:
:class:`NullTracker` (does nothing), :class:`JsonlTracker` (one JSON line per call; what the
DVC ``train`` stage writes to ``metrics/train_log.jsonl``) and :class:`MultiTracker` (several at
once). The live MLflow run, :class:`rewardline.registry.mlflow_tracking.MlflowTracker`, lives in
the registry package, the only one that imports MLflow; trackers know nothing of the registry.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: Path) -> None: ...


class NullTracker:
    """Discards everything."""

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: Path) -> None:
        pass


class JsonlTracker:
    """Appends ``{"kind": "params"|"metrics"|"artifact", ...}`` lines to ``path``; artifacts
    are copied to ``<path stem>_artifacts/`` next to it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _write(self, record: dict[str, Any]) -> None:
        record = {"time": time.time(), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def log_params(self, params: dict[str, Any]) -> None:
        self._write({"kind": "params", "params": params})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._write({"kind": "metrics", "step": step, "metrics": metrics})

    def log_artifact(self, path: Path) -> None:
        path = Path(path)
        dest = self.path.parent / f"{self.path.stem}_artifacts" / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(path, dest)
        self._write({"kind": "artifact", "path": str(dest)})

    def read(self) -> list[dict[str, Any]]:
        """All records written so far."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


class MultiTracker:
    """Forwards every call to each of ``trackers`` (e.g. the JSONL file and MLflow)."""

    def __init__(self, *trackers: Tracker) -> None:
        self.trackers = trackers

    def log_params(self, params: dict[str, Any]) -> None:
        for t in self.trackers:
            t.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for t in self.trackers:
            t.log_metrics(metrics, step)

    def log_artifact(self, path: Path) -> None:
        for t in self.trackers:
            t.log_artifact(path)


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> Any:
    """Compatibility entry point of models registered by earlier releases.

    Their ``MLmodel`` says ``loader_module: rewardline.tracking`` (this module held the MLflow code
    then), and MLflow calls ``<loader_module>._load_pyfunc`` to load them, so this name must stay.
    It forwards to :func:`rewardline.registry.pyfunc._load_pyfunc`, imported by name at call time:
    a static import would put the registry (and MLflow) into the import graph of every tracker
    user, training included, which must stay independent of the registry."""
    loader = importlib.import_module("rewardline.registry.pyfunc")
    return loader._load_pyfunc(data_path, model_config)
