"""DVC stage ``bon``: model + ``data/validated/`` + ``data/pairs/`` + params ``evaluate.*`` → ``reports/bon/``; gates.

Best-of-N on the test prompts whose candidates carry a judged preference against the anchor
(:mod:`rewardline.evaluation.bon_stage`); ``skipped`` (passing) when there are none. With a champion
registered (``evaluate.champion_model``) its curve on the same prompts is reported beside it; with a ``models:/``
name close to a registered one instead, ``metrics.json`` and ``report.md`` say so (as evaluate's gate report)."""

from rewardline.config import build, load_params, section_of
from rewardline.evaluation.bon import BonConfig
from rewardline.evaluation.bon_stage import run_bon_stage
from rewardline.paths import BON_DIR, BON_PLOT_FILES, MODEL_DIR, PAIRS_DIR, VALIDATED_DIR
from rewardline.registry.champion import resolved_champion, split_champion
from rewardline.stage import finish_gated_stage, publish_plots, stage_main


def main() -> None:
    champion, params = split_champion(section_of(load_params(), "evaluate"))
    config = build(BonConfig, {k: v for k, v in params.items() if k in BonConfig.model_fields}, name="evaluate")
    with resolved_champion(champion) as (champion_dir, why):  # a mistaken-looking name: why, also on stderr
        if champion:
            print(f"champion: {champion} → {champion_dir or 'none registered (no champion curve)'}")
        run_bon_stage(MODEL_DIR, VALIDATED_DIR, PAIRS_DIR, BON_DIR, config, champion_dir, why)
    publish_plots(BON_DIR, BON_PLOT_FILES)  # metrics/plots/: what dvc.yaml's plots name
    finish_gated_stage("bon", BON_DIR, show_report=True)


if __name__ == "__main__":
    stage_main(main)
