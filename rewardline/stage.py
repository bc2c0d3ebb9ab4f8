"""Shared entry-point behaviour of the DVC stage scripts in ``stages/``."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from rewardline import paths
from rewardline.errors import ConfigError, GateFailed
from rewardline.gates import check_output

METRICS_DIR = paths.METRICS_DIR


def publish_metrics(stage_out: Path, stage: str) -> Path:
    """Copy ``stage_out/metrics.json`` to ``metrics/<stage>.json`` (the file dvc.yaml declares as metrics)."""
    target = paths.stage_metrics(stage)
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(stage_out / paths.METRICS_FILE, target)
    return target


def finish_gated_stage(stage: str, stage_out: Path, show_report: bool = False) -> None:
    """The end of a gated stage: publish its metrics, then the one gate check (:func:`rewardline.gates.check`).

    The Markdown report is printed when ``show_report``, and always on a failed gate (it holds
    the details: quarantined records, failed expectations, headline numbers); then
    :class:`GateFailed` is raised (exit 1).
    """
    publish_metrics(stage_out, stage)
    report = stage_out / paths.REPORT_FILE
    if show_report and report.exists():
        print(report.read_text())
    try:
        check_output(stage_out)
    except GateFailed:
        if not show_report and report.exists():
            print(report.read_text())
        raise


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
