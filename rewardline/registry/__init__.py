"""Registry: model bundles, lineage, the pipeline record and the model registry (the only package
that imports MLflow; every ``mlflow`` import is inside a function, so importing stays cheap).

* :mod:`.names` – the model name, experiment and alias literals;
* :mod:`.base` – the :class:`ModelRegistry` interface, :class:`ModelVersion`, promotion;
* :mod:`.champion` – ``evaluate.champion_model`` → a local model directory;
* :mod:`.mlflow_backend` – MLflow configuration and :class:`MlflowRegistry`;
* :mod:`.mlflow_values` – keys and values within MLflow's limits, batched logging;
* :mod:`.mlflow_tracking` – :class:`MlflowTracker`, a live run for training;
* :mod:`.lineage` – git, DVC hashes, dataset sizes, gates as tags;
* :mod:`.bundle` – the project's stage outputs → one bundle directory;
* :mod:`.pyfunc` – the pyfunc model (the registered versions' stable ``loader_module``);
* :mod:`.record` – the pipeline's MLflow record and the ``register`` stage.
"""

from __future__ import annotations

from pathlib import Path

from rewardline.registry.base import ModelRegistry, ModelVersion

__all__ = ["ModelRegistry", "ModelVersion", "open_registry"]


def open_registry(project_dir: Path | str | None = None) -> ModelRegistry:
    """The project's model registry: MLflow at ``MLFLOW_TRACKING_URI``, else the embedded
    ``sqlite:///<project_dir>/mlflow.db`` (``project_dir`` None: as configured earlier in this
    process, else the current directory)."""
    from rewardline.registry.mlflow_backend import MlflowRegistry

    return MlflowRegistry.for_project(project_dir) if project_dir is not None else MlflowRegistry()
