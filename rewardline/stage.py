"""Shared entry-point behaviour of the DVC stage scripts in ``stages/``."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from rewardline import paths
from rewardline.errors import GateFailed, describe, verbose_from_env
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
    """Run a stage; end the process with the exit-code contract of :mod:`rewardline.errors`:
    1 a gate failed, 2 bad input or parameters, 3 a transient / environment or internal error
    (one line on stderr; the traceback with ``REWARDLINE_VERBOSE=1``)."""
    try:
        main()
    except Exception as err:  # noqa: BLE001 - every failure leaves with the contract's exit code
        code, text = describe(err, verbose=verbose_from_env())
        print(text, file=sys.stderr)
        sys.exit(code)
