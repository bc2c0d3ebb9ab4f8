"""DVC stage ``prm_train``: ``data/prm/ingested/solutions.parquet`` + params ``train.*`` with ``prm.train.*``
over them (``objective: prm``) → ``models/process-reward-model/``; metrics in its ``metrics.json`` and
``metrics/prm_train.json``, the log in ``metrics/prm_train_log.jsonl``."""

from rewardline.config import load_params
from rewardline.data.tables import write_json
from rewardline.evaluation.process import prm_train_config
from rewardline.paths import METRICS_FILE, PRM_INGESTED_DIR, PRM_MODEL_DIR, PRM_TRAIN_LOG
from rewardline.stage import publish_metrics, stage_main, summarize_stage
from rewardline.tracking import JsonlTracker
from rewardline.training.loop import train


def main() -> None:
    metrics = train(PRM_INGESTED_DIR, PRM_MODEL_DIR, prm_train_config(load_params()), JsonlTracker(PRM_TRAIN_LOG))
    if metrics.get("is_main", True):
        write_json(metrics, PRM_MODEL_DIR / METRICS_FILE)
        publish_metrics(PRM_MODEL_DIR, "prm_train")
        summarize_stage("prm_train", PRM_MODEL_DIR)


if __name__ == "__main__":
    stage_main(main)
