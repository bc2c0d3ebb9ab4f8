"""Size bounds (issue 12, "Bounds"): a record over a limit is quarantined naming the field and the bound,
in every container and adapter; an oversized raw record is never parsed; ``rewardline score`` exits 2."""

from __future__ import annotations

import io
import json
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import csv_record_lines
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.data.adapters import read_file
from rewardline.data.canonical import canonicalize
from rewardline.data.ingest import IngestConfig, Source, run_ingest
from rewardline.data.limits import Limits
from rewardline.data.reasons import reason_counts
from rewardline.errors import TooLarge

SMALL = Limits(max_record_bytes=2_000, max_prompt_chars=300, max_response_chars=200)


def _ranking(prompt: str, a: str, b: str, annotator: str = "ann-1") -> dict:
    return {"prompt": prompt, "annotator_id": annotator,
            "responses": [{"response_id": "a", "text": a, "rank": 1}, {"response_id": "b", "text": b, "rank": 2}]}


def _accounted(data: bytes, name: str, fmt: str, limits: Limits = SMALL) -> tuple[dict[int, tuple[str, str]], int]:
    """{record number: (field, reason)} of the quarantine, after checking rows_in = ok + quarantined."""
    result = read_file(data, name, fmt=fmt, limits=limits)
    tables = canonicalize(result.ranked, limits)
    quarantine = pa.concat_tables([result.quarantine, tables.quarantine])
    assert tables.records_ok + quarantine.num_rows == result.records_in
    return {r["origin_line"]: (r["field"], r["reason"]) for r in quarantine.to_pylist()}, tables.records_ok


