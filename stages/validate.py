"""DVC stage ``validate``: ``data/ingested/`` + params ``validate.*`` → ``data/validated/``; gates."""

from rewardline.config import build, load_params, section_of
from rewardline.paths import INGESTED_DIR, VALIDATED_DIR
from rewardline.stage import finish_gated_stage, stage_main
from rewardline.validation.validate import ValidateConfig, run_validate


def main() -> None:
    config = build(ValidateConfig, section_of(load_params(), "validate"), name="validate")
    run_validate(INGESTED_DIR, VALIDATED_DIR, config)
    finish_gated_stage("validate", VALIDATED_DIR)


if __name__ == "__main__":
    stage_main(main)
