"""The Great Expectations suite over solutions.parquet (step-level data) and the validate stage on step-only data."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardline.data import schema
from rewardline.data.ingest import IngestConfig, Source, run_ingest
from rewardline.data.steps import SOLUTIONS
from rewardline.validation.expectations import (
    LABELS_IN_SET,
    LABELS_MATCH_STEPS,
    MIN_STEP_CHARS,
    N_STEPS,
    ExpectationReport,
    run_expectations,
)
from rewardline.validation.validate import ValidateConfig, run_validate

FIXTURES = Path(__file__).parents[1] / "fixtures"


def solutions(**change: list) -> pa.Table:
    """Three valid solutions of two problems; ``change`` replaces whole columns."""
    columns = {
        "solution_id": ["s-1", "s-2", "s-3"],
        "prompt_id": ["p-1", "p-1", "p-2"],
        "prompt": ["What is 2+3*4?", "What is 2+3*4?", "What is 10/2?"],
        "steps": [["3*4=12", "2+12=14", "A: 14"], ["2+3=5", "5*4=20", "A: 20"], ["10/2=5", "A: 5"]],
        "step_labels": [[1, 1, 1], [-1, -1, -1], [None, 0]],
        "outcome": [1, 0, None],
        "final_answer": ["14", "20", "5"],
        "synthetic": [False, True, False],
        "source_format": ["gsm8k", "gsm8k", "solutions"],
        "source": ["f.jsonl"] * 3,
        "line": [1, 1, 2],
        "batch_id": ["b"] * 3,
        "solver": [None, None, "6b"],
    }
    columns.update(change)
    return pa.table(columns, schema=SOLUTIONS)


def failed(report: ExpectationReport) -> set[tuple[str, str | None]]:
    return {(f.expectation, f.column) for f in report.failed}


def test_clean_solutions_pass_alone(tmp_path: Path) -> None:
    report = run_expectations({"solutions": solutions()}, tmp_path / "docs", max_steps=3)
    assert report.success, report.summary()
    assert report.evaluated >= 10 and "rewardline_solutions" in (tmp_path / "docs" / "index.html").read_text()


@pytest.mark.parametrize(("change", "expected"), [
    ({"steps": [["3*4=12", "", "A: 14"], ["2+3=5", "5*4=20", "A: 20"], ["10/2=5", "A: 5"]]},
     ("expect_column_values_to_be_between", MIN_STEP_CHARS)),
    ({"steps": [["3*4=12", "2+12=14", "A: 14"], [], ["10/2=5", "A: 5"]],
      "step_labels": [[1, 1, 1], [], [None, 0]]}, ("expect_column_values_to_be_between", N_STEPS)),
    ({"steps": [["a", "b", "c", "d"], ["2+3=5", "5*4=20", "A: 20"], ["10/2=5", "A: 5"]],
      "step_labels": [[1, 1, 1, 1], [-1, -1, -1], [None, 0]]}, ("expect_column_values_to_be_between", N_STEPS)),
    ({"step_labels": [[1, 1, 2], [-1, -1, -1], [None, 0]]}, ("expect_column_values_to_be_in_set", LABELS_IN_SET)),
    ({"step_labels": [[1, 1], [-1, -1, -1], [None, 0]]}, ("expect_column_values_to_be_in_set", LABELS_MATCH_STEPS)),
    ({"outcome": [1, 5, None]}, ("expect_column_values_to_be_in_set", "outcome")),
    ({"solution_id": ["s-1", "s-1", "s-3"]}, ("expect_column_values_to_be_unique", "solution_id")),
    ({"prompt": ["What is 2+3*4?", "", "What is 10/2?"]}, ("expect_column_value_lengths_to_be_between", "prompt")),
])
def test_each_fault_fails_its_expectation(tmp_path: Path, change: dict, expected: tuple[str, str]) -> None:
    report = run_expectations({"solutions": solutions(**change)}, tmp_path / "docs", max_steps=3)
    assert not report.success and expected in failed(report), report.summary()


def test_validate_on_step_only_data_checks_and_passes_the_solutions_through(tmp_path: Path) -> None:
    sources = [Source(path=str(FIXTURES / "gsm8k_train_20.jsonl")),
               Source(path=str(FIXTURES / "gsm8k_model_solutions_100.jsonl.gz"))]
    run_ingest(IngestConfig(sources=sources), tmp_path / "ing")
    metrics = run_validate(tmp_path / "ing", tmp_path / "val", ValidateConfig())
    assert metrics["gates_passed"] and metrics["expectations_failed"] == 0 and metrics["expectations_evaluated"] >= 10
    assert metrics["solutions"] == pq.read_table(tmp_path / "ing" / schema.SOLUTIONS_FILE).num_rows > 400
    copied = (tmp_path / "val" / schema.SOLUTIONS_FILE).read_bytes()
    assert copied == (tmp_path / "ing" / schema.SOLUTIONS_FILE).read_bytes()
    # one step too many for max_steps fails the gate
    strict = run_validate(tmp_path / "ing", tmp_path / "val2", ValidateConfig(max_steps=3))
    assert not strict["gates_passed"] and strict["expectations_failed"] == 1
    report = json.loads((tmp_path / "val2" / "report.json").read_text())["expectations"]["failed"]
    assert [(f["table"], f["column"]) for f in report] == [("solutions", N_STEPS)]