def _jsonl(rows: list[dict]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


def test_an_oversized_jsonl_line_is_quarantined_unparsed() -> None:
    # object-shaped but broken inside: parsed, it would be quarantined as invalid JSON
    huge = b'{"prompt": "p", "responses": [' + b"x" * 5_000 + b"}"
    data = _jsonl([_ranking("p1", "a", "b")]) + huge + b"\n" + _jsonl([_ranking("p2", "c", "d")])
    quarantined, ok = _accounted(data, "r.jsonl", "rankings")
    assert ok == 2 and list(quarantined) == [2]
    field, reason = quarantined[2]
    assert reason.startswith(f"record too large: {len(huge)} bytes") and "ingest.max_record_bytes=2000" in reason
    assert "(not parsed)" in reason


@pytest.mark.parametrize("field", ["prompt", "response"])
def test_long_texts_are_quarantined_naming_field_and_limit(field: str) -> None:
    long = "y" * 301
    row = _ranking(long, "a", "b") if field == "prompt" else _ranking("p", long, "b")
    quarantined, ok = _accounted(_jsonl([_ranking("q", "a", "b"), row]), "r.jsonl", "rankings")
    assert ok == 1
    got_field, reason = quarantined[2]
    limit = 300 if field == "prompt" else 200
    assert got_field == field
    assert reason == f"{field}: too long: 301 characters; expected at most ingest.max_{field}_chars={limit}"


def _hh(chosen_tail: str) -> dict:
    return {"chosen": f"\n\nHuman: hi\n\nAssistant: {chosen_tail}", "rejected": "\n\nHuman: hi\n\nAssistant: no"}


def _trl(chosen: str) -> dict:
    return {"prompt": "hi", "chosen": chosen, "rejected": "no"}


def _pairwise(a: str) -> dict:
    return {"prompt": "hi", "model_a": "m1", "model_b": "m2", "response_a": a, "response_b": "no",
            "winner": "model_a", "judge": "j1"}


@pytest.mark.parametrize("fmt,make", [("hh-rlhf", _hh), ("trl", _trl), ("rewardbench", _trl)])
@pytest.mark.parametrize("container", ["jsonl", "json", "csv", "parquet"])
def test_every_adapter_and_container_applies_the_limits(fmt: str, make, container: str) -> None:
    if fmt == "rewardbench":
        make = lambda text: {**_trl(text), "subset": "chat"}  # noqa: E731
    texts = ["fine", "z" * 250, "ok", "w" * 3_000]  # 250 chars > 200; 3000 bytes > 2000
    rows = [json.loads(json.dumps(make(t)).replace("hi", f"hi {i}")) for i, t in enumerate(texts)]  # one prompt each
    if container == "jsonl":
        data = _jsonl(rows)
    elif container == "json":
        data = json.dumps(rows).encode()
    else:
        table = pa.Table.from_pylist(rows)
        buf = io.BytesIO()
        if container == "csv":
            import pyarrow.csv as pcsv
            pcsv.write_csv(table, buf)
        else:
            pq.write_table(table, buf)
        data = buf.getvalue()
    quarantined, ok = _accounted(data, f"f.{container}", fmt)
    second, fourth = (2, 4) if container != "csv" else csv_record_lines(data)[1::2]  # a CSV's lines: header, cells
    assert ok == 2 and sorted(quarantined) == [second, fourth], quarantined
    assert "too long: " in quarantined[second][1] and "ingest.max_response_chars=200" in quarantined[second][1]
    assert quarantined[fourth][1].startswith("record too large: "), quarantined[fourth]


def test_pairwise_adapter_applies_the_text_limit() -> None:
    quarantined, ok = _accounted(_jsonl([_pairwise("fine"), _pairwise("v" * 201)]), "arena.jsonl", "pairwise")
    assert ok == 1 and quarantined[2][0] == "response" and "ingest.max_response_chars=200" in quarantined[2][1]


def test_ingest_config_carries_the_limits_and_metrics_keep_one_category(tmp_path: Path) -> None:
    src = tmp_path / "r.jsonl"
    src.write_bytes(_jsonl([_ranking(f"p{i}", "a" * (201 + i), "b") for i in range(5)]
                           + [_ranking(f"q{i}", "a", "b") for i in range(5)]))
    config = IngestConfig(sources=[Source(path=str(src), format="rankings")], max_quarantine_share=1.0,
                          max_response_chars=200)
    assert Limits.of(config) == Limits(max_response_chars=200)
    metrics = run_ingest(config, tmp_path / "out")
    assert (metrics["rows_in"], metrics["rows_ok"], metrics["rows_quarantined"]) == (10, 5, 5)
    assert metrics["quarantine_reasons"] == {"response: too long (over ingest.max_response_chars)": 5}
    assert reason_counts(pa.array([SMALL.record_reason(n) for n in (3000, 4000)])) == {
        "record too large (over ingest.max_record_bytes)": 2}


def test_defaults_are_generous_and_validated() -> None:
    assert Limits() == Limits(max_record_bytes=1_000_000, max_prompt_chars=200_000, max_response_chars=100_000)
    assert Limits.of(IngestConfig(sources=[Source(path="x")])) == Limits()
    with pytest.raises(ValueError, match="max_record_bytes"):
        Limits(max_record_bytes=0)
    assert Limits().max_request_bytes(max_rows=8) == 8 * 1_000_000 + 65_536


def test_check_row_raises_too_large_for_servers() -> None:
    with pytest.raises(TooLarge) as err:
        SMALL.check_row("p", "r" * 201, file="request", line=3)
    assert (err.value.field, err.value.limit, err.value.limit_value, err.value.size) == (
        "response", "ingest.max_response_chars", 200, 201)
    SMALL.check_row("p" * 300, "r" * 200)  # at the limit: fine


@pytest.mark.parametrize("row,field,limit", [
    ({"prompt": "p", "response": "r" * 101}, "response", "ingest.max_response_chars=100"),
    ({"prompt": [{"role": "user", "content": "p" * 200}], "response": "r"}, "prompt", "ingest.max_prompt_chars=150"),
    ({"prompt": "p", "response": "r", "pad": "x" * 600}, "record", "ingest.max_record_bytes=500"),
])
def test_score_exits_2_naming_file_line_field_and_limit(tmp_path: Path, monkeypatch, row, field, limit) -> None:
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("ingest:\n  max_record_bytes: 500\n  max_prompt_chars: 150\n"
                                   "  max_response_chars: 100\n")
    Path("in.jsonl").write_text(json.dumps({"prompt": "ok", "response": "fine"}) + "\n" + json.dumps(row) + "\n")
    result = CliRunner().invoke(app, ["score", "--model", "no-model-needed", "--input", "in.jsonl",
                                      "--out", "out.jsonl"])
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: in.jsonl:2: field ") and f"'{field}'" in message and limit in message
    assert not Path("out.jsonl").exists()
