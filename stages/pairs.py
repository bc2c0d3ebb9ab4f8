"""DVC stage ``pairs``: ``data/validated/`` + params ``pairs.*`` → ``data/pairs/``."""

from rewardline.config import build, load_params, section_of
from rewardline.pairs.expand import PairsConfig, run_pairs
from rewardline.paths import PAIRS_DIR, VALIDATED_DIR
from rewardline.stage import publish_metrics, stage_main, summarize_stage


def main() -> None:
    run_pairs(VALIDATED_DIR, PAIRS_DIR, build(PairsConfig, section_of(load_params(), "pairs"), name="pairs"))
    publish_metrics(PAIRS_DIR, "pairs")
    summarize_stage("pairs", PAIRS_DIR)


if __name__ == "__main__":
    stage_main(main)
