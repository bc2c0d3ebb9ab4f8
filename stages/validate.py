"""DVC stage ``validate``: ``data/ingested/`` + params ``validate.*`` → ``data/validated/``; gates."""

from rewardline.config import build, load_params
from rewardline.paths import INGESTED_DIR, VALIDATED_DIR
from rewardline.stage import finish_gated_stage, stage_main
from rewardline.validation.validate import ValidateConfig, run_validate


def main() -> None:
    run_validate(INGESTED_DIR, VALIDATED_DIR, build(ValidateConfig, load_params()["validate"], name="validate"))
    finish_gated_stage("validate", VALIDATED_DIR)


if __name__ == "__main__":
    stage_main(main)
