"""DVC stage ``train``: ``data/pairs/`` + params ``train.*`` → ``models/reward-model/``.

Writes the full metrics to ``models/reward-model/metrics.json`` and their headline to
``metrics/train.json``; the live log ``metrics/train_log.jsonl`` and its curves as
``metrics/train_log.tsv`` and the val evaluations as ``metrics/val_log.tsv`` (DVC plots). The same params and
curves, and system metrics, go live to an MLflow run (``MLFLOW_TRACKING_URI``, else the embedded store;
``REWARDLINE_MLFLOW_LIVE=0`` turns it off; a failing server only warns) whose id, ``mlflow_run_id`` in the
metrics, ``register`` nests under the pipeline run. Multi-GPU: ``torchrun --nproc-per-node N stages/train.py``
runs the same code under DDP or FSDP (``train.strategy``); several nodes: docs/distributed.md.
"""

import os

from rewardline.config import build, load_params, section_of
from rewardline.data.tables import write_json
from rewardline.paths import METRICS_FILE, MODEL_DIR, PAIRS_DIR, TRAIN_CURVES, TRAIN_LOG, VAL_CURVES
from rewardline.registry.live import LiveRun, live_enabled
from rewardline.stage import publish_metrics, stage_main, summarize_stage
from rewardline.tracking import JsonlTracker, MultiTracker, write_curves_tsv
from rewardline.training.loop import TrainConfig, train


def main() -> None:
    config = build(TrainConfig, section_of(load_params(), "train"), name="train")
    live = LiveRun("train") if live_enabled() and _is_main_rank() else None
    trackers = (JsonlTracker(TRAIN_LOG), live) if live is not None else (JsonlTracker(TRAIN_LOG),)
    try:
        metrics = train(PAIRS_DIR, MODEL_DIR, config, MultiTracker(*trackers))
    except BaseException:
        if live is not None:
            live.close("FAILED")
        raise
    if _is_main_rank():  # under torchrun only rank 0 writes the outputs
        if live is not None and live.run_id is not None:
            metrics["mlflow_run_id"] = live.run_id
        write_json(metrics, MODEL_DIR / METRICS_FILE)
        publish_metrics(MODEL_DIR, "train")
        write_curves_tsv(TRAIN_LOG, TRAIN_CURVES)
        write_curves_tsv(TRAIN_LOG, VAL_CURVES, prefix="val/")
        summarize_stage("train", MODEL_DIR)
    if live is not None:
        live.close("FINISHED")


def _is_main_rank() -> bool:
    """Rank 0 of a torchrun launch (``RANK`` unset: a single process): only it opens the MLflow run."""
    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    stage_main(main)
