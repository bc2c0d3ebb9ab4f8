"""DVC stage ``evaluate``: model + ``data/pairs/`` + params ``evaluate.*`` → ``reports/evaluate/``; gates.

``evaluate.champion_model`` is a registry URI (``models:/reward-model@champion``, resolved through
MLflow) or a model directory; with no champion registered the champion gate is skipped."""

from pathlib import Path

from rewardline.config import build, load_params
from rewardline.evaluation.evaluate import EvalConfig
from rewardline.evaluation.gates import check_gates
from rewardline.evaluation.run import run_evaluate
from rewardline.registry.champion import resolved_model_dir, split_champion
from rewardline.stage import publish_metrics, stage_main

MODEL, PAIRS, OUT = Path("models/reward-model"), Path("data/pairs"), Path("reports/evaluate")


def main() -> None:
    champion, params = split_champion(load_params()["evaluate"])
    config = build(EvalConfig, params, name="evaluate")
    with resolved_model_dir(champion) as champion_dir:  # models:/reward-model@champion or a directory
        if champion:
            print(f"champion: {champion} → {champion_dir or 'none registered (champion gate skipped)'}")
        metrics = run_evaluate(MODEL, PAIRS, OUT, config, champion_dir)
    publish_metrics(OUT, "evaluate")
    print((OUT / "report.md").read_text())
    check_gates(metrics, report_path=str(OUT / "report.md"))


if __name__ == "__main__":
    stage_main(main)
