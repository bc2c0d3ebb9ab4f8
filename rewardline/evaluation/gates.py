"""The evaluate stage's quality gates (data for :mod:`rewardline.gates`) and its Markdown report.

Thresholds from ``params.yaml: evaluate`` (:class:`rewardline.evaluation.evaluate.EvalConfig`):

| gate | value (``metrics.json`` key) | passes when |
| --- | --- | --- |
| ``min_accuracy`` | ``accuracy`` | ``accuracy ≥ min_accuracy`` |
| ``accuracy_ci_above_chance`` | ``accuracy_ci_low`` | ``accuracy_ci_low > 0.5`` (only if ``require_ci_above_chance``) |
| ``max_ece_calibrated`` | ``ece_calibrated`` | ``ece_calibrated ≤ max_ece_calibrated`` |
| ``max_ece_absolute`` | ``ece_absolute`` (of win_prob) | ``ece_absolute ≤ max_ece_absolute`` (no anchors: skipped) |
| ``max_length_bias`` | ``length_bias`` | ``model_prefers_longer − labels_prefer_longer ≤ max_length_bias`` |
| ``champion_non_inferiority`` | ``champion_diff_ci_low`` | ``ci_low(challenger − champion) ≥ −champion_delta`` (*) |

The champion gate reads the lower end of the two-sided 95 % paired prompt-bootstrap interval
of the accuracy difference (:func:`rewardline.evaluation.metrics.paired_bootstrap_difference`), i.e. a
one-sided 97.5 % non-inferiority test with margin δ. With a few hundred test pairs that interval
is about ±0.04 wide, so an equal challenger could almost never show non-inferiority at δ = 0.02.
(*) The verdict (:func:`rewardline.evaluation.metrics.champion_verdict`) therefore has three values:

* *worse* (CI high < −δ): the gate fails;
* *non-inferior* (CI low ≥ −δ): the gate passes;
* *inconclusive* (the CI straddles −δ): the gate passes with status ``inconclusive (needs N test
  pairs …)``, N from the power analysis (pairs a conclusive answer at δ would need; also the
  minimum detectable difference at the current n and 80 % power), unless
  ``champion_require_conclusive`` is true: then it fails.

It is *skipped* (reported, not failing) when there is no champion, with ``metrics["champion_missing_reason"]`` as
its reason when the reference looks mistaken (a ``models:/`` name close to a registered one); the CI gate is
skipped when ``require_ci_above_chance`` is false.
Any other value that could not be measured (NaN / None, e.g. an empty test split) fails its gate, with the reason
in ``metrics["test_unmeasured_reason"]`` when the test split has no decided pair (``max_length_bias``: in
``metrics["length_bias_unmeasured_reason"]``, also when no decided pair has two lengths). A skipped
``max_ece_absolute`` gives ``metrics["absolute_unmeasured_reason"]`` (no anchor comparisons in test, or none in
val to fit a BT model's logistic map).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rewardline.evaluation.absolute import ABSOLUTE_UNMEASURED
from rewardline.gates import GateReport, GateSpec
from rewardline.report import fmt, md_cell

NO_TEST_PAIRS = "test_unmeasured_reason"  # the metric saying why the test split measured nothing
LENGTH_UNMEASURED = "length_bias_unmeasured_reason"  # ... why length_bias was not measured
CHAMPION_MISSING = "champion_missing_reason"  # ... why the champion reference named no model, when it looks mistaken

EVALUATE_GATES: tuple[GateSpec, ...] = (
    GateSpec("min_accuracy", "accuracy", "min_accuracy", ">=", "pairwise accuracy", why_missing_key=NO_TEST_PAIRS),
    GateSpec("accuracy_ci_above_chance", "accuracy_ci_low", 0.5, ">",
             "lower end of the accuracy's 95 % CI, above chance", enabled_field="require_ci_above_chance"),
    GateSpec("max_ece_calibrated", "ece_calibrated", "max_ece_calibrated", "<=", "ECE after temperature scaling",
             why_missing_key=NO_TEST_PAIRS),
    GateSpec("max_ece_absolute", "ece_absolute", "max_ece_absolute", "<=",
             "ECE of win_prob against the judge on the test pairs with the prompt's anchor response",
             skip_if_missing=True, why_missing_key=ABSOLUTE_UNMEASURED, why_missing="no anchor comparisons in the "
             "test split (or none in val to fit a BT model's logistic map)"),
    GateSpec("max_length_bias", "length_bias", "max_length_bias", "<=",
             "share of pairs where the model prefers the longer response − share where the labels do",
             why_missing_key=LENGTH_UNMEASURED),
    GateSpec("champion_non_inferiority", "champion_diff_ci_low", "champion_delta", ">=",
             "lower end of the 95 % paired-bootstrap CI of accuracy(challenger) − accuracy(champion)",
             negate=True, skip_if_missing=True, why_missing="no champion", why_missing_key=CHAMPION_MISSING,
             inconclusive_key="champion_inconclusive",
             inconclusive_note_key="champion_power_note", conclusive_field="champion_require_conclusive"),
)


def report_markdown(metrics: Mapping[str, Any], report: GateReport) -> str:
    """``report.md``: the gate summary, the headline numbers (accuracy next to its baselines), the gate table."""
    m = metrics
    lines = [
        "# Reward model evaluation",
        "",
        report.summary_markdown(),
        "",
        "| | value |",
        "| --- | --- |",
        f"| pairwise accuracy (95 % CI by prompt) | {fmt(m.get('accuracy'))} "
        f"[{fmt(m.get('accuracy_ci_low'))}, {fmt(m.get('accuracy_ci_high'))}] |",
        f"| longer-response-wins baseline | {fmt(m.get('longer_wins_accuracy'))} |",
        f"| random | {fmt(0.5)} |",
        f"| agreement-aware accuracy | {fmt(m.get('agreement_aware_accuracy'))} |",
        f"| ECE raw → calibrated (T = {fmt(m.get('temperature'), 3)}; 95 % CI) | {fmt(m.get('ece_raw'))} "
        f"[{fmt(m.get('ece_raw_ci_low'))}, {fmt(m.get('ece_raw_ci_high'))}] → {fmt(m.get('ece_calibrated'))} "
        f"[{fmt(m.get('ece_calibrated_ci_low'))}, {fmt(m.get('ece_calibrated_ci_high'))}] |",
        f"| temperature applied | {'yes' if m.get('temperature_applied') else 'no'}: "
        f"{md_cell(str(m.get('temperature_reason') or ''))} (fitted {fmt(m.get('temperature_fitted'), 3)} "
        f"[{fmt(m.get('temperature_ci_low'), 3)}, {fmt(m.get('temperature_ci_high'), 3)}]) |",
        f"| absolute calibration: ECE; AUROC; Brier skill (anchor comparisons) | {fmt(m.get('ece_absolute'))}; "
        f"{fmt(m.get('auroc_absolute'))}; {fmt(m.get('brier_skill_absolute'))} "
        f"({fmt(m.get('n_anchor_comparisons'))}) |",
        f"| test pairs (ties excluded) | {fmt(m.get('n_pairs'))} ({fmt(m.get('ties_excluded'))}) |",
    ]
    if m.get("champion_accuracy") is not None:
        lines.append(f"| champion accuracy; challenger − champion (95 % CI) | {fmt(m.get('champion_accuracy'))}; "
                     f"{fmt(m.get('champion_diff'))} [{fmt(m.get('champion_diff_ci_low'))}, "
                     f"{fmt(m.get('champion_diff_ci_high'))}] |")
        lines.append(f"| champion verdict at δ = {fmt(m.get('champion_delta'))} | {m.get('champion_verdict')}: "
                     f"{md_cell(str(m.get('champion_power_note') or ''))} |")
    return "\n".join([*lines, "", report.table_markdown()]) + "\n"
