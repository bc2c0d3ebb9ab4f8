"""DVC stage ``ingest``: params ``ingest.*`` → ``data/ingested/`` (see dvc.yaml)."""

from pathlib import Path

from rewardline.config import build, load_params
from rewardline.data.ingest import IngestConfig, Source, run_ingest
from rewardline.stage import publish_metrics, stage_main

OUT = Path("data/ingested")


def main() -> None:
    section = dict(load_params()["ingest"])
    section["sources"] = [Source(**source) for source in section["sources"]]
    run_ingest(build(IngestConfig, section, name="ingest"), OUT)
    publish_metrics(OUT, "ingest")


if __name__ == "__main__":
    stage_main(main)
