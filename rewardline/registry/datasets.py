"""The pipeline's datasets as MLflow dataset inputs (the runs list's *Dataset* column), digests from DVC.

Each stage run that reads data gets :func:`log_stage_datasets`: ``train`` the pairs ``train`` and ``val``
splits, ``evaluate`` the ``test`` split (contexts ``train`` / ``val`` / ``test``), ``ingest`` its output
``data/ingested`` (context ``ingested``). A dataset's digest is DVC's: the ``dvc.lock`` md5 of the output
directory (``<md5>.dir``) for a whole output, and the md5 of the file's bytes (what DVC lists for that
file inside the directory's manifest) for a split; the output's ``dvc.lock`` md5 is also a tag of the
input (``dvc_out``, ``dvc_md5``). Outputs missing on disk are skipped.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from rewardline.paths import INGESTED_DIR, PAIRS_DIR
from rewardline.registry.lineage import dvc_hashes

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: stage -> (project path, dataset name, context) of what the stage's run records as inputs.
STAGE_DATASETS: dict[str, tuple[tuple[Path, str, str], ...]] = {
    "ingest": ((INGESTED_DIR, "ingested", "ingested"),),
    "train": ((PAIRS_DIR / "train.parquet", "pairs-train", "train"), (PAIRS_DIR / "val.parquet", "pairs-val", "val")),
    "evaluate": ((PAIRS_DIR / "test.parquet", "pairs-test", "test"),),
}


def file_md5(path: Path) -> str:
    """md5 of the file's bytes, as DVC hashes a file."""
    digest = hashlib.md5()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def log_stage_datasets(mlflow_client: MlflowClient, run_id: str, root: Path, stage: str) -> list[str]:
    """Log the datasets of ``stage`` (:data:`STAGE_DATASETS`) as inputs of run ``run_id``; return their names."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    hashes = dvc_hashes(root)
    inputs, names = [], []
    for rel, name, context in STAGE_DATASETS.get(stage, ()):
        path = root / rel
        if not path.exists():
            continue
        out = rel if path.is_dir() else rel.parent  # the DVC output that holds it
        out_md5 = hashes.get(f"dvc.{out.as_posix()}.md5", "")
        digest = out_md5 if path.is_dir() else file_md5(path)
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
