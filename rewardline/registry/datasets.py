"""The pipeline's datasets as MLflow dataset inputs (the runs list's *Dataset* column), digests from DVC.

Each stage run that reads data gets :func:`log_stage_datasets`: ``train`` the pairs ``train`` and ``val``
splits, ``evaluate`` the ``test`` split (contexts ``train`` / ``val`` / ``test``), ``ingest`` its output
``data/ingested`` (context ``ingested``). A dataset's digest is DVC's: the ``dvc.lock`` md5 of the output
directory (``<md5>.dir``) for a whole output, and for a split the md5 of its bytes (a split file's is what
DVC lists for it in the directory's manifest; a partitioned split's covers its parts in order); the
``dvc.lock`` md5 of the output that holds it is also a tag of the input (``dvc_out``, ``dvc_md5``). Outputs
missing on disk are skipped.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from rewardline.data.tables import content_digest, table_path
from rewardline.paths import INGESTED_DIR, PAIRS_DIR
from rewardline.registry.lineage import dvc_hashes

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: stage -> (DVC output, split or None for the whole output, dataset name, context) of the stage's inputs.
STAGE_DATASETS: dict[str, tuple[tuple[Path, str | None, str, str], ...]] = {
    "ingest": ((INGESTED_DIR, None, "ingested", "ingested"),),
    "train": ((PAIRS_DIR, "train", "pairs-train", "train"), (PAIRS_DIR, "val", "pairs-val", "val")),
    "evaluate": ((PAIRS_DIR, "test", "pairs-test", "test"),),
}


def log_stage_datasets(mlflow_client: MlflowClient, run_id: str, root: Path, stage: str) -> list[str]:
    """Log the datasets of ``stage`` (:data:`STAGE_DATASETS`) as inputs of run ``run_id``; return their names."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    hashes = dvc_hashes(root)
    inputs, names = [], []
    for out, split, name, context in STAGE_DATASETS.get(stage, ()):
        path = root / out if split is None else table_path(root / out, split)
        if not path.exists():
            continue
        out_md5 = hashes.get(f"dvc.{out.as_posix()}.md5", "")
        digest = out_md5 if split is None else content_digest(path, "md5")
        if not digest:  # a directory output before any `dvc commit`: nothing names its content
            continue
        with warnings.catch_warnings():  # MLflow registers its local-file source class twice and says so
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(path.resolve().as_uri())
        dataset = MetaDataset(source, name=name, digest=digest)
        tags = [InputTag(key="mlflow.data.context", value=context), InputTag(key="dvc_out", value=out.as_posix())]
        if out_md5:
            tags.append(InputTag(key="dvc_md5", value=out_md5))
        inputs.append(DatasetInput(dataset=dataset._to_mlflow_entity(), tags=tags))
        names.append(name)
    if inputs:
        mlflow_client.log_inputs(run_id, datasets=inputs)
    return names
