"""DVC stage ``validate``: ``data/ingested/`` + params ``validate.*`` → ``data/validated/``."""

from pathlib import Path

from rewardline.config import build, load_params
from rewardline.stage import publish_metrics, stage_main
from rewardline.validation.validate import ValidateConfig, run_validate

IN, OUT = Path("data/ingested"), Path("data/validated")


def main() -> None:
    try:
        run_validate(IN, OUT, build(ValidateConfig, load_params()["validate"], name="validate"))
    finally:
        if (OUT / "metrics.json").exists():
            publish_metrics(OUT, "validate")


if __name__ == "__main__":
    stage_main(main)
