"""The one small interface through which training reports to experiment tracking.

``Tracker`` has three methods: ``log_params``, ``log_metrics(metrics, step)`` and
``log_artifact(path)``. Implementations: :class:`NullTracker` (does nothing) and
:class:`JsonlTracker` (one JSON object per call appended to a file).
"""

from __future__ import annotations

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
