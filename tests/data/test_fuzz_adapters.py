"""Crash-proof parsing: explicit regressions plus property-based fuzzing of every adapter.

``tests/fixtures/hh_rlhf_nonobject_lines.jsonl`` killed ``rewardline ingest`` with SIGSEGV
(returncode -11, pyarrow 25): after the truncated line 5 the bisection handed Arrow a span
starting with the bare ``null`` of line 6. The subprocess test keeps that class covered
even if a crash comes back (an in-process segfault would take pytest down with it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rewardline.data.adapters import read_file

FIXTURES = Path(__file__).parents[1] / "fixtures"
REPO = Path(__file__).parents[2]
CRASH_INPUT = FIXTURES / "hh_rlhf_nonobject_lines.jsonl"
# record number -> reason fragment: a truncated line, then JSON values that are not objects
CRASH_FAULTS = {
    5: "invalid JSON",
    6: "record is not a JSON object (got null)",
    7: "record is not a JSON object (got array)",
    8: "record is not a JSON object (got str)",
    9: "record is not a JSON object (got int)",
}


def test_nonobject_lines_after_a_bad_line_do_not_crash_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "rewardline.cli", "ingest", str(CRASH_INPUT), "--out", str(out),
           "--set", "max_quarantine_share=1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])  # was -11 (SIGSEGV)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["rows_in"], metrics["rows_ok"], metrics["rows_quarantined"]) == (10, 5, 5)
    quarantine = {r["origin_line"]: r["reason"] for r in pq.read_table(out / "quarantine.parquet").to_pylist()}
    assert sorted(quarantine) == sorted(CRASH_FAULTS)
    for line, fragment in CRASH_FAULTS.items():
        assert fragment in quarantine[line], (line, quarantine[line])


def test_nonobject_lines_in_process_every_position() -> None:
    """Each non-object value, alone or at the start, middle or end of good lines, is quarantined."""
    good = CRASH_INPUT.read_bytes().splitlines()[0]
    for value in (b"null", b"  null ", b"[1,2]", b'"x"', b"3", b"true", b"[]", b"{} null", b"{}{}", b"{bad"):
        for lines in ([value], [value, good], [good, value], [good, value, good], [good, b"{bad", value, good]):
            if lines[0].startswith(b"["):
                continue  # a file starting with "[" is a JSON list, not JSONL
            result = read_file(b"\n".join(lines), "x.jsonl", fmt="hh-rlhf")
            bad = set(result.quarantine["origin_line"].to_pylist())
            assert result.records_in == len(lines)
            assert bad == {i + 1 for i, line in enumerate(lines) if line != good}, (value, lines)
            assert len(set(result.ranked["origin_line"].to_pylist())) + len(bad) == len(lines)


NONFINITE_JSON = ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e31")


def nested_record(i: int, score: str) -> str:
    return (f'{{"prompt":"p{i}","annotator_id":"a","responses":[{{"text":"x","rank":1,"score":{score}}},'
            f'{{"text":"y","rank":2,"score":0.5}}]}}')


def check_scores_quarantined(result, n_bad: int, field: str) -> None:
    bad = result.quarantine.to_pylist()
    assert len(bad) == n_bad, bad
    assert all(r["field"] == field and "expected a finite number" in r["reason"] for r in bad), bad
    scores = np.asarray(result.ranked["score"].to_numpy(zero_copy_only=False), dtype=float)
    assert np.isfinite(scores[~np.isnan(scores)]).all() and np.nanmax(np.abs(scores)) <= 1e30


def test_non_finite_scores_are_quarantined_in_jsonl_and_json_lists() -> None:
    records = [nested_record(i, v) for i, v in enumerate(NONFINITE_JSON)] + [nested_record(99, "0.25")]
    jsonl = read_file("\n".join(records).encode(), "s.jsonl")
    check_scores_quarantined(jsonl, len(NONFINITE_JSON), "responses.score")
    assert set(jsonl.ranked["origin_line"].to_pylist()) == {len(records)}
    # 1e400 fails Arrow's parser; the failure path names the field, not just "invalid JSON"
    assert "responses[0].score: expected a finite number, got float inf" in jsonl.quarantine["reason"][3].as_py()
    listed = read_file(("[" + ",".join(records) + "]").encode(), "s.json")  # not strict JSON: stdlib path
    check_scores_quarantined(listed, len(NONFINITE_JSON), "responses.score")
    alpaca = read_file(b'[{"instruction":"q","output_1":"r","generator_1":"g1","output_2":"s","generator_2":"g2",'
                       b'"preference":NaN,"annotator":"j"}]', "a.json")
    assert alpaca.quarantine["field"].to_pylist() == ["preference"] and alpaca.ranked.num_rows == 0


def test_non_finite_scores_are_quarantined_in_csv_and_parquet(tmp_path: Path) -> None:
    values = ["nan", "inf", "-inf", "Infinity", "1e400", "1e31"]
    csv = "prompt,annotator_id,response,rank,score\n" + "".join(f"p{i},a,x,1,{v}\np{i},a,y,2,0\n"
                                                                 for i, v in enumerate(values))
    result = read_file(csv.encode(), "s.csv")
    check_scores_quarantined(result, len(values), "score")
    assert result.quarantine["origin_line"].to_pylist() == [1, 3, 5, 7, 9, 11]
    table = pa.table({"prompt": ["p", "p", "q", "q"], "annotator_id": ["a"] * 4, "response": ["x", "y"] * 2,
                      "rank": [1, 2, 1, 2], "score": [float("nan"), 0.0, 1.0, float("-inf")]})
    pq.write_table(table, tmp_path / "s.parquet")
    result = read_file((tmp_path / "s.parquet").read_bytes(), "s.parquet")
    check_scores_quarantined(result, 2, "score")
    assert result.quarantine["origin_line"].to_pylist() == [1, 4]


def test_csv_rows_with_the_wrong_number_of_fields_are_quarantined_not_fatal() -> None:
    """Was: ArrowInvalid 'CSV parse error: Expected 5 columns, got 3' for the whole file (no file name)."""
    data = (b'prompt,annotator_id,response,rank,score\np,a,x,1,0.5\np,a,y\n\n'
            b'p,a,"multi\nline",2,0\np,a,z,2,0,extra\np,a,w,3,0\nq,a,"unterminated,1\n')
    result = read_file(data, "w.csv")
    assert result.records_in == 6
    q = {r["origin_line"]: r for r in result.quarantine.to_pylist()}
    assert sorted(q) == [2, 4, 6]
    assert q[2]["reason"] == "expected 5 fields (as in the header), got 3" and q[2]["raw"] == "p,a,y"
    assert q[4]["reason"] == "expected 5 fields (as in the header), got 6"
    assert result.ranked["response"].to_pylist() == ["x", "multi\nline", "w"]
    assert result.ranked["origin_line"].to_pylist() == [1, 3, 5]
