"""The registry's names: the one definition of each literal the pipeline, the CLI and the flows share.

``params.yaml`` keeps its own values (``register.model_name``, ``register.experiment``,
``register.alias``, ``retrain.champion_alias``, ``evaluate.champion_model``); these are the
defaults wherever a section leaves a key out. Importing this module imports nothing else.
"""

from __future__ import annotations

MODEL_NAME = "reward-model"  # the registered model
PRM_MODEL_NAME = "process-reward-model"  # the registered process reward model (a score per reasoning step)
MODEL_TYPE_TAG = "model_type"  # version tag: "orm" (one reward per response) or "prm" (per step)
EXPERIMENT = "rewardline"  # the MLflow experiment of the pipeline runs
CHAMPION = "champion"  # the alias of the model in service; moved only by people or an opted-in policy
CHALLENGER = "challenger"  # the alias every newly registered, gate-passing version gets
TAGS_ENV = "REWARDLINE_MLFLOW_TAGS"  # extra pipeline-run tags, a JSON object (set by the Prefect flow)


def model_uri(name: str = MODEL_NAME, alias: str | None = CHAMPION, version: int | str | None = None) -> str:
    """``models:/<name>@<alias>``, or ``models:/<name>/<version>`` when a version is given."""
    return f"models:/{name}/{version}" if version is not None else f"models:/{name}@{alias}"
