"""Experiment trackers: how training reports params, curves and artifacts.

Training reports through the small :class:`Tracker` interface (``log_params``,
``log_metrics(metrics, step)``, ``log_artifact(path)``). Implementations here:
:class:`NullTracker` (does nothing), :class:`JsonlTracker` (one JSON line per call; what the
DVC ``train`` stage writes to ``metrics/train_log.jsonl``) and :class:`MultiTracker` (several at
once). :func:`write_curves_tsv` turns the last run of a JSONL log into the table DVC plots
(``metrics/train_log.tsv``: one row per logged step). The live MLflow run,
:class:`rewardline.registry.mlflow_tracking.MlflowTracker`, lives in the
registry package, the only one that imports MLflow; trackers know nothing of the registry.
"""

from __future__ import annotations

import csv
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


def last_run(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the last run in a JSONL log: from its last ``params`` record on (a resumed or
    repeated run appends to the same file)."""
    starts = [i for i, r in enumerate(records) if r.get("kind") == "params"]
    return records[starts[-1] if starts else 0 :]


def curve_rows(records: list[dict[str, Any]], prefix: str = "train/") -> list[dict[str, Any]]:
    """One row per ``metrics`` record of the last run that holds ``prefix`` keys: ``step`` and those
    values with the prefix dropped (``train/loss`` → ``loss``); later records of a step replace earlier ones."""
    rows: dict[int, dict[str, Any]] = {}
    for record in last_run(records):
        curves = {k.removeprefix(prefix): v for k, v in (record.get("metrics") or {}).items() if k.startswith(prefix)}
        if record.get("kind") == "metrics" and curves:
            rows[int(record["step"])] = {"step": int(record["step"]), **curves}
    return [rows[step] for step in sorted(rows)]


def write_curves_tsv(log_path: Path | str, out_path: Path | str, prefix: str = "train/") -> Path:
    """The curves of the last run in the JSONL log ``log_path`` whose keys start with ``prefix``
    (``train/``: every logged step; ``val/``: every evaluation on val) as a TSV (header ``step`` then
    the union of the curve names; an empty cell where a step lacks one) at ``out_path``."""
    rows = curve_rows(JsonlTracker(log_path).read(), prefix)
    columns = list(dict.fromkeys(["step", *(k for row in rows for k in row)]))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, delimiter="\t", restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out


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
