"""Stage 2, validate: Great Expectations suite, inter-annotator agreement, annotator exclusion, gate.

Output directory: the validated canonical tables (rankings of excluded annotators removed;
prompts, responses and the step-level ``solutions.parquet`` copied), ``data_docs/`` (GX Data
Docs HTML), ``report.md``, ``gates.json`` and ``metrics.json``.

Gates (:data:`VALIDATE_GATES`): every expectation passes, Krippendorff's α (after
exclusion) ≥ ``min_alpha``, and annotator exclusion leaves at least one ranking (``rankings_left``; skipped
for step-only data). When α is not measurable (e.g. no prompt was ranked by two
annotators) it is reported as null with the reason, and the α gate is skipped, unless
``require_overlap`` is true: then it fails. Step-level data (``solutions.parquet``, written by
ingest) has its own suite; step-only data (empty ranking tables, solutions present) is validated
by that suite alone.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from rewardline.config import Section
from rewardline.data import schema
from rewardline.data.buckets import PromptBuckets, stream_table
from rewardline.data.tables import (
    TableAppender,
    copy_table,
    part_files,
    part_name,
    read_table,
    remove_table,
    stage_tables,
    table_rows,
    table_schema,
    write_json,
)
from rewardline.gates import GateReport, GateSpec, evaluate_gates
from rewardline.ops.atomic import writes_output
from rewardline.paths import GATES_FILE, METRICS_FILE, REPORT_FILE
from rewardline.report import fmt, md_cell
from rewardline.validation.agreement import (
    AgreementReport,
    AgreementSums,
    agreement_report,
    agreement_sums,
    annotators_to_exclude,
)
from rewardline.validation.expectations import TABLES, ExpectationReport, fk_flags, run_expectations
from rewardline.validation.table_checks import count_unexpected, merge_full_counts

DATA_DOCS = "data_docs"  # the GX Data Docs site, inside the output directory


class ValidateConfig(Section):
    section: ClassVar[str] = "validate"

    min_alpha: float = Field(0.4, ge=-1.0, le=1.0)  # Krippendorff's alpha ∈ [-1, 1]
    min_annotator_agreement: float = Field(0.2, ge=-1.0, le=1.0)  # a rank correlation ∈ [-1, 1]
    min_overlap_prompts: int = Field(5, ge=0)
    require_overlap: bool = False
    max_k: int = Field(64, ge=2)  # a ranking compares at least 2 responses
    max_steps: int = Field(100, ge=1)  # most reasoning steps a solution may have (step-level data)


VALIDATE_GATES: tuple[GateSpec, ...] = (
    GateSpec("expectations", "expectations_failed", 0, "==", "Great Expectations expectations failed"),
    GateSpec("min_alpha", "krippendorff_alpha", "min_alpha", ">=",
             "Krippendorff's α (ordinal, after annotator exclusion)", skip_if_missing=True,
             why_missing="agreement not measurable", why_missing_key="agreement_not_measurable_reason",
             strict_field="require_overlap"),
    GateSpec("rankings_left", "rankings_left", 0, ">", "rankings left after annotator exclusion",
             skip_if_missing=True, why_missing="no rankings in (step-level data only)"),
)


@writes_output("out_dir", inputs=lambda args: [args["in_dir"]])  # locked; written to a staging folder, published whole
def run_validate(in_dir: Path, out_dir: Path, config: ValidateConfig, shards: int | None = None) -> dict:
    """Validate an ingest directory; write the validated tables, Data Docs, gate report and metrics.

    Returns the metrics (with ``gates_passed``); a failed gate does not raise here:
    the caller checks (:func:`rewardline.gates.check`). Past ``buckets.ROWS_PER_BUCKET`` ranking rows (or with
    ``shards``, forced buckets for tests) the tables are checked one prompt bucket at a time
    (:func:`_check_buckets`).
    """
    files = stage_tables(in_dir, schema.RANKING_TABLES)
    solutions = read_table(in_dir / schema.SOLUTIONS_FILE) if (in_dir / schema.SOLUTIONS_FILE).exists() else None
    n_rankings = table_rows(files["rankings"])
    out_dir.mkdir(parents=True, exist_ok=True)
    with PromptBuckets(files, {}, n_rankings, shards=shards if n_rankings else None) as buckets:
        expectations, before = _check_buckets(buckets, solutions, out_dir, config)
        excluded = annotators_to_exclude(before, config.min_annotator_agreement, config.min_overlap_prompts)
        after = before
        if excluded:
            sums = AgreementSums()
            for tables in buckets:
                sums.add(agreement_sums(_without(tables["rankings"], excluded)))
            after = agreement_report(sums)
    kept = _write_rankings(files["rankings"], out_dir, excluded, buckets.single)

    metrics = {
        "krippendorff_alpha": after.krippendorff_alpha,
        "krippendorff_alpha_before_exclusion": before.krippendorff_alpha,
        "kendall_w": after.kendall_w,
        "pairwise_agreement": after.pairwise_agreement,
        "agreement_not_measurable_reason": after.reason,
        "overlap_prompts": after.n_overlap_prompts,
        "annotators_excluded": sorted(excluded),
        "annotator_agreement": before.annotator_agreement,
        "expectations_evaluated": expectations.evaluated,
        "expectations_failed": len(expectations.failed),
        "min_alpha": config.min_alpha,
        "rankings_in": n_rankings,  # = rankings_out + rankings_removed (the excluded annotators' rankings)
        "rankings_out": kept,
        "rankings_removed": n_rankings - kept,
        "rankings_left": kept if n_rankings else None,  # the gate: exclusion must leave a ranking to train on
        "solutions": solutions.num_rows if solutions is not None else 0,
    }
    report = evaluate_gates(VALIDATE_GATES, metrics, config, stage="validate")
    metrics.update(report.metrics_entries())
    for name in ("prompts", "responses"):
        copy_table(in_dir, out_dir, name)
    if solutions is not None:
        shutil.copyfile(in_dir / schema.SOLUTIONS_FILE, out_dir / schema.SOLUTIONS_FILE)
    write_json(metrics, out_dir / METRICS_FILE)
    write_json({"expectations": expectations.to_dict(), "agreement_before": before.to_dict(),
                "agreement_after": after.to_dict(), "excluded": excluded}, out_dir / "report.json")
    report.write_json(out_dir / GATES_FILE)
    (out_dir / REPORT_FILE).write_text(_markdown(metrics, report, excluded, expectations.summary(data_docs=False)))
    return metrics


def _check_buckets(buckets: PromptBuckets, solutions: pa.Table | None, out_dir: Path,
                   config: ValidateConfig) -> tuple[ExpectationReport, AgreementReport]:
    """The expectation report and the agreement (before exclusion), one prompt bucket at a time.

    One bucket: Great Expectations on the whole tables, as always. Several: GX (and its Data Docs) on the
    first bucket, the documented sample (the prompts whose ``hash64(prompt_id)`` falls in the first shards,
    about ``ROWS_PER_BUCKET`` ranking rows), and every ranking-table expectation counted exactly on every bucket
    (:mod:`rewardline.validation.table_checks`), which sets the report's failures and their counts. The
    agreement sums add over buckets (:class:`AgreementSums`)."""
    sums = AgreementSums()
    counts: Counter = Counter()
    report: ExpectationReport | None = None
    for tables in buckets:
        if report is None:
            checked = dict(tables)
            if solutions is not None and solutions.num_rows:
                checked["solutions"] = solutions
                if tables["rankings"].num_rows == 0 and buckets.single:  # step-only data: no ranking suites
                    checked = {"solutions": solutions}
            report = run_expectations(checked, out_dir / DATA_DOCS, max_k=config.max_k, max_steps=config.max_steps)
            if report.data_docs_index:  # relative to the output dir (out_dir is a staging folder here)
                report.data_docs_index = f"{DATA_DOCS}/index.html"
        if not buckets.single:
            flags = fk_flags(tables)
            for name in TABLES:
                counts.update(count_unexpected(name, tables[name], flags[name], config.max_k))
        sums.add(agreement_sums(tables["rankings"]))
        del tables
    if report is None:  # PromptBuckets yields at least one bucket; a guard that survives python -O
        raise RuntimeError("validate: no prompt bucket was read")
    return (report if buckets.single else merge_full_counts(report, counts)), agreement_report(sums)


def _without(rankings: pa.Table, excluded: dict[str, str]) -> pa.Table:
    """``rankings`` less the rows of the ``excluded`` annotators."""
    if not excluded:
        return rankings
    return rankings.filter(pc.invert(pc.is_in(rankings["annotator_id"], value_set=pa.array(sorted(excluded)))))


def _write_rankings(source: Path, out_dir: Path, excluded: dict[str, str], whole: bool) -> int:
    """The validated rankings (``source`` less the excluded annotators' rows, in ``source``'s order) as
    ``out_dir``'s ``rankings`` table, part ``i`` from ``source``'s part ``i``, so the parts stay prompt-aligned
    with the prompts and responses copied beside them. Each part is read whole when ``whole`` (the in-memory
    case), else streamed batch by batch. Returns the rows written."""
    kept, source_schema = 0, table_schema(source)
    remove_table(out_dir, "rankings")
    with TableAppender() as files:
        for index, part in enumerate(part_files(source)):
            for table in [read_table(part)] if whole else stream_table(part):
                table = _without(table, excluded)
                files.append(table, out_dir / "rankings" / part_name(index), source_schema)
                kept += table.num_rows
    return kept


def _markdown(metrics: dict, report: GateReport, excluded: dict[str, str], expectation_summary: str) -> str:
    lines = [
        report.to_markdown("Validation report"),
        "| metric | value |",
        "| --- | --- |",
        f"| Krippendorff's α (ordinal, after exclusion) | {fmt(metrics['krippendorff_alpha'])} |",
        f"| α before exclusion | {fmt(metrics['krippendorff_alpha_before_exclusion'])} |",
        f"| mean Kendall's W | {fmt(metrics['kendall_w'])} |",
        f"| pairwise agreement | {fmt(metrics['pairwise_agreement'])} |",
        f"| prompts ranked by ≥ 2 annotators | {metrics['overlap_prompts']} |",
        f"| expectations failed / evaluated | {metrics['expectations_failed']} / "
        f"{metrics['expectations_evaluated']} |",
    ]
    if metrics["agreement_not_measurable_reason"]:
        lines += ["", f"Agreement not measurable: {metrics['agreement_not_measurable_reason']}"]
    lines += ["", "## Annotators", "", "| annotator | agreement with leave-one-out consensus | excluded |",
              "| --- | --- | --- |"]
    for name, value in sorted(metrics["annotator_agreement"].items()):
        lines.append(f"| {md_cell(name)} | {fmt(value)} | {md_cell(excluded.get(name, ''))} |")
    lines += ["", "## Expectations", "", expectation_summary or "All expectations passed.", "",
              # relative to report.md, so the output holds no machine-specific path
              f"Great Expectations Data Docs: [{DATA_DOCS}/index.html]({DATA_DOCS}/index.html)", ""]
    return "\n".join(lines)
