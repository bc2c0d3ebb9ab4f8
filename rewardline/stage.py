"""Shared entry-point behaviour of the DVC stage scripts in ``stages/``.

What DVC shows (``dvc metrics show`` / ``diff``) is the *headline*: :data:`HEADLINE` picks about 30
numbers across the stages out of each stage's full ``<out>/metrics.json`` into ``metrics/<stage>.json``.
The full metrics (per category, gate tables, quarantine reasons, ...) stay in ``<out>/metrics.json``
and the reports; the registry and the flows read those.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rewardline import paths
from rewardline.errors import GateFailed, describe, verbose_from_env
from rewardline.gates import check_output
from rewardline.report import print_summary

METRICS_DIR = paths.METRICS_DIR

#: ``metrics/<stage>.json`` keys taken from ``<out>/metrics.json`` (those present; lists become their length).
HEADLINE: dict[str, tuple[str, ...]] = {  # at most 40 numbers in all (dvc metrics show; tests/test_dvc_outputs.py)
    "ingest": ("rows_in", "rows_quarantined", "quarantined_share", "gates_passed"),
    "validate": ("krippendorff_alpha", "annotators_excluded", "gates_passed"),
    "pairs": ("pairs_train", "pairs_val", "pairs_test"),
    "train": ("train_loss", "train_accuracy", "val_accuracy", "steps", "train_seconds"),
    "evaluate": ("accuracy", "accuracy_ci_low", "ece_calibrated", "temperature", "length_bias", "champion_diff",
                 "gates_passed"),
    "bon": ("status", "gold_n_max", "gain_n_max_ci_low", "overoptimization", "gates_passed"),
    "prm_ingest": ("solutions_ok", "rows_quarantined", "gates_passed"),
    "prm_train": ("val_accuracy", "train_seconds"),
    "prm_evaluate": ("step_auroc", "bon_min", "bon_random", "bon_majority", "bon_gain_ci_low", "gates_passed"),
}
#: Headline keys that are text, not numbers (the rest count toward the 40).
TEXT_HEADLINE = frozenset({"status"})


def headline_metrics(metrics: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The :data:`HEADLINE` keys of ``metrics`` that it holds (a list, e.g. the excluded annotators, as its length)."""
    keys = HEADLINE.get(stage)
    if keys is None:
        return dict(metrics)
    return {k: (len(metrics[k]) if isinstance(metrics[k], list | tuple) else metrics[k]) for k in keys if k in metrics}


def publish_metrics(stage_out: Path, stage: str) -> Path:
    """Write the headline of ``stage_out/metrics.json`` to ``metrics/<stage>.json`` (what dvc.yaml declares)."""
    target = paths.stage_metrics(stage)
    target.parent.mkdir(exist_ok=True)
    full = json.loads((stage_out / paths.METRICS_FILE).read_text())
    target.write_text(json.dumps(headline_metrics(full, stage), indent=2, sort_keys=True) + "\n")
    return target


def publish_plots(plots_dir: Path, names: tuple[str, ...] = paths.EVALUATE_PLOT_FILES) -> list[Path]:
    """Copy ``names`` (default :data:`rewardline.paths.EVALUATE_PLOT_FILES`) from ``plots_dir`` into
    ``metrics/plots/`` (what dvc.yaml's ``plots:`` name; why outside the cached stage outputs:
    :data:`rewardline.paths.EVALUATE_PLOTS`)."""
    paths.EVALUATE_PLOTS.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in names:
        target = paths.EVALUATE_PLOTS / name
        target.write_bytes((plots_dir / name).read_bytes())
        copied.append(target)
    return copied


def summarize_stage(stage: str, stage_out: Path) -> None:
    """Print the stage's headline numbers as a short table (stdout; DVC shows it in its log)."""
    target = paths.stage_metrics(stage)
    if target.exists():
        print_summary(f"{stage}: {stage_out}", json.loads(target.read_text()))


def finish_gated_stage(stage: str, stage_out: Path, show_report: bool = False) -> None:
    """The end of a gated stage: publish its metrics, print their summary, then the one gate check
    (:func:`rewardline.gates.check`).

    The Markdown report is printed when ``show_report``, and always on a failed gate (it holds
    the details: quarantined records, failed expectations, headline numbers); then
    :class:`GateFailed` is raised (exit 1).
    """
    publish_metrics(stage_out, stage)
    report = stage_out / paths.REPORT_FILE
    if show_report and report.exists():
        print(report.read_text())
    summarize_stage(stage, stage_out)
    try:
        check_output(stage_out)
    except GateFailed:
        if not show_report and report.exists():
            print(report.read_text())
        raise


def artifact_bars_on_terminal_only() -> None:
    """MLflow's artifact download / upload bars only when stderr is a terminal (as training's own bar): to a log
    file, a pipe or cron's mail they are a screen of carriage returns. An explicit setting of the variable wins."""
    if not sys.stderr.isatty():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def configure_logging(verbosity: int = 0) -> None:
    """``logging`` to stderr: INFO (``verbosity`` 0), DEBUG (> 0) or WARNING (< 0) for rewardline;
    third-party libraries (MLflow, alembic, urllib3, httpx, Great Expectations, ...) at WARNING unless
    ``verbosity`` > 1; MLflow's artifact bars only on a terminal (:func:`artifact_bars_on_terminal_only`)."""
    artifact_bars_on_terminal_only()
    level = logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0 else logging.WARNING
    if verbosity <= 1:  # MLflow sets its own logger's level from this when it is imported (later, lazily)
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.basicConfig(level=logging.WARNING if verbosity <= 1 else logging.DEBUG,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)
    logging.getLogger("rewardline").setLevel(level)
    if verbosity < 0:  # quiet: no progress bars of huggingface_hub / transformers ("Loading weights", shards)
        _disable_progress_bars()
    for noisy in ("mlflow", "alembic", "urllib3", "httpx", "great_expectations", "botocore", "filelock"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity > 1 else logging.WARNING)


def _disable_progress_bars() -> None:
    """Silence the Hugging Face progress bars: the environment for libraries not yet imported (transformers reads
    it when imported), their switches for those already imported."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


#: What an interrupted command says (exit 130): outputs are published whole or not at all.
INTERRUPTED = "interrupted: the output is as it was before the run (outputs appear whole or not at all)"


def stage_main(main: Callable[[], None]) -> None:
    """Run a stage with INFO logging; end the process with the exit-code contract of :mod:`rewardline.errors`:
    1 a gate failed, 2 bad input or parameters, 3 a transient / environment or internal error, 130 interrupted
    (one line on stderr; the traceback with ``REWARDLINE_VERBOSE=1``)."""
    configure_logging()
    started = datetime.now(UTC)
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback, 128 + SIGINT
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - every failure leaves with the contract's exit code
        code, text = describe(err, verbose=verbose_from_env())
        print(text, file=sys.stderr)
        sys.exit(code)
    record_stage_times(Path(main.__code__.co_filename).stem, started, datetime.now(UTC))  # stages/<stage>.py


def record_stage_times(stage: str, started: datetime, ended: datetime) -> Path:
    """Write ``{"started_at", "ended_at"}`` (ISO 8601 UTC) to :func:`rewardline.paths.stage_times`: the
    real run time of a stage, which ``register`` gives the stage's MLflow run (outputs never hold it)."""
    target = paths.stage_times(stage)
    target.parent.mkdir(parents=True, exist_ok=True)
    times = {"started_at": started.isoformat(timespec="milliseconds"),
             "ended_at": ended.isoformat(timespec="milliseconds")}
    target.write_text(json.dumps(times) + "\n")
    return target
