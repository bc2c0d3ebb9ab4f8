"""Quarantine reasons -> bounded metrics categories; empty source files in ingest."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardline.data.ingest import IngestConfig, Source, run_ingest
from rewardline.data.reasons import MAX_REASON_KEYS, reason_category, reason_counts

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.mark.parametrize(
    ("reason", "category"),
    [
        ("invalid JSON: unexpected character: line 1 column 7 (char 6)", "invalid JSON"),
        ("invalid UTF-8: byte 0xff at column 12 (invalid start byte)", "invalid UTF-8"),
        ("record is not a JSON object (got null); expected one JSON object per line", "record is not a JSON object"),
        ("responses[17].rank: expected an integer, got float 1.5", "responses.rank: expected an integer"),
        ("responses[0].score: expected a finite number, got float Infinity",
         "responses.score: expected a finite number"),
        ("responses.score: expected a finite number, got NaN, Infinity or |score| > 1e+30",
         "responses.score: expected a finite number"),
        ("missing required field 'rejected'", "missing required field 'rejected'"),
        ("preference: expected a number in [1, 2]", "preference: expected a number in [1, 2]"),
        ("empty response text; expected a non-empty string", "empty response text"),
        ("duplicate: response 'p/A' already ranked in ranking 'p|a' at f.jsonl:1", "duplicate response in a ranking"),
        ("response_id 'p/A' reused with a different response text than at f.jsonl:3",
         "response_id reused with a different response text"),
        ("rank 7 is not an integer in 1..K=3 (1 = best, ties share a rank)", "rank is not an integer in 1..K"),
        ("ranking has K=1 valid response(s); at least 2 are needed", "ranking has fewer than 2 valid responses"),
        ("unreadable record: JSON parse error: Column(/a) was specified twice in row 0", "unreadable record"),
        ("some new fault at line 4166: value 12", "some new fault at line 4166"),
        ("expected 5 fields (as in the header), got 7", "CSV row with another number of fields than the header"),
        (None, "(no reason)"),
        # the step-level reasons (was: each value its own metrics key, e.g. "step 2 of 3 is empty")
        ("step 2 of 3 is empty; expected non-empty step texts", "a step is empty"),
        ("3 step labels for 2 steps; expected one label per step", "another number of step labels than steps"),
        ("step label 2 is not one of -1, 0, 1 or null (incorrect, neutral, correct, unknown)",
         "step label is not one of -1, 0, 1 or null"),
        ("outcome 2 is not one of 0, 1 or null (incorrect, correct, unknown)", "outcome is not one of 0, 1 or null"),
        ("label: 26 characters where the input has 27 (tags counted once); expected the input with each 'ки' "
         "replaced by + or -; they first differ at character 14: input 'a kи', label 'a +'",
         "label: does not line up with the input"),
        ("label: '?' at a step tag is not + or -", "label: a mark at a step tag is not + or -"),
        ("label.steps[3].chosen_completion: 5 is not an index of its 1 completion(s)",
         "label.steps.chosen_completion: not an index of a completion"),
        ("label.finish_reason: 'Solution' is not a finish reason; expected solution, found_error, give_up or "
         "bad_problem", "label.finish_reason: not a finish reason"),
        ("input: text after the last step tag ('Step 2: b'); expected every step to end with 'ки'",
         "input: text after the last step tag"),
    ],
)
def test_reason_category_drops_values_and_positions(reason: str | None, category: str) -> None:
    assert reason_category(reason) == category


def test_reason_counts_are_bounded_and_exact() -> None:
    """4,166 distinct texts of one repeated fault are one key; 200 distinct kinds fold into 'other'."""
    repeated = [f"rank {i} is not an integer in 1..K=2 (1 = best)" for i in range(3, 4169)]
    kinds = [f"kind{k} fault: detail" for k in range(200) for _ in range(k % 3 + 1)]
    counts = reason_counts(pa.chunked_array([repeated, kinds]))
    assert len(counts) == MAX_REASON_KEYS and counts["rank is not an integer in 1..K"] == 4166
    assert sum(counts.values()) == len(repeated) + len(kinds)
    assert "other" in counts and list(counts)[0] == "rank is not an integer in 1..K"
    assert reason_counts(pa.array(["a", "b: x", "b: y"], pa.string())) == {"b: x": 1, "b: y": 1, "a": 1}


def write_hh(path: Path) -> Path:
    path.write_bytes((FIXTURES / "hh_rlhf_30.jsonl").read_bytes())
    return path


def test_empty_files_in_a_source_folder_are_skipped_and_counted(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    write_hh(raw / "b.jsonl")
    (raw / "a.jsonl").write_bytes(b"")
    (raw / "c.json").write_bytes(b" [ ]\n")
    (raw / "d.csv").write_bytes(b"\n\n")
    (raw / "e.jsonl.gz").write_bytes(gzip.compress(b""))
    (raw / "f.csv").write_bytes(b"prompt,annotator_id,response,rank\r\n\n")  # a header, no records
    pq.write_table(pa.table({"chosen": pa.array([], pa.string()), "rejected": pa.array([], pa.string())}),
                   raw / "g.parquet")  # zero rows
    metrics = run_ingest(IngestConfig([Source(str(raw))], max_quarantine_share=1.0), tmp_path / "out")
    assert metrics["empty_files"] == 6 and metrics["rows_in"] == 30 and metrics["rows_ok"] == 30
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["empty_files"] == 6
    (raw / "b.jsonl").unlink()  # only empty files left (was: exit 0, rows_in 0, then validate's gate failed)
    with pytest.raises(ValueError, match=r"the sources hold no records: every data file is empty \(6, e\.g\. "):
        run_ingest(IngestConfig([Source(str(raw))]), tmp_path / "out2")



def test_files_of_an_unread_type_in_a_source_folder_are_named_and_counted(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A batch dropped into data/raw/fresh as .tsv, .ndjson or .JSONL was skipped without a word: rows_in
    unchanged, no warning, nothing in metrics.json, so its records were lost without anyone knowing."""
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    write_hh(raw / "b.jsonl")
    (raw / "batch.tsv").write_text("prompt\tresponse\n")
    (raw / "sub" / "c.JSONL").write_bytes((FIXTURES / "hh_rlhf_30.jsonl").read_bytes())
    (raw / ".gitkeep").write_text("")  # hidden files are not data: not named
    with caplog.at_level("WARNING", logger="rewardline"):
        metrics = run_ingest(IngestConfig([Source(str(raw))]), tmp_path / "out")
    assert metrics["rows_in"] == 30 and metrics["ignored_files"] == 2
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["ignored_files"] == 2
    warned = "\n".join(record.getMessage() for record in caplog.records)
    for name in ("batch.tsv", "sub/c.JSONL"):
        assert f"ingest: ignoring {raw / name}: not a data file (expected a name ending in .jsonl, .json" in warned
    assert ".gitkeep" not in warned

