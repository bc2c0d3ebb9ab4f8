"""Stage 2, validate: Great Expectations suite, inter-annotator agreement, annotator exclusion, gate.

Output directory: the validated canonical tables (rankings of excluded annotators removed;
prompts, responses and the step-level ``solutions.parquet`` copied), ``data_docs/`` (GX Data
Docs HTML), ``report.md``, ``gates.json`` and ``metrics.json``.

Gates (:data:`VALIDATE_GATES`): every expectation passes, and Krippendorff's α (after
exclusion) ≥ ``min_alpha``. When α is not measurable (e.g. no prompt was ranked by two
annotators) it is reported as null with the reason, and the α gate is skipped, unless
``require_overlap`` is true: then it fails. Step-level data (``solutions.parquet``, written by
ingest) has its own suite; step-only data (empty ranking tables, solutions present) is validated
by that suite alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from rewardline.config import Section
from rewardline.data import schema
from rewardline.data.tables import copy_table, read_table, write_json, write_table
from rewardline.gates import GateReport, GateSpec, evaluate_gates
from rewardline.ops.atomic import writes_output
from rewardline.paths import GATES_FILE, METRICS_FILE, REPORT_FILE
from rewardline.report import fmt, md_cell
from rewardline.validation.agreement import annotators_to_exclude, measure_agreement
from rewardline.validation.expectations import run_expectations

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
)


@writes_output("out_dir")  # locked; written to a staging folder, published whole
def run_validate(in_dir: Path, out_dir: Path, config: ValidateConfig) -> dict:
    """Validate an ingest directory; write the validated tables, Data Docs, gate report and metrics.

    Returns the metrics (with ``gates_passed``); a failed gate does not raise here:
    the caller checks (:func:`rewardline.gates.check`).
    """
    tables = {name: read_table(in_dir / schema.TABLE_FILES[name]) for name in ("prompts", "responses", "rankings")}
    solutions = read_table(in_dir / schema.SOLUTIONS_FILE) if (in_dir / schema.SOLUTIONS_FILE).exists() else None
    checked = dict(tables)
    if solutions is not None and solutions.num_rows:
        checked["solutions"] = solutions
        if tables["rankings"].num_rows == 0:  # step-only data: the ranking suites would fail on empty tables
            checked = {"solutions": solutions}
    out_dir.mkdir(parents=True, exist_ok=True)
    expectations = run_expectations(checked, out_dir / DATA_DOCS, max_k=config.max_k, max_steps=config.max_steps)
    if expectations.data_docs_index:  # relative to the output dir (out_dir is a staging folder here)
        expectations.data_docs_index = f"{DATA_DOCS}/index.html"

    before = measure_agreement(tables["rankings"])
    excluded = annotators_to_exclude(before, config.min_annotator_agreement, config.min_overlap_prompts)
    rankings = tables["rankings"]
    if excluded:
        keep = pc.invert(pc.is_in(rankings["annotator_id"], value_set=pa.array(sorted(excluded))))
        rankings = rankings.filter(keep)
    after = measure_agreement(rankings) if excluded else before

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
        "rankings_removed": tables["rankings"].num_rows - rankings.num_rows,
        "solutions": solutions.num_rows if solutions is not None else 0,
    }
    report = evaluate_gates(VALIDATE_GATES, metrics, config, stage="validate")
    metrics.update(report.metrics_entries())
    write_table(rankings, out_dir / schema.TABLE_FILES["rankings"])
    for name in ("prompts", "responses"):
        copy_table(in_dir / schema.TABLE_FILES[name], out_dir / schema.TABLE_FILES[name])
    if solutions is not None:
        copy_table(in_dir / schema.SOLUTIONS_FILE, out_dir / schema.SOLUTIONS_FILE)
    write_json(metrics, out_dir / METRICS_FILE)
    write_json({"expectations": expectations.to_dict(), "agreement_before": before.to_dict(),
                "agreement_after": after.to_dict(), "excluded": excluded}, out_dir / "report.json")
    report.write_json(out_dir / GATES_FILE)
    (out_dir / REPORT_FILE).write_text(_markdown(metrics, report, excluded, expectations.summary(data_docs=False)))
    return metrics


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
