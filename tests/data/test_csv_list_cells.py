"""CSV sources of the formats with list fields (RewardBench 2's chosen / rejected, TRL's conversational prompt /
chosen / rejected, the arena's conversation_a / conversation_b, native rankings' responses): a CSV cell holds text,
so a list is its JSON text, read back as the list (as ``rewardline score`` reads a CSV prompt cell), giving the
ranked rows of the JSONL source; a cell that is not a JSON list of the field's shape quarantines its row, naming
the line and the field (fixtures: tests/fixtures/README.md)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import orjson
import pytest
from conftest import csv_record_lines

from rewardline.data.adapters import detect_format, read_file

FIXTURES = Path(__file__).parents[1] / "fixtures"
LIST_SOURCES = {  # fixture -> format
    "rewardbench2_bo4.jsonl": "rewardbench",
    "trl_conversational_explicit.jsonl": "trl",
    "trl_conversational_implicit.jsonl": "trl",
    "pairwise_conversations.jsonl": "pairwise",
    "rankings_nested.jsonl": "rankings",
}
COMPARED = ("prompt", "prompt_messages", "category", "annotator_id", "response", "rank", "score", "origin_line")


def records(name: str) -> list[dict]:
    return [orjson.loads(line) for line in (FIXTURES / name).read_bytes().splitlines() if line.strip()]


def as_csv(rows: list[dict]) -> bytes:
    """The rows as CSV: a list or object cell as its JSON text, a missing field as an empty cell."""
    names = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()})
    return out.getvalue().encode()


def ranked(result, name: str) -> list[tuple]:
    table = result.ranked.select(list(COMPARED)).to_pylist()
    return [tuple(str(row[c]) if c == "annotator_id" else row[c] for c in COMPARED) for row in table]


def record_lines(jsonl: bytes, csv_text: bytes) -> dict[int, int]:
    """{line of a JSONL record: line where the same record starts in its CSV}."""
    in_jsonl = [i + 1 for i, line in enumerate(jsonl.splitlines()) if line.strip()]
    return dict(zip(in_jsonl, csv_record_lines(csv_text), strict=True))


@pytest.mark.parametrize("name", sorted(LIST_SOURCES))
def test_a_csv_of_list_cells_gives_the_rows_of_the_jsonl(name: str) -> None:
    rows = records(name)
    data = as_csv(rows)
    csv_name = name.replace(".jsonl", ".csv")
    assert detect_format(csv_name, data) == LIST_SOURCES[name]
    jsonl = read_file((FIXTURES / name).read_bytes(), name, fmt=LIST_SOURCES[name])
    line = record_lines((FIXTURES / name).read_bytes(), data)  # origin_line: where the record starts in each file
    for given in ("auto", LIST_SOURCES[name]):
        result = read_file(data, csv_name, fmt=given)
        assert result.quarantine.num_rows == jsonl.quarantine.num_rows
        assert result.records_in == len(rows)
        want = [r[:3] + (r[3].replace(f"trl:{name}:{r[-1]}", f"trl:{csv_name}:{line[r[-1]]}"),) + r[4:-1]
                + (line[r[-1]],) for r in ranked(jsonl, name)]  # trl's default annotator: trl:<file>:<line>
        assert ranked(result, csv_name) == want


def test_a_csv_cell_that_is_not_a_json_list_quarantines_its_row_naming_line_and_field() -> None:
    rows = records("rewardbench2_bo4.jsonl")[:4]
    rows[1]["chosen"] = 'oops ["a text"]'  # record 2 (line 3, after the header): the cell is not JSON
    rows[2]["chosen"] = [1, "a text"]  # record 3 (line 4): a list holding a number
    data = as_csv(rows)
    result = read_file(data, "rb2.csv", fmt="rewardbench")
    assert result.records_in == 4
    line = csv_record_lines(data)  # a quoted prompt spans lines: the line where each record starts
    assert sorted(set(result.ranked["origin_line"].to_pylist())) == [line[0], line[3]]
    faults = {row["origin_line"]: (row["field"], row["reason"]) for row in result.quarantine.to_pylist()}
    assert set(faults) == {line[1], line[2]}
    assert faults[line[1]][0] == "chosen" and "expected a JSON array" in faults[line[1]][1], faults
    assert faults[line[2]] == ("chosen", "chosen[0]: expected a string, got int 1"), faults


def test_rewardbench2_lists_written_as_python_reprs_are_quarantined_not_read_as_texts() -> None:
    """pandas' ``to_csv`` writes a list cell as its Python repr (``['a', 'b']``), which is not JSON: the rows said
    ``num_correct`` (RewardBench 2) but were read as v1 pairs of texts such as ``['r1', 'r2', 'r3']``, exit 0."""
    rows = records("rewardbench2_bo4.jsonl")[:3]
    out = io.StringIO()
    writer = csv.DictWriter(out, list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: repr(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows)
    result = read_file(out.getvalue().encode(), "rb2_pandas.csv")
    assert result.records_in == 3 and result.ranked.num_rows == 0
    faults = result.quarantine.to_pylist()
    lines = csv_record_lines(out.getvalue().encode())
    assert [(f["origin_line"], f["field"]) for f in faults] == [(n, "chosen") for n in lines]
    assert faults[0]["reason"].startswith("chosen: expected a list of responses, as num_correct says (RewardBench 2)"
                                          "; got text in brackets"), faults[0]["reason"]
    flattened = [{**row, "chosen": row["chosen"][0], "rejected": row["rejected"][0]} for row in rows]
    kept = read_file(as_csv(flattened), "rb2_pairs.csv")  # RewardBench 2 flattened to text pairs: read as v1
    assert kept.quarantine.num_rows == 0 and kept.ranked.num_rows == 6
