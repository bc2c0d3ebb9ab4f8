"""DVC stage ``pairs``: ``data/validated/`` + params ``pairs.*`` → ``data/pairs/``."""

from pathlib import Path

from rewardline.config import build, load_params
from rewardline.pairs.expand import PairsConfig, run_pairs
from rewardline.stage import publish_metrics, stage_main

IN, OUT = Path("data/validated"), Path("data/pairs")


def main() -> None:
    run_pairs(IN, OUT, build(PairsConfig, load_params()["pairs"], name="pairs"))
    publish_metrics(OUT, "pairs")


if __name__ == "__main__":
    stage_main(main)
