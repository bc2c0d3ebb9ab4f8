"""Stage 2, validate: Great Expectations suite, inter-annotator agreement, annotator exclusion, gate.

Output directory: the validated canonical tables (rankings of excluded annotators
removed; prompts and responses copied), ``data_docs/`` (GX Data Docs HTML),
``report.md`` and ``metrics.json``.

Gate: every expectation passes, and Krippendorff's α (after exclusion) ≥ ``min_alpha``.
When no prompt was ranked by two annotators α is not measurable: it is reported as
null with the reason, and the α gate passes only if ``require_overlap`` is false.
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
from rewardline.errors import GateFailed
from rewardline.validation.agreement import annotators_to_exclude, measure_agreement
from rewardline.validation.expectations import run_expectations


class ValidateConfig(Section):
    section: ClassVar[str] = "validate"

    min_alpha: float = Field(0.4, ge=-1.0, le=1.0)  # Krippendorff's alpha ∈ [-1, 1]
    min_annotator_agreement: float = Field(0.2, ge=-1.0, le=1.0)  # a rank correlation ∈ [-1, 1]
    min_overlap_prompts: int = Field(5, ge=0)
    require_overlap: bool = False
    max_k: int = Field(64, ge=2)  # a ranking compares at least 2 responses


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def run_validate(in_dir: Path, out_dir: Path, config: ValidateConfig) -> dict:
    """Validate an ingest directory; write the validated tables, Data Docs, report and metrics."""
    tables = {name: read_table(in_dir / schema.TABLE_FILES[name]) for name in ("prompts", "responses", "rankings")}
    out_dir.mkdir(parents=True, exist_ok=True)
    expectations = run_expectations(tables, out_dir / "data_docs", max_k=config.max_k)

    before = measure_agreement(tables["rankings"])
    excluded = annotators_to_exclude(before, config.min_annotator_agreement, config.min_overlap_prompts)
    rankings = tables["rankings"]
    if excluded:
        keep = pc.invert(pc.is_in(rankings["annotator_id"], value_set=pa.array(sorted(excluded))))
        rankings = rankings.filter(keep)
    after = measure_agreement(rankings) if excluded else before

    alpha = after.krippendorff_alpha
    alpha_ok = (alpha >= config.min_alpha) if alpha is not None else not config.require_overlap
    gate_passed = bool(expectations.success and alpha_ok)
    metrics = {
        "krippendorff_alpha": alpha,
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
        "gate_passed": gate_passed,
    }
    write_table(rankings, out_dir / schema.TABLE_FILES["rankings"])
    for name in ("prompts", "responses"):
        copy_table(in_dir / schema.TABLE_FILES[name], out_dir / schema.TABLE_FILES[name])
    write_json(metrics, out_dir / "metrics.json")
    write_json({"expectations": expectations.to_dict(), "agreement_before": before.to_dict(),
                "agreement_after": after.to_dict(), "excluded": excluded}, out_dir / "report.json")
    report = _markdown(metrics, excluded, expectations.summary(), config)
    (out_dir / "report.md").write_text(report)

    if not gate_passed:
        problems = []
        if not expectations.success:
            problems.append(f"{len(expectations.failed)} expectation(s) failed:\n{expectations.summary()}")
        if not alpha_ok:
            problems.append(
                f"krippendorff_alpha {_fmt(alpha)} < min_alpha {config.min_alpha}"
                if alpha is not None else f"agreement not measurable ({after.reason}) and require_overlap is true"
            )
        raise GateFailed("validate gate failed: " + "; ".join(problems) + f"\nreport: {out_dir / 'report.md'}")
    return metrics


def _markdown(metrics: dict, excluded: dict[str, str], expectation_summary: str, config: ValidateConfig) -> str:
    lines = [
        "# Validation report",
        "",
        f"Gate: **{'passed' if metrics['gate_passed'] else 'FAILED'}**",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| Krippendorff's α (ordinal, after exclusion) | {_fmt(metrics['krippendorff_alpha'])} "
        f"(min {config.min_alpha}) |",
        f"| α before exclusion | {_fmt(metrics['krippendorff_alpha_before_exclusion'])} |",
        f"| mean Kendall's W | {_fmt(metrics['kendall_w'])} |",
        f"| pairwise agreement | {_fmt(metrics['pairwise_agreement'])} |",
        f"| prompts ranked by ≥ 2 annotators | {metrics['overlap_prompts']} |",
        f"| expectations failed / evaluated | {metrics['expectations_failed']} / "
        f"{metrics['expectations_evaluated']} |",
    ]
    if metrics["agreement_not_measurable_reason"]:
        lines += ["", f"Agreement not measurable: {metrics['agreement_not_measurable_reason']}"]
    lines += ["", "## Annotators", "", "| annotator | agreement with leave-one-out consensus | excluded |",
              "| --- | --- | --- |"]
    for name, value in sorted(metrics["annotator_agreement"].items()):
        lines.append(f"| {name} | {_fmt(value)} | {excluded.get(name, '')} |")
    lines += ["", "## Expectations", "", expectation_summary or "All expectations passed.", ""]
    return "\n".join(lines)
