"""rewardline.gates (gates as data, the report, the one check) and rewardline.report.fmt."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from rewardline.errors import GateFailed
from rewardline.gates import GateReport, GateSpec, check, check_gate, check_output, evaluate_gates
from rewardline.report import fmt, md_cell


@dataclass
class Config:
    min_score: float = 0.5
    max_error: float = 0.1
    delta: float = 0.02
    strict: bool = False
    enabled: bool = True


SPECS = (
    GateSpec("min_score", "score", "min_score", ">=", "the score"),
    GateSpec("max_error", "error", "max_error", "<=", "the error"),
    GateSpec("vs_champion", "diff_low", "delta", ">=", "CI low of the difference", negate=True,
             skip_if_missing=True, why_missing="no champion"),
)
GOOD = {"score": 0.7, "error": 0.05, "diff_low": -0.01}


@pytest.mark.parametrize(
    ("op", "value", "threshold", "passed"),
    [
        (">=", 0.5, 0.5, True), (">=", 0.4999, 0.5, False),
        (">", 0.5, 0.5, False), (">", 0.5001, 0.5, True),
        ("<=", 0.1, 0.1, True), ("<=", 0.1001, 0.1, False),
        ("<", 0.1, 0.1, False), ("<", 0.0999, 0.1, True),
        ("==", 0, 0, True), ("==", 3, 0, False),
    ],
)
def test_each_op_at_its_boundary(op, value, threshold, passed):
    result = check_gate(GateSpec("g", "m", threshold, op, "m"), {"m": value}, Config())
    assert (result.passed, result.skipped) == (passed, False)
    assert result.value == value and result.threshold == threshold
    assert type(result.threshold) is type(threshold)  # a count stays an integer: "== 0", not "== 0.0000"


def test_an_unknown_op_is_refused():
    with pytest.raises(ValueError, match="op '=>'"):
        GateSpec("g", "m", 0.5, "=>", "m")


def test_thresholds_come_from_the_config_and_a_margin_is_negated():
    report = evaluate_gates(SPECS, GOOD, Config(min_score=0.8, delta=0.005), stage="s")
    rows = report.table()
    assert rows["min_score"]["threshold"] == 0.8 and not rows["min_score"]["passed"]
    assert rows["vs_champion"]["threshold"] == -0.005 and not rows["vs_champion"]["passed"]  # -0.01 < -0.005
    assert [g.name for g in report.failed] == ["min_score", "vs_champion"] and not report.passed


@pytest.mark.parametrize("missing", [None, float("nan"), float("inf"), "n/a", "absent"])
def test_an_unmeasurable_value_fails_unless_the_gate_skips(missing):
    metrics = {k: v for k, v in GOOD.items() if k != "score"}
    if missing != "absent":
        metrics["score"] = missing
    result = check_gate(SPECS[0], metrics, Config())
    assert not result.passed and not result.skipped and result.value is None
    assert result.failure_message() == "min_score: the score is not measurable (not measured)"
    assert result.status == "FAILED (not measured)"


def test_a_threshold_that_is_not_a_number_is_refused():
    with pytest.raises(ValueError, match="gate min_score: threshold 'min_score' is None"):
        check_gate(SPECS[0], GOOD, Config(min_score=None))


def test_the_champion_gate_without_a_champion_is_skipped_with_the_reason():
    report = evaluate_gates(SPECS, {**GOOD, "diff_low": None}, Config(), stage="evaluate")
    gate = {g.name: g for g in report.gates}["vs_champion"]
    assert gate.skipped and gate.passed and gate.reason == "no champion" and gate.status == "skipped (no champion)"
    assert report.passed


def test_the_missing_reason_comes_from_the_metrics_and_a_strict_flag_makes_it_fail():
    spec = GateSpec("min_alpha", "alpha", "min_score", ">=", "alpha", skip_if_missing=True,
                    why_missing="not measurable", why_missing_key="why", strict_field="strict")
    metrics = {"alpha": None, "why": "no prompt ranked twice"}
    lenient = check_gate(spec, metrics, Config(strict=False))
    assert lenient.skipped and lenient.reason == "no prompt ranked twice"
    strict = check_gate(spec, metrics, Config(strict=True))
    assert not strict.passed and not strict.skipped
    assert strict.failure_message() == "min_alpha: alpha is not measurable (no prompt ranked twice; strict is true)"
    assert check_gate(spec, {"alpha": None}, Config()).reason == "not measurable"


def test_a_disabled_gate_is_skipped_but_keeps_its_value():
    spec = GateSpec("ci", "ci_low", 0.5, ">", "CI low", enabled_field="enabled")
    off = check_gate(spec, {"ci_low": 0.4}, Config(enabled=False))
    assert off.skipped and off.passed and off.value == 0.4 and off.reason == "enabled is false"
    assert not check_gate(spec, {"ci_low": 0.4}, Config(enabled=True)).passed


def test_numpy_values_are_read_as_python_numbers():
    result = check_gate(SPECS[0], {"score": np.float32(0.75)}, Config())
    assert result.passed and type(result.value) is float
    assert type(check_gate(GateSpec("n", "n", 0, "==", "n"), {"n": np.int64(0)}, Config()).value) is int


def test_report_dict_round_trip_and_metrics_entries():
    report = evaluate_gates(SPECS, {**GOOD, "error": 0.2, "diff_low": None}, Config(), stage="validate")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["stage"] == "validate" and data["passed"] is False
    assert data["gates"]["max_error"] == {"value": 0.2, "threshold": 0.1, "op": "<=", "passed": False,
                                          "skipped": False, "description": "the error", "reason": ""}
    again = GateReport.from_dict(data)
    assert again == report
    entries = report.metrics_entries()
    assert set(entries) == {"gates_passed", "gates"} and entries["gates_passed"] is False
    assert GateReport.from_dict({"accuracy": 1.0, **entries}, stage="validate") == report  # a metrics.json dict


def test_markdown_table():
    report = evaluate_gates(SPECS, {**GOOD, "score": 0.4, "diff_low": None}, Config(), stage="s")
    md = report.to_markdown("Some report")
    assert md.startswith("# Some report\n\nGates: **FAILED**\n\n| gate | value | threshold | passed |\n")
    assert "| min_score: the score | 0.4000 | >= 0.5000 | FAILED |" in md
    assert "| max_error: the error | 0.0500 | <= 0.1000 | passed |" in md
    assert "| vs_champion: CI low of the difference | n/a | >= -0.0200 | skipped (no champion) |" in md
    passing = evaluate_gates(SPECS, GOOD, Config(), stage="s")
    assert passing.to_markdown().startswith("Gates: **passed**\n")


def test_check_raises_naming_each_failed_gate_only():
    report = evaluate_gates(SPECS, {**GOOD, "score": 0.45, "error": 0.3}, Config(), stage="ingest")
    with pytest.raises(GateFailed) as err:
        check(report, report_path="out/report.md")
    message = str(err.value)
    assert message.startswith("ingest gate failed (2 of 3):")
    assert "min_score: the score 0.4500 is not >= 0.5000" in message
    assert "max_error: the error 0.3000 is not <= 0.1000" in message
    assert "vs_champion" not in message and message.endswith("report: out/report.md")
    with pytest.raises(GateFailed, match="min_score"):
        check(json.loads(json.dumps(report.to_dict())))  # gates.json as read back
    check(evaluate_gates(SPECS, GOOD, Config(), stage="ingest"))  # all passed: no exception


def test_check_output_reads_gates_json(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="gates.json"):
        check_output(tmp_path)
    evaluate_gates(SPECS, GOOD, Config(), stage="validate").write_json(tmp_path / "gates.json")
    check_output(tmp_path)
    evaluate_gates(SPECS, {**GOOD, "error": 1.0}, Config(), stage="validate").write_json(tmp_path / "gates.json")
    with pytest.raises(GateFailed, match=r"^validate gate failed \(1 of 3\)(.|\n)*report: .*report\.md$"):
        check_output(tmp_path)


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (None, 4, "n/a"), (math.nan, 4, "n/a"), (-math.inf, 4, "n/a"), (np.float32("nan"), 4, "n/a"),
        (0.5, 4, "0.5000"), (2 / 3, 3, "0.667"), (np.float64(-0.02), 4, "-0.0200"), (np.float32(0.25), 2, "0.25"),
        (7, 4, "7"), (np.int64(12), 4, "12"), (True, 4, "True"), ("x", 4, "x"),
    ],
)
def test_fmt(value, digits, text):
    assert fmt(value, digits) == text


def test_md_cell_escapes_pipes_and_newlines():
    assert md_cell("a|b\nc") == "a\\|b c"
