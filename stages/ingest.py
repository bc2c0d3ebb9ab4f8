"""DVC stage ``ingest``: params ``ingest.*`` → ``data/ingested/`` (see dvc.yaml)."""

from pathlib import Path

from rewardline.config import build, load_params
from rewardline.data.ingest import IngestConfig, run_ingest
from rewardline.stage import publish_metrics, stage_main

OUT = Path("data/ingested")


def main() -> None:
    run_ingest(build(IngestConfig, load_params()["ingest"]), OUT)  # sources validated as Source models
    publish_metrics(OUT, "ingest")


if __name__ == "__main__":
    stage_main(main)
