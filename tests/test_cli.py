"""The ``rewardline`` command on explicit paths: exact accounting, gates and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.data.tables import read_split, read_table

runner = CliRunner()


def record(prompt: str, annotator: str, responses: list[tuple[str, str, int]]) -> str:
    return json.dumps({"prompt": prompt, "annotator_id": annotator,
                       "responses": [{"response_id": r, "text": t, "rank": k} for r, t, k in responses]})


@pytest.fixture()
def corrupted_rankings(tmp_path: Path) -> Path:
    """Ten records, six good and four bad at different levels (parse, type, content)."""
    lines = [
        record("Q1", "ann1", [("a", "A1", 1), ("b", "B1", 2), ("c", "C1", 2)]),          # 1 ok (tie)
        record("Q1", "ann2", [("a", "A1", 2), ("b", "B1", 1), ("c", "C1", 3)]),          # 2 ok
        '{"prompt": "Q2", "annotator_id": "ann1", "responses": [',                     # 3 bad JSON
        record("Q3", "ann1", [("a", "only one", 1)]),                                    # 4 K = 1
        record("Q4", "ann1", [("a", "", 1), ("b", "B4", 2)]),                            # 5 empty text
        record("Q1", "ann1", [("a", "A1", 1), ("b", "B1", 2), ("c", "C1", 2)]),          # 6 duplicate of 1
        record("Q5", "ann1", [("a", "A5", 1), ("b", "B5", 2)]),                          # 7 ok
        record("Q6", "ann2", [("a", "A6", 1), ("b", "B6", 2), ("c", "C6", 3)]),          # 8 ok
        record("Q7", "ann1", [("a", "A7", 1), ("b", "B7", 2)]),                          # 9 ok
        record("Q8", "ann3", [("a", "A8", 2), ("b", "B8", 1)]),                          # 10 ok
    ]
    path = tmp_path / "rankings.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode())
    return path


def test_ingest_accounts_for_every_record_exactly(corrupted_rankings: Path, tmp_path: Path):
    out = tmp_path / "ingested"
    result = runner.invoke(app, ["ingest", str(corrupted_rankings), "--out", str(out),
                                 "--set", "max_quarantine_share=0.5"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["rows_in"], metrics["rows_ok"], metrics["rows_quarantined"]) == (10, 6, 4)
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    by_line = {q["origin_line"]: q for q in quarantine}
    assert sorted(by_line) == [3, 4, 5, 6]
    assert all(q["origin_file"] == str(corrupted_rankings) for q in quarantine)
    assert "JSON" in by_line[3]["reason"] or "json" in by_line[3]["reason"]
    assert "K=1" in by_line[4]["reason"]
    assert by_line[5]["field"] == "response" and "empty response" in by_line[5]["reason"]
    assert "duplicate" in by_line[6]["reason"] and f"{corrupted_rankings}:1" in by_line[6]["reason"]
    rankings = read_table(out / "rankings")
    assert sorted(set(rankings["origin_line"].to_pylist())) == [1, 2, 7, 8, 9, 10]
    assert read_table(out / "responses").num_rows == 3 + 2 + 3 + 2 + 2  # stored once


def test_ingest_gate_fails_with_a_message_naming_the_share(corrupted_rankings: Path, tmp_path: Path):
    result = runner.invoke(app, ["ingest", str(corrupted_rankings), "--out", str(tmp_path / "o"),
                                 "--set", "max_quarantine_share=0.1"])
    assert result.exit_code == 1
    assert "max_quarantine_share: share of input records quarantined 0.4000 is not <= 0.1000" in result.output
    assert (tmp_path / "o" / "quarantine.parquet").exists()  # the evidence is kept
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["gates_passed"] is False and not metrics["gates"]["max_quarantine_share"]["passed"]
    report = (tmp_path / "o" / "report.md").read_text()
    assert "| max_quarantine_share: share of input records quarantined | 0.4000 | <= 0.1000 | FAILED |" in report
    assert f"`{corrupted_rankings}:3`" in report  # the first quarantined records, with file and line


def test_unknown_format_and_missing_source_are_usage_errors(tmp_path: Path):
    result = runner.invoke(app, ["ingest", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "nope.jsonl" in result.output
    (tmp_path / "x.jsonl").write_text("{}\n")
    result = runner.invoke(app, ["ingest", str(tmp_path / "x.jsonl"), "--format", "yaml", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "ingest.sources.format: 'yaml' is not allowed" in result.output


def test_an_unreadable_input_or_an_output_unwritable_mid_run_exit_2_naming_the_path(
        corrupted_rankings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Were exit 3 (transient: the flows retried them, failing the same each time). Permissions are simulated (the
    tests may run as root, whom chmod 000 does not stop)."""
    import errno

    from rewardline.ops import atomic

    read_bytes = Path.read_bytes

    def unreadable(path: Path) -> bytes:
        if path == corrupted_rankings:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return read_bytes(path)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "read_bytes", unreadable)
        result = runner.invoke(app, ["ingest", str(corrupted_rankings), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and str(corrupted_rankings) in result.output
    assert "Permission denied" in result.output and len(result.output.splitlines()) == 1

    def unwritable(staging: Path, out_dir: Path, exchange: bool = True) -> None:  # made read-only after the checks
        raise PermissionError(errno.EACCES, "Permission denied", str(out_dir))

    monkeypatch.setattr(atomic, "publish", unwritable)
    result = runner.invoke(app, ["ingest", str(corrupted_rankings), "--out", str(tmp_path / "o"),
                                 "--set", "max_quarantine_share=0.5"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and str(tmp_path / "o") in result.output


def test_a_file_named_twice_is_read_once(corrupted_rankings: Path, tmp_path: Path):
    """The same file twice, or by its folder and on its own: its records once, accounting exact (was: exit 3,
    'ingest accounting broke: rows_in=20 but rows_ok=0 + rows_quarantined=11')."""
    raw = tmp_path / "raw"
    raw.mkdir()
    source = corrupted_rankings.rename(raw / corrupted_rankings.name)
    for sources in ([source, source], [raw, source]):
        out = tmp_path / "twice"
        result = runner.invoke(app, ["ingest", *map(str, sources), "--out", str(out),
                                     "--set", "max_quarantine_share=0.5"])
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / "metrics.json").read_text())
        assert (metrics["rows_in"], metrics["rows_ok"], metrics["rows_quarantined"]) == (10, 6, 4)


def test_an_out_that_holds_an_input_is_refused(corrupted_rankings: Path, tmp_path: Path):
    """Publishing --out replaces the folder whole: one holding the stage's input would delete it (was: exit 0, the
    raw folder replaced by the ingest output, its files gone)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    source = corrupted_rankings.rename(raw / corrupted_rankings.name)
    for out in (raw, tmp_path):
        result = runner.invoke(app, ["ingest", str(source), "--out", str(out), "--set", "max_quarantine_share=0.5"])
        assert result.exit_code == 2, result.output
        assert result.output.startswith(f"error: output {out} holds the input {source}"), result.output
        assert source.exists() and not (out / "metrics.json").exists()
    assert runner.invoke(app, ["ingest", str(source), "--out", str(tmp_path / "data" / "ingested"),
                               "--set", "max_quarantine_share=0.5"]).exit_code == 0
    for command in ("validate", "pairs"):
        result = runner.invoke(app, [command, str(tmp_path / "data" / "ingested"), "--out", str(tmp_path / "data")])
        assert result.exit_code == 2 and "holds the input" in result.output, result.output
        assert (tmp_path / "data" / "ingested" / "metrics.json").exists()
    # inside an input folder: the next `ingest raw` read the output's gates.json as a data file (exit 2)
    result = runner.invoke(app, ["ingest", str(raw), "--out", str(raw / "out"), "--set", "max_quarantine_share=0.5"])
    assert result.exit_code == 2 and result.output.startswith(f"error: output {raw / 'out'} is inside the input "
                                                              f"folder {raw}"), result.output
    assert not (raw / "out").exists()


def test_validate_and_pairs_on_the_shipped_synthetic_sample(tmp_path: Path):
    sample = Path(__file__).parents[1] / "data" / "raw" / "synthetic_multiannotator.jsonl"
    assert runner.invoke(app, ["ingest", str(sample), "--out", str(tmp_path / "i")]).exit_code == 0
    result = runner.invoke(app, ["validate", str(tmp_path / "i"), "--out", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert metrics["annotators_excluded"] == ["synth-e"]  # the careless annotator of the noise model
    rankings = pq.read_table(tmp_path / "v" / "rankings").num_rows
    ingested = pq.read_table(tmp_path / "i" / "rankings").num_rows
    assert (metrics["rankings_in"], metrics["rankings_out"]) == (ingested, rankings)  # counts add up:
    assert metrics["rankings_in"] == metrics["rankings_out"] + metrics["rankings_removed"] and rankings < ingested
    assert metrics["krippendorff_alpha"] > metrics["krippendorff_alpha_before_exclusion"]
    assert metrics["gates_passed"] and (tmp_path / "v" / "data_docs" / "index.html").exists()
    assert set(metrics["gates"]) == {"expectations", "min_alpha", "rankings_left"}
    assert set(metrics) >= {"krippendorff_alpha", "kendall_w", "pairwise_agreement", "annotators_excluded"}

    failing = runner.invoke(app, ["validate", str(tmp_path / "i"), "--out", str(tmp_path / "v2"),
                                  "--set", "min_alpha=0.95"])
    assert failing.exit_code == 1 and "validate gate failed (1 of 3)" in failing.output
    assert "min_alpha: Krippendorff's α (ordinal, after annotator exclusion)" in failing.output
    assert "is not >= 0.9500" in failing.output

    result = runner.invoke(app, ["pairs", str(tmp_path / "v"), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    splits = {s: read_split(tmp_path / "p", s) for s in ("train", "val", "test")}
    prompts = [set(t["prompt_id"].to_pylist()) for t in splits.values()]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])  # no leakage
    pairs_metrics = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert sum(t.num_rows for t in splits.values()) == pairs_metrics["pairs"]


def test_agreement_is_null_with_a_reason_without_overlap(tmp_path: Path):
    sample = Path(__file__).parent / "fixtures" / "hh_rlhf_30.jsonl"
    assert runner.invoke(app, ["ingest", str(sample), "--out", str(tmp_path / "i")]).exit_code == 0
    result = runner.invoke(app, ["validate", str(tmp_path / "i"), "--out", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert metrics["krippendorff_alpha"] is None and metrics["agreement_not_measurable_reason"]
    strict = runner.invoke(app, ["validate", str(tmp_path / "i"), "--out", str(tmp_path / "v2"),
                                 "--set", "require_overlap=true"])
    assert strict.exit_code == 1 and "not measurable" in strict.output and "require_overlap is true" in strict.output
    skipped = json.loads((tmp_path / "v" / "gates.json").read_text())["gates"]["min_alpha"]
    assert skipped["skipped"] and skipped["reason"] == metrics["agreement_not_measurable_reason"]


def test_validate_and_pairs_exit_2_on_a_missing_or_corrupt_input(tmp_path: Path):
    """Bad input is exit 2 with one line naming the file (1 is reserved for a failed gate)."""
    for command in ("validate", "pairs"):
        result = runner.invoke(app, [command, str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: expected table ") and f"{tmp_path / 'nope'}" in result.output
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("prompts", "responses", "rankings"):
        (corrupt / f"{name}.parquet").write_bytes(b"PAR1 not a parquet file")
    result = runner.invoke(app, ["pairs", str(corrupt), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and len(result.output.splitlines()) == 1
    result = runner.invoke(app, ["pairs", str(corrupt), "--out", str(tmp_path / "o"), "--set", "ties=maybe"])
    assert result.exit_code == 2 and "pairs.ties: 'maybe' is not allowed" in result.output


def test_verbose_adds_the_traceback_to_the_one_line_message(tmp_path: Path):
    quiet = runner.invoke(app, ["pairs", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    loud = runner.invoke(app, ["--verbose", "pairs", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert quiet.exit_code == loud.exit_code == 2
    assert len(quiet.output.strip().splitlines()) == 1 and "Traceback" not in quiet.output
    assert loud.output.startswith("Traceback (most recent call last)") and "run_pairs" in loud.output
    assert loud.output.strip().splitlines()[-1] == quiet.output.strip()
