"""Id fields of JSON sources take a string or an integer in any record, whatever the order of the records."""

from __future__ import annotations

import datetime
import decimal
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.data.adapters import AdapterResult, read_file
from rewardline.data.tables import read_table

runner = CliRunner()


def nested(prompt_id: object, annotator: object = "a", response_ids: tuple = (None, None), **extra: object) -> dict:
    responses = [{"response_id": r, "text": f"{prompt_id}-{k}", "rank": k + 1} for k, r in enumerate(response_ids)]
    return {"prompt_id": prompt_id, "prompt": f"question {prompt_id}", "annotator_id": annotator,
            "responses": [{k: v for k, v in r.items() if v is not None} for r in responses], **extra}


def jsonl(records: list[dict]) -> bytes:
    return "\n".join(json.dumps(r) for r in records).encode()


def rows(result: AdapterResult) -> list[tuple]:
    """The ranked rows without their record numbers, in a fixed order."""
    cols = ["prompt_id", "annotator_id", "response_id", "batch_id", "response", "rank"]
    return sorted(tuple(r[c] for c in cols) for r in result.ranked.select(cols).to_pylist())


def test_ids_of_both_kinds_in_one_file_are_read_in_either_order(tmp_path: Path) -> None:
    """Was: the first record's id fixed the type, `rewardline ingest a.jsonl --out oa` quarantined the second
    record with 'prompt_id: expected an integer, got str "p-2"', and with the lines swapped the other one with
    'prompt_id: expected a string, got int 7'."""
    records = [nested(7), nested("p-2")]
    outputs = []
    for name, order in (("a", records), ("b", records[::-1])):
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(jsonl(order))
        out = tmp_path / f"o{name}"
        result = runner.invoke(app, ["ingest", str(path), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert pq.read_table(out / "quarantine.parquet").num_rows == 0
        prompts = read_table(out / "prompts")
        assert sorted(prompts["prompt_id"].to_pylist()) == ["7", "p-2"]
        outputs.append(sorted(prompts.select(["prompt_id", "prompt"]).to_pylist(), key=str))
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("container", ["jsonl", "json"])
def test_every_id_field_of_the_rankings_format_takes_both_kinds(container: str) -> None:
    """prompt_id, annotator_id, batch_id and the responses' response_id (nested), response_id (long): a string
    or an integer, stored as the string; runs of each kind and one record holding both."""
    records = [nested(1, 10, (100, "r-b"), batch_id=5), nested("p-2", "ann", ("r-c", "r-d"), batch_id="b"),
               nested(3, 11, (101, 102), batch_id=6), nested(4, "ann", ("r-e", 103))]
    long = [{"prompt_id": p, "prompt": f"q{p}", "annotator_id": a, "response_id": r, "response": t, "rank": k}
            for p, a, r, t, k in [(1, 10, 100, "x", 1), (1, 10, "r-b", "y", 2), ("p-2", "ann", "r-c", "x", 1),
                                  ("p-2", "ann", 7, "y", 2)]]
    for shape in (records, long):
        encode = jsonl if container == "jsonl" else lambda rs: json.dumps(rs).encode()
        forward = read_file(encode(shape), f"f.{container}")
        backward = read_file(encode(shape[::-1]), f"f.{container}")
        assert forward.quarantine.num_rows == 0 and backward.quarantine.num_rows == 0
        assert rows(forward) == rows(backward)
    ids = {r[:3] for r in rows(read_file(jsonl(records), "f.jsonl"))}
    assert ("1", "10", "100") in ids and ("1", "10", "r-b") in ids and ("4", "ann", "103") in ids
    batches = set(read_file(jsonl(records), "f.jsonl").ranked["batch_id"].to_pylist())
    assert batches == {"5", "b", "6", "f"}  # "f": the file name, the default


def test_ids_of_another_format_take_both_kinds() -> None:
    """The arena format's question_id and judge, in either order."""
    def battle(qid: object, judge: object) -> dict:
        return {"question_id": qid, "model_a": "m1", "model_b": "m2", "winner": "model_a", "prompt": f"q{qid}",
                "response_a": "a", "response_b": "b", "judge": judge}

    records = [battle(28, "j"), battle("q-9", 3)]
    forward, backward = read_file(jsonl(records), "arena.jsonl"), read_file(jsonl(records[::-1]), "arena.jsonl")
    assert forward.quarantine.num_rows == 0 and rows(forward) == rows(backward)
    assert {r[:2] for r in rows(forward)} == {("28", "j"), ("q-9", "3")}


@pytest.mark.parametrize("first", ["int", "str"])
def test_booleans_floats_and_integers_beyond_64_bits_are_no_ids(first: str) -> None:
    """Whatever the first record's id, these are quarantined, the field and what was given named."""
    good = nested(7 if first == "int" else "p-7")
    bad = [nested(True), nested(2.5), nested("p-8", annotator=False), nested("p-9", response_ids=(1.0, "r")),
           nested(2**64), nested(2**63)]  # the last: an integer id (the JSON decoder reads 2**64 as a float)
    result = read_file(jsonl([good, *bad]), "bad.jsonl")
    reasons = {r["origin_line"]: (r["field"], r["reason"]) for r in result.quarantine.to_pylist()}
    assert reasons == {
        2: ("prompt_id", "prompt_id: expected a string or an integer, got boolean true"),
        3: ("prompt_id", "prompt_id: expected a string or an integer, got float 2.5"),
        4: ("annotator_id", "annotator_id: expected a string or an integer, got boolean false"),
        5: ("responses.response_id", "responses[0].response_id: expected a string or an integer, got float 1.0"),
        6: ("prompt_id",
            "prompt_id: expected a string, or an integer within 64 bits, got float 1.8446744073709552e+19"),
    }
    assert set(result.ranked["origin_line"].to_pylist()) == {1, 7}
    assert "9223372036854775808" in result.ranked["prompt_id"].to_pylist()


def parquet(records: list[dict], tmp_path: Path) -> bytes:
    """``records`` as Parquet bytes, each column typed as Arrow infers it from the values."""
    path = tmp_path / "source.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    return path.read_bytes()


def test_parquet_id_columns_of_floats_or_booleans_quarantine_their_rows_as_json_does(tmp_path: Path) -> None:
    """Was: `rewardline ingest ids.parquet` cast a float or boolean id column to strings (2.5 -> "2.5",
    3.0 -> "3", True -> "true") and ingested every row, where the same records in JSONL were quarantined
    with 'prompt_id: expected a string or an integer, got float 2.5'. Now each row with such a value is
    quarantined with the JSON reason; integer and string id columns are still read as strings."""
    floats = [nested(2.5), nested(3.0)]
    assert read_file(jsonl(floats), "ids.jsonl").ranked.num_rows == 0
    result = read_file(parquet(floats, tmp_path), "ids.parquet")
    assert result.ranked.num_rows == 0 and result.records_in == 2
    assert [(r["field"], r["reason"]) for r in result.quarantine.to_pylist()] == [
        ("prompt_id", "prompt_id: expected a string or an integer, got float 2.5"),
        ("prompt_id", "prompt_id: expected a string or an integer, got float 3.0"),
    ]
    booleans = [nested("p-1", annotator=True), nested("p-2", annotator=None)]
    result = read_file(parquet(booleans, tmp_path), "ids.parquet")
    assert [(r["field"], r["reason"]) for r in result.quarantine.to_pylist()] == [
        ("annotator_id", "annotator_id: expected a string or an integer, got boolean true"),
        ("annotator_id", "missing required field 'annotator_id'"),
    ]
    nested_ids = [nested("p-3", response_ids=(None, 1.5)), nested("p-4", response_ids=(None, None))]
    result = read_file(parquet(nested_ids, tmp_path), "ids.parquet")
    assert result.ranked["origin_line"].to_pylist() == [2, 2]
    assert [(r["field"], r["reason"]) for r in result.quarantine.to_pylist()] == [
        ("responses.response_id", "responses[1].response_id: expected a string or an integer, got float 1.5")]
    integers = [nested(1, 10, (100, 101), batch_id=5), nested(2, 11, (102, 103), batch_id=6)]
    result = read_file(parquet(integers, tmp_path), "ids.parquet")
    assert result.quarantine.num_rows == 0
    assert {r[:4] for r in rows(result)} == {("1", "10", "100", "5"), ("1", "10", "101", "5"),
                                             ("2", "11", "102", "6"), ("2", "11", "103", "6")}


def test_parquet_text_columns_of_numbers_quarantine_their_rows_and_the_counts_add_up(tmp_path: Path) -> None:
    """A text field (the long shape's prompt) given as an integer column is refused as in JSON; a
    dictionary-encoded string column (pandas' categorical) is text. `rewardline ingest` accounts for every row."""
    long = [{"prompt_id": "p", "prompt": 7, "annotator_id": "a", "response": t, "rank": k}
            for t, k in (("x", 1), ("y", 2))]
    reasons = ["prompt: expected a string, got int 7"] * 2
    assert read_file(jsonl(long), "long.jsonl").quarantine["reason"].to_pylist() == reasons
    path = tmp_path / "long.parquet"
    path.write_bytes(parquet(long, tmp_path))
    result = runner.invoke(app, ["ingest", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output  # the quarantine gate: every record quarantined
    quarantine = pq.read_table(tmp_path / "out" / "quarantine.parquet")
    assert quarantine["reason"].to_pylist() == reasons
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert (metrics["rows_in"], metrics["rows_ok"], metrics["rows_quarantined"]) == (2, 0, 2)
    table = pa.Table.from_pylist([dict(r, prompt="q") for r in long])
    table = table.set_column(1, "prompt", table.column("prompt").dictionary_encode())
    pq.write_table(table, path)
    assert read_file(path.read_bytes(), "long.parquet").quarantine.num_rows == 0


def test_parquet_id_columns_of_dates_or_decimals_quarantine_their_rows_naming_the_type(tmp_path: Path) -> None:
    """Columns whose values JSON has no type for (timestamps, dates, decimals) are named by their Python type."""
    rows = [nested("p-1"), nested("p-2")]
    table = pa.Table.from_pylist(rows)
    for values, shown in (([datetime.datetime(2024, 1, 2)] * 2, 'datetime "2024-01-02 00:00:00"'),
                          ([datetime.date(2024, 1, 2)] * 2, 'date "2024-01-02"'),
                          ([decimal.Decimal("1.5")] * 2, 'Decimal "1.5"')):
        path = tmp_path / "ids.parquet"
        pq.write_table(table.set_column(0, "prompt_id", pa.array(values)), path)
        result = read_file(path.read_bytes(), "ids.parquet")
        assert result.ranked.num_rows == 0
        reason = f"prompt_id: expected a string or an integer, got {shown}"
        assert result.quarantine["reason"].to_pylist() == [reason] * 2