def test_an_empty_explicit_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_bytes(b"\n  \n")
    (tmp_path / "x.csv").write_bytes(b"prompt,annotator_id,response,rank\n")  # was: exit 0, rows_in 0
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), tmp_path / "x.parquet")  # was: the same
    for name in ("x.jsonl", "x.csv", "x.parquet"):
        with pytest.raises(ValueError, match=rf"x\.{name[2:]}: the file is empty \(no records\)"):
            run_ingest(IngestConfig([Source(str(tmp_path / name))]), tmp_path / "out")


def test_ingest_metrics_keep_at_most_50_reason_keys(tmp_path: Path) -> None:
    """Many distinct faults of many kinds: metrics keys are categories, the detail stays in the quarantine."""
    lines = (FIXTURES / "hh_rlhf_30.jsonl").read_bytes().splitlines()
    bad = [b'{"chosen": %d}' % i for i in range(100)]  # 100 distinct reasons, one category
    bad += [b'{"chosen": "x", "rejected": "y", "f%d": 1, "f%d": 2, "chosen": 3}' % (i, i) for i in range(5)]
    bad += [b'{"k%d' % i for i in range(100)]
    (tmp_path / "h.jsonl").write_bytes(b"\n".join(lines + bad))
    metrics = run_ingest(IngestConfig([Source(str(tmp_path / "h.jsonl"))], max_quarantine_share=1.0), tmp_path / "o")
    reasons = metrics["quarantine_reasons"]
    assert len(reasons) <= MAX_REASON_KEYS
    assert reasons["chosen: expected a string"] >= 100 and reasons["invalid JSON"] == 100
    assert sum(reasons.values()) == metrics["rows_quarantined"] == len(bad)
