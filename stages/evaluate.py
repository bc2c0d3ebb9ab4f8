"""DVC stage ``evaluate``: model + ``data/pairs/`` + params ``evaluate.*`` → ``reports/evaluate/``; gates."""

from pathlib import Path

from rewardline.config import build, load_params
from rewardline.evaluate import EvalConfig
from rewardline.evaluate_model import run_evaluate
from rewardline.gates import check_gates
from rewardline.stage import publish_metrics, stage_main

MODEL, PAIRS, OUT = Path("models/reward-model"), Path("data/pairs"), Path("reports/evaluate")


def main() -> None:
    params = dict(load_params()["evaluate"])
    champion = params.pop("champion_model", None)
    metrics = run_evaluate(MODEL, PAIRS, OUT, build(EvalConfig, params, name="evaluate"),
                           Path(champion) if champion else None)
    publish_metrics(OUT, "evaluate")
    print((OUT / "report.md").read_text())
    check_gates(metrics, report_path=str(OUT / "report.md"))


if __name__ == "__main__":
    stage_main(main)
