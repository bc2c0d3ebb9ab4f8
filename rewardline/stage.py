"""Shared entry-point behaviour of the DVC stage scripts in ``stages/``."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from rewardline.errors import ConfigError, GateFailed

METRICS_DIR = Path("metrics")


def publish_metrics(stage_out: Path, stage: str) -> Path:
    """Copy ``stage_out/metrics.json`` to ``metrics/<stage>.json`` (the file dvc.yaml declares as metrics)."""
    METRICS_DIR.mkdir(exist_ok=True)
    target = METRICS_DIR / f"{stage}.json"
    shutil.copyfile(stage_out / "metrics.json", target)
    return target


def stage_main(main: Callable[[], None]) -> None:
    """Run a stage; a failed gate or bad config ends the process with a message (exit 1 / 2)."""
    try:
        main()
    except GateFailed as err:
        print(str(err), file=sys.stderr)
        sys.exit(1)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
