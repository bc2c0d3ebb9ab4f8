"""DVC stage ``ingest``: params ``ingest.*`` → ``data/ingested/`` (see dvc.yaml); gate on the quarantined share."""

from rewardline.config import build, load_params, section_of
from rewardline.data.ingest import IngestConfig, check_source_paths, run_ingest
from rewardline.paths import INGESTED_DIR
from rewardline.stage import finish_gated_stage, stage_main


def main() -> None:
    config = build(IngestConfig, section_of(load_params(), "ingest"))  # sources validated as Source models
    check_source_paths(config)  # a mistyped path names its ingest.sources[i].path
    run_ingest(config, INGESTED_DIR)
    finish_gated_stage("ingest", INGESTED_DIR)


if __name__ == "__main__":
    stage_main(main)
