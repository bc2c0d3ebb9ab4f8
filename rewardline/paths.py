"""The pipeline's paths, relative to the project root: the one place that names them.

dvc.yaml declares the same paths (DVC reads YAML, not Python); ``tests/test_paths.py`` checks
that the two agree. Stage directories hold their tables plus the same three files::

    data/raw/ ──ingest──▶ data/ingested/ ──validate──▶ data/validated/ ──pairs──▶ data/pairs/
          ──train──▶ models/reward-model/ ──evaluate──▶ reports/evaluate/ ──bon──▶ reports/bon/
          ──register──▶ reports/register/
    each stage: <out>/metrics.json, copied to metrics/<stage>.json (the file DVC reads as metrics);
    gated stages (ingest, validate, evaluate, bon) also <out>/gates.json and <out>/report.md.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path("data")
RAW_DIR = DATA_DIR / "raw"  # the shipped sample (an ingest source)
FRESH_DIR = RAW_DIR / "fresh"  # fresh policy-sample batches the retrain flow appends (an ingest source)
INGESTED_DIR = DATA_DIR / "ingested"
VALIDATED_DIR = DATA_DIR / "validated"
PAIRS_DIR = DATA_DIR / "pairs"
INBOX_DIR = DATA_DIR / "inbox"  # retrain flow: batches dropped here
RETRAIN_LEDGER = DATA_DIR / "retrain" / "ledger.jsonl"  # retrain flow: exactly-once record of batches

MODEL_DIR = Path("models") / "reward-model"

REPORTS_DIR = Path("reports")
EVALUATE_DIR = REPORTS_DIR / "evaluate"
BON_DIR = REPORTS_DIR / "bon"  # best-of-N on the anchored test prompts
REGISTRATION = REPORTS_DIR / "register" / "registration.json"

METRICS_DIR = Path("metrics")
TRAIN_LOG = METRICS_DIR / "train_log.jsonl"  # the training log as it runs (params, curves; the registry reads it)
TRAIN_CURVES = METRICS_DIR / "train_log.tsv"  # its last run's curves, one row per logged step (DVC plots)
VAL_CURVES = METRICS_DIR / "val_log.tsv"  # its last run's val evaluations (every train.eval_every steps; DVC plots)
#: The evaluate stage's DVC plots, copied out of ``reports/evaluate/plots/`` as single ``cache: false`` files:
#: DVC resolves every top-level plot path when it runs an experiment, and a path inside a cached directory
#: output whose manifest is not in the cache (a fresh clone) fails ``dvc exp run`` with "failed to load directory".
EVALUATE_PLOTS = METRICS_DIR / "plots"
EVALUATE_PLOT_FILES = ("reliability.json", "accuracy_by_category.json", "reward_vs_length.csv", "reliability.png",
                       "accuracy_by_category.png", "reward_histogram.png", "reward_vs_length.png")
BON_PLOT_FILES = ("bon.csv", "bon.png")  # the bon stage's curve, also published to metrics/plots/

#: The process-reward-model pipeline (stages prm_ingest, prm_train, prm_evaluate; params.yaml: prm).
PRM_INGESTED_DIR = DATA_DIR / "prm" / "ingested"  # step-labelled solutions: train / val / test by problem
PRM_CANDIDATES_DIR = DATA_DIR / "prm" / "candidates"  # candidate solutions with outcomes: best-of-N only
PRM_MODEL_DIR = Path("models") / "process-reward-model"
PRM_EVALUATE_DIR = REPORTS_DIR / "prm-evaluate"
PRM_TRAIN_LOG = METRICS_DIR / "prm_train_log.jsonl"
PRM_STAGES = ("prm_ingest", "prm_train", "prm_evaluate")  # each publishes metrics/<stage>.json

#: When each stage last ran (``<stage>.json``: ``started_at``, ``ended_at``, ISO UTC), written by
#: :func:`rewardline.stage.stage_main`; not a DVC output (outputs hold no clock), git-ignored (.cache/).
STAGE_TIMES_DIR = Path(".cache") / "stage-times"

#: File names inside a stage's output directory.
METRICS_FILE = "metrics.json"
GATES_FILE = "gates.json"
REPORT_FILE = "report.md"

#: Output directory of each DVC stage (``register`` writes the single file :data:`REGISTRATION`).
STAGE_OUT: dict[str, Path] = {
    "ingest": INGESTED_DIR,
    "validate": VALIDATED_DIR,
    "pairs": PAIRS_DIR,
    "train": MODEL_DIR,
    "evaluate": EVALUATE_DIR,
    "bon": BON_DIR,
}
#: The stages with a quality gate (their output directory holds ``gates.json`` and ``report.md``).
GATED_STAGES = ("ingest", "validate", "evaluate", "bon")


def report_dir(stage: str) -> Path:
    """``reports/<stage>``."""
    return REPORTS_DIR / stage


def stage_times(stage: str) -> Path:
    """``.cache/stage-times/<stage>.json``: the stage's last start and end (wall clock, UTC)."""
    return STAGE_TIMES_DIR / f"{stage}.json"


def stage_metrics(stage: str) -> Path:
    """``metrics/<stage>.json``: the stage's metrics as dvc.yaml declares them."""
    return METRICS_DIR / f"{stage}.json"


def gate_report(stage: str) -> Path | None:
    """The Markdown gate report of a gated stage (``<out>/report.md``); None for a stage without gates."""
    return STAGE_OUT[stage] / REPORT_FILE if stage in GATED_STAGES else None


def gates_json(stage: str) -> Path | None:
    """The machine-readable gate report of a gated stage (``<out>/gates.json``); None without gates."""
    return STAGE_OUT[stage] / GATES_FILE if stage in GATED_STAGES else None
