"""DVC stage ``train``: ``data/pairs/`` + params ``train.*`` → ``models/reward-model/``.

Multi-GPU: ``torchrun --nproc-per-node N stages/train.py`` runs the same code under DDP.
"""

from pathlib import Path

from rewardline.config import build, load_params
from rewardline.data.tables import write_json
from rewardline.stage import METRICS_DIR, stage_main
from rewardline.tracking import JsonlTracker
from rewardline.training.loop import TrainConfig, train

IN, OUT = Path("data/pairs"), Path("models/reward-model")


def main() -> None:
    config = build(TrainConfig, load_params()["train"], name="train")
    metrics = train(IN, OUT, config, JsonlTracker(METRICS_DIR / "train_log.jsonl"))
    if metrics.get("is_main", True):
        write_json(metrics, METRICS_DIR / "train.json")


if __name__ == "__main__":
    stage_main(main)
