"""DVC stage ``train``: ``data/pairs/`` + params ``train.*`` → ``models/reward-model/``.

Writes the full metrics to ``models/reward-model/metrics.json`` and their headline to
``metrics/train.json``; the live log ``metrics/train_log.jsonl`` and its curves as
``metrics/train_log.tsv`` and the val evaluations as ``metrics/val_log.tsv`` (DVC plots). Multi-GPU:
``torchrun --nproc-per-node N stages/train.py`` runs the same code under DDP or FSDP (``train.strategy``);
several nodes: docs/distributed.md.
"""

from rewardline.config import build, load_params
from rewardline.data.tables import write_json
from rewardline.paths import METRICS_FILE, MODEL_DIR, PAIRS_DIR, TRAIN_CURVES, TRAIN_LOG, VAL_CURVES
from rewardline.stage import publish_metrics, stage_main, summarize_stage
from rewardline.tracking import JsonlTracker, write_curves_tsv
from rewardline.training.loop import TrainConfig, train


def main() -> None:
    config = build(TrainConfig, load_params()["train"], name="train")
    metrics = train(PAIRS_DIR, MODEL_DIR, config, JsonlTracker(TRAIN_LOG))
    if metrics.get("is_main", True):
        write_json(metrics, MODEL_DIR / METRICS_FILE)
        publish_metrics(MODEL_DIR, "train")
        write_curves_tsv(TRAIN_LOG, TRAIN_CURVES)
        write_curves_tsv(TRAIN_LOG, VAL_CURVES, prefix="val/")
        summarize_stage("train", MODEL_DIR)


if __name__ == "__main__":
    stage_main(main)
