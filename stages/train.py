"""DVC stage ``train``: ``data/pairs/`` + params ``train.*`` → ``models/reward-model/``.

Multi-GPU: ``torchrun --nproc-per-node N stages/train.py`` runs the same code under DDP.
"""

from rewardline.config import build, load_params
from rewardline.data.tables import write_json
from rewardline.paths import MODEL_DIR, PAIRS_DIR, TRAIN_LOG, stage_metrics
from rewardline.stage import stage_main
from rewardline.tracking import JsonlTracker
from rewardline.training.loop import TrainConfig, train


def main() -> None:
    config = build(TrainConfig, load_params()["train"], name="train")
    metrics = train(PAIRS_DIR, MODEL_DIR, config, JsonlTracker(TRAIN_LOG))
    if metrics.get("is_main", True):
        write_json(metrics, stage_metrics("train"))


if __name__ == "__main__":
    stage_main(main)
