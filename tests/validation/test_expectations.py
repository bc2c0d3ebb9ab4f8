"""Tests for rewardline.validation.expectations: real Great Expectations runs over small canonical tables."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from rewardline.data import schema
from rewardline.validation.expectations import (
    FK_PROMPT,
    FK_RESPONSE,
    ExpectationFailure,
    ExpectationReport,
    run_expectations,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
Tables = dict[str, pa.Table]


def canonical() -> Tables:
    """2 prompts x 3 responses, 2 annotators each: 4 rankings, 12 ranking rows, one tie."""
    prompts = pa.table(
        {
            "prompt_id": ["p1", "p2"],
            "prompt": ["What is 2+2?", "Write a haiku. " + "x" * 500],
            "prompt_messages": [None, [{"role": "user", "content": "Write a haiku."}]],
            "category": ["math", "poetry"],
        },
        schema=schema.PROMPTS,
    )
    responses = pa.table(
        {
            "response_id": [f"{p}-r{i}" for p in ("p1", "p2") for i in range(3)],
            "prompt_id": [p for p in ("p1", "p2") for _ in range(3)],
            "response": ["4", "four", "5", "old pond", "frog jumps", "splash"],
            "source": ["m1", "m2", "m3"] * 2,
            "is_anchor": [True, False, False, None, None, None],
        },
        schema=schema.RESPONSES,
    )
    rows = []
    for p in ("p1", "p2"):
        for a, ranks in (("a1", [1, 2, 3]), ("a2", [1, 1, 2])):
            for i, rank in enumerate(ranks):
                rows.append(
                    {
                        "ranking_id": f"{p}|{a}",
                        "prompt_id": p,
                        "annotator_id": a,
                        "response_id": f"{p}-r{i}",
                        "rank": rank,
                        "score": None,
                        "batch_id": "b1",
                        "origin_file": "batch1.jsonl",
                        "origin_line": len(rows) // 3 + 1,
                    }
                )
    rankings = pa.Table.from_pylist(rows, schema=schema.RANKINGS)
    return {"prompts": prompts, "responses": responses, "rankings": rankings}


def set_value(table: pa.Table, column: str, row: int, value: object) -> pa.Table:
    """``table`` with one cell replaced."""
    values = table.column(column).to_pylist()
    values[row] = value
    i = table.schema.get_field_index(column)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def find(report: ExpectationReport, table: str, expectation: str, column: str | None) -> ExpectationFailure:
    for f in report.failed:
        if (f.table, f.expectation, f.column) == (table, expectation, column):
            return f
    raise AssertionError(f"no failure {table}.{column} {expectation} in:\n{report.summary()}")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory, to prove GX writes nothing outside docs_dir."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_clean_dataset_passes_and_builds_docs(tmp_path: Path, workdir: Path) -> None:
    tables = canonical()
    docs = tmp_path / "out" / "data_docs"
    report = run_expectations(tables, docs, max_k=4)

    assert report.success, report.summary()
    assert report.failed == []
    assert report.evaluated >= 20
    assert "passed (OK)" in report.summary()
    # Data Docs site in docs_dir, listing the suites.
    assert report.data_docs_index == str(docs.resolve() / "index.html")
    index = Path(report.data_docs_index).read_text()
    for table in ("prompts", "responses", "rankings"):
        assert f"rewardline_{table}" in index
    assert list((docs / "expectations").rglob("*.html"))
    assert list((docs / "validations").rglob("*.html"))
    # Nothing written elsewhere: no gx/ in the cwd or the repo root.
    assert list(workdir.iterdir()) == []
    assert not (REPO_ROOT / "gx").exists()
    # The caller's tables are untouched (flag columns live only in GX's dataframes).
    assert tables["rankings"].schema == schema.RANKINGS
    json.dumps(report.to_dict())


def _null_annotator(t: Tables) -> Tables:
    return {**t, "rankings": set_value(t["rankings"], "annotator_id", 4, None)}


def _duplicate_response_id(t: Tables) -> Tables:
    return {**t, "responses": set_value(t["responses"], "response_id", 2, "p1-r1")}


def _rank_zero(t: Tables) -> Tables:
    return {**t, "rankings": set_value(t["rankings"], "rank", 7, 0)}


def _rank_above_max_k(t: Tables) -> Tables:
    return {**t, "rankings": set_value(t["rankings"], "rank", 7, 5)}


def _duplicate_ranking_response(t: Tables) -> Tables:
    # Row 1 of ranking p1|a1 claims response p1-r0 again (which row 0 already ranks).
    return {**t, "rankings": set_value(t["rankings"], "response_id", 1, "p1-r0")}


def _missing_response(t: Tables) -> Tables:
    return {**t, "rankings": set_value(t["rankings"], "response_id", 10, "p2-r9")}


def _response_of_other_prompt(t: Tables) -> Tables:
    return {**t, "rankings": set_value(t["rankings"], "response_id", 3, "p2-r0")}


def _missing_prompt(t: Tables) -> Tables:
    return {**t, "responses": set_value(t["responses"], "prompt_id", 5, "p404")}


def _empty_response_text(t: Tables) -> Tables:
    return {**t, "responses": set_value(t["responses"], "response", 1, "")}


def _null_prompt_id(t: Tables) -> Tables:
    return {**t, "prompts": set_value(t["prompts"], "prompt_id", 1, None)}


CASES: list[tuple[Callable[[Tables], Tables], str, str, str | None, str, int]] = [
    # corrupt, table, expectation, column, offending row's table, its row index
    (_null_annotator, "rankings", "expect_column_values_to_not_be_null", "annotator_id", "rankings", 4),
    (_duplicate_response_id, "responses", "expect_column_values_to_be_unique", "response_id", "responses", 2),
    (_rank_zero, "rankings", "expect_column_values_to_be_between", "rank", "rankings", 7),
    (_rank_above_max_k, "rankings", "expect_column_values_to_be_between", "rank", "rankings", 7),
    (_duplicate_ranking_response, "rankings", "expect_compound_columns_to_be_unique", None, "rankings", 1),
    (_missing_response, "rankings", "expect_column_values_to_be_in_set", FK_RESPONSE, "rankings", 10),
    (_response_of_other_prompt, "rankings", "expect_column_values_to_be_in_set", FK_RESPONSE, "rankings", 3),
    (_missing_prompt, "responses", "expect_column_values_to_be_in_set", FK_PROMPT, "responses", 5),
    (_empty_response_text, "responses", "expect_column_value_lengths_to_be_between", "response", "responses", 1),
    (_null_prompt_id, "prompts", "expect_column_values_to_not_be_null", "prompt_id", "prompts", 1),
]


@pytest.mark.parametrize(
    ("corrupt", "table", "expectation", "column", "bad_table", "bad_row"),
    CASES,
    ids=[c[0].__name__.lstrip("_") for c in CASES],
)
def test_corruption_is_caught_with_example_rows(
    tmp_path: Path,
    workdir: Path,
    corrupt: Callable[[Tables], Tables],
    table: str,
    expectation: str,
    column: str | None,
    bad_table: str,
    bad_row: int,
) -> None:
    tables = corrupt(canonical())
    report = run_expectations(tables, tmp_path / "docs", max_k=4)

    assert not report.success
    failure = find(report, table, expectation, column)
    assert failure.unexpected_count and failure.unexpected_count >= 1
    assert 1 <= len(failure.examples) <= 5
    # The examples are full rows of the offending table, including the corrupted one.
    expected = tables[bad_table].slice(bad_row, 1).to_pylist()[0]
    matching = [e for e in failure.examples if e["_row"] == bad_row]
    assert matching, failure.examples
    row = matching[0]
    assert set(row) == {"_row", *tables[bad_table].column_names}
    for key in ("ranking_id", "response_id", "prompt_id", "rank", "annotator_id"):
        if key in expected:
            assert row[key] == expected[key]
    # Human-readable summary names the expectation and shows the example rows.
    text = report.summary()
    assert expectation in text
    assert "e.g. " in text
    json.dumps(report.to_dict())
    assert list(workdir.iterdir()) == []


def test_examples_are_json_ready_and_truncated(tmp_path: Path) -> None:
    tables = canonical()
    tables["prompts"] = set_value(tables["prompts"], "prompt", 1, "")  # p2's prompt, with messages
    tables["prompts"] = set_value(tables["prompts"], "category", 1, "c" * 1000)
    report = run_expectations(tables, tmp_path / "docs")
    failure = find(report, "prompts", "expect_column_value_lengths_to_be_between", "prompt")
    (row,) = failure.examples
    assert row["prompt_id"] == "p2"
    assert row["prompt_messages"] == [{"role": "user", "content": "Write a haiku."}]
    assert len(row["category"]) <= 201
    assert failure.kwargs["min_value"] == 1


def test_empty_rankings_and_missing_column(tmp_path: Path) -> None:
    tables = canonical()
    tables["rankings"] = tables["rankings"].slice(0, 0)
    report = run_expectations(tables, tmp_path / "empty")
    failure = find(report, "rankings", "expect_table_row_count_to_be_between", None)
    assert failure.observed_value == 0

    tables = canonical()
    tables["rankings"] = tables["rankings"].drop_columns(["batch_id"])
    report = run_expectations(tables, tmp_path / "missing")
    failure = find(report, "rankings", "expect_column_values_to_not_be_null", "batch_id")
    assert failure.error and "batch_id" in failure.error
    assert "error:" in report.summary()


def test_missing_table_is_an_error(tmp_path: Path) -> None:
    tables = canonical()
    del tables["responses"]
    with pytest.raises(ValueError, match="responses"):
        run_expectations(tables, tmp_path / "docs")
