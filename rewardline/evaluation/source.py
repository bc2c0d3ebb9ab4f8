"""Evaluate a model on a whole dataset: a pairs directory, or a raw source file / folder in any ingest format.

``rewardline evaluate --data SRC``:

* SRC is a pairs directory (the tables ``test``, ``responses`` and ``prompts``): its
  val / test splits are evaluated as by the evaluate stage (:func:`rewardline.evaluation.run.run_evaluate`);
* otherwise SRC is read like an ingest source (a file, a folder, ``s3://``; ``--format`` or auto):
  ingested into a temporary directory (no quarantine gate: every record is read, faulty ones are
  counted and their quarantine table is copied to the output), every ranking of the valid records is
  expanded into its pairs (``ties: skip``, no margin) with *no split*: all pairs are test and val is
  empty, so the temperature is 1 and the "calibrated" metrics equal the raw ones (nothing held out to
  fit T on). Validation (annotator agreement and exclusion) is not applied: a benchmark is scored as
  published.

Its ``metrics.json`` is the evaluate stage's (accuracy with CI, by category, RewardBench sections,
best-of-N; :mod:`rewardline.evaluation.benchmark`) plus ``data``: the source's record accounting
``rows_in = rows_evaluated + rows_quarantined`` and the quarantine reasons.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pyarrow as pa

from rewardline.data import schema
from rewardline.data.ingest import IngestConfig, Source, run_ingest
from rewardline.data.tables import (
    STEP_DATA,
    copy_table,
    has_step_data,
    read_table,
    stage_kind,
    stage_tables,
    table_path,
    write_json,
    write_part,
)
from rewardline.evaluation.evaluate import EvalConfig
from rewardline.evaluation.run import run_evaluate
from rewardline.modeling.step_scores import refuse_process_model
from rewardline.pairs.expand import PairsConfig, anchor_columns, build_pairs
from rewardline.paths import METRICS_FILE


def is_pairs_dir(data: str) -> bool:
    """A local directory holding a pairs stage's test split and tables."""
    path = Path(data)
    return path.is_dir() and all(table_path(path, name).exists() for name in ("test", "prompts", "responses"))


def pairs_from_source(data: str, fmt: str, work: Path) -> tuple[Path, dict]:
    """Ingest ``data`` into ``work`` and write a pairs directory whose test split holds every pair.

    Returns (the pairs directory, the source's accounting for ``metrics.json``)."""
    ingested, pairs_dir = work / "ingested", work / "pairs"
    ingest = run_ingest(IngestConfig(sources=[Source(path=data, format=fmt)], max_quarantine_share=1.0), ingested)
    rankings = read_table(table_path(ingested, "rankings"))
    responses = read_table(table_path(ingested, "responses"), columns=anchor_columns(ingested))
    pairs, counts = build_pairs(rankings, read_table(table_path(ingested, "prompts")), PairsConfig(),
                                responses)  # soft anchor judgements: the judge's p is the label
    pairs = pairs.set_column(pairs.schema.get_field_index("split"), "split",
                             pa.array(["test"] * pairs.num_rows, pa.string()))
    pairs_dir.mkdir(parents=True)
    write_part(pairs, pairs_dir, "test")
    for split in ("train", "val"):
        write_part(schema.empty(schema.PAIRS), pairs_dir, split)
    for name in ("prompts", "responses"):
        copy_table(ingested, pairs_dir, name)
    accounting = {
        "source": data,
        "formats": ingest["rows_in_by_format"],
        "rows_in": ingest["rows_in"],
        "rows_evaluated": ingest["rows_ok"],
        "rows_quarantined": ingest["rows_quarantined"],
        "quarantine_reasons": ingest["quarantine_reasons"],
        "pairs": pairs.num_rows,
        "tied_comparisons_skipped": counts["ties_dropped"],
    }
    return pairs_dir, accounting


def evaluate_data(model_dir: Path, data: str, out_dir: Path, config: EvalConfig, champion_dir: Path | None = None,
                  fmt: str = "auto", champion_missing: str | None = None) -> dict:
    """Evaluate ``model_dir`` on a pairs directory (val/test) or on every pair of a raw source; see the module doc.
    A process reward model is refused (exit 2): its evaluation is the ``prm_evaluate`` stage or ``rewardline bon``."""
    refuse_process_model(model_dir, "evaluate")  # pairs would be scored by a pooled forward, not by its steps
    if is_pairs_dir(data):
        if fmt != "auto":
            raise ValueError(f"{data} is a pairs directory; --format {fmt} applies to raw sources only")
        return run_evaluate(model_dir, Path(data), out_dir, config, champion_dir, champion_missing)
    if Path(data).is_dir() and stage_kind(Path(data)):  # a stage's output, not a raw source: say so (exit 2)
        stage_tables(Path(data), ("test", "prompts", "responses"),
                     expected="a pairs directory or a raw source file / folder in an ingest format")
    with tempfile.TemporaryDirectory(prefix="rewardline-evaluate-") as tmp:
        pairs_dir, accounting = pairs_from_source(data, fmt, Path(tmp))
        if accounting["pairs"] == 0 and has_step_data(Path(tmp) / "ingested"):
            formats = ", ".join(accounting["formats"])
            raise ValueError(f"{data}: no pair to evaluate: its records are {STEP_DATA} (format {formats}), for a "
                             f"process reward model (`rewardline ingest {data} --format {formats} --out DIR`, then "
                             "`rewardline train --data DIR --set objective=prm`; "
                             "the prm_evaluate stage evaluates it); evaluate scores an outcome reward model on "
                             "preference data (a pairs directory or a raw source of rankings or pairs)")
        if accounting["pairs"] == 0:
            raise ValueError(f"{data}: no pair to evaluate ({accounting['rows_in']} records read, "
                             f"{accounting['rows_quarantined']} quarantined: {accounting['quarantine_reasons']})")
        metrics = run_evaluate(model_dir, pairs_dir, out_dir, config, champion_dir, champion_missing)
        if accounting["rows_quarantined"]:
            shutil.copyfile(Path(tmp) / "ingested" / schema.QUARANTINE_FILE, out_dir / schema.QUARANTINE_FILE)
    metrics["data"] = accounting
    write_json(metrics, out_dir / METRICS_FILE)
    return metrics
