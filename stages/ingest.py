"""DVC stage ``ingest``: params ``ingest.*`` → ``data/ingested/`` (see dvc.yaml); gate on the quarantined share."""

from rewardline.config import build, load_params
from rewardline.data.ingest import IngestConfig, run_ingest
from rewardline.paths import INGESTED_DIR
from rewardline.stage import finish_gated_stage, stage_main


def main() -> None:
    run_ingest(build(IngestConfig, load_params()["ingest"]), INGESTED_DIR)  # sources validated as Source models
    finish_gated_stage("ingest", INGESTED_DIR)


if __name__ == "__main__":
    stage_main(main)
