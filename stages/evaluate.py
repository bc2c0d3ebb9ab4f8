"""DVC stage ``evaluate``: model + ``data/pairs/`` + params ``evaluate.*`` → ``reports/evaluate/``; gates.

``evaluate.champion_model`` is a registry URI (``models:/reward-model@champion``, resolved through
MLflow) or a model directory; with no champion registered the champion gate is skipped (its reason says
which registered name is close when the URI names an unregistered model)."""

from rewardline.config import build, load_params, section_of
from rewardline.evaluation.evaluate import EvalConfig
from rewardline.evaluation.run import run_evaluate
from rewardline.paths import EVALUATE_DIR, MODEL_DIR, PAIRS_DIR
from rewardline.registry.champion import resolved_champion, split_champion
from rewardline.stage import finish_gated_stage, publish_plots, stage_main


def main() -> None:
    champion, params = split_champion(section_of(load_params(), "evaluate"))
    config = build(EvalConfig, params, name="evaluate")
    with resolved_champion(champion) as (champion_dir, why):  # models:/reward-model@champion or a directory
        if champion:
            print(f"champion: {champion} → {champion_dir or 'none registered (champion gate skipped)'}")
        run_evaluate(MODEL_DIR, PAIRS_DIR, EVALUATE_DIR, config, champion_dir, why)
    publish_plots(EVALUATE_DIR / "plots")  # metrics/plots/: what dvc.yaml's plots name
    finish_gated_stage("evaluate", EVALUATE_DIR, show_report=True)


if __name__ == "__main__":
    stage_main(main)
