"""Rows files: `score` and `rerank` read and write JSONL, Parquet, CSV and TSV (layout by suffix, gzip after .gz),
local or on S3, the same rewards whichever layout, a bad table row named by file, row and field, and rows that do
not fit the output's table refused before any scoring."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from conftest import read_score_rows, save_tiny_reward_model

from rewardline.errors import BadInput
from rewardline.modeling.rows_files import rows_layout, write_rows
from rewardline.modeling.score import score_jsonl
from rewardline.serving.rerank_file import rerank_jsonl

MESSAGES = [{"role": "user", "content": "name a colour"}]
ROWS = [
    {"prompt": "what is a cat", "response": "a small animal", "source": "a", "id": 1},
    {"prompt": "what is a cat", "response": "7", "source": "b", "id": 2},
    {"prompt": "name a prime", "response": "seven, or 7", "source": "c", "id": 3},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_reward_model(tmp_path_factory.mktemp("rows-files"), max_length=40)


def test_the_layout_is_the_suffix_or_parquet_magic(tmp_path: Path):
    pq.write_table(pa.table({"prompt": ["p"], "response": ["r"]}), tmp_path / "table.bin")
    names = ("a.jsonl", "a.PARQUET", "a.pq", "a.csv", "a.tsv", "a.json", "a.csv.gz", "a.jsonl.gz", "s3://b/a.tsv")
    assert [rows_layout(name) for name in names] == \
        ["jsonl", "parquet", "parquet", "csv", "tsv", "jsonl", "csv", "jsonl", "tsv"]
    assert rows_layout(tmp_path / "table.bin", (tmp_path / "table.bin").read_bytes()[:4]) == "parquet"


def test_parquet_csv_and_tsv_score_as_jsonl_does_with_their_columns_kept(model_dir: Path, tmp_path: Path):
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    table = pa.Table.from_pylist(ROWS)
    pq.write_table(table, tmp_path / "in.parquet")
    pcsv.write_csv(table, tmp_path / "in.csv")
    pcsv.write_csv(table, tmp_path / "in.tsv", pcsv.WriteOptions(delimiter="\t"))
    score_jsonl(model_dir, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    expected = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["response"] for r in read_score_rows(tmp_path / "in.csv")] == ["a small animal", "7", "seven, or 7"]
    for source, out in (("in.parquet", "out.parquet"), ("in.csv", "out.csv"), ("in.tsv", "out.tsv"),
                        ("in.parquet", "out-from-parquet.jsonl")):
        assert score_jsonl(model_dir, tmp_path / source, tmp_path / out) == len(ROWS)
        if out.endswith(".parquet"):
            got = pq.read_table(tmp_path / out).to_pylist()
        elif out.endswith(".jsonl"):
            got = [json.loads(line) for line in (tmp_path / out).read_text().splitlines()]
        else:
            options = pcsv.ParseOptions(delimiter="\t" if out.endswith(".tsv") else ",")
            got = pcsv.read_csv(tmp_path / out, parse_options=options).to_pylist()
        assert [{k: v for k, v in r.items() if k not in ("reward", "id")} for r in got] == \
            [{k: v for k, v in r.items() if k not in ("reward", "id")} for r in expected], out
        assert [int(r["id"]) for r in got] == [1, 2, 3]  # CSV cells are read as text, a CSV written back as numbers
        assert [r["reward"] for r in got] == pytest.approx([r["reward"] for r in expected], abs=1e-6), out


def test_a_bad_table_row_is_named_by_file_row_and_field(tmp_path: Path):
    pq.write_table(pa.table({"prompt": ["p", "q"], "response": ["r", None]}), tmp_path / "in.parquet")
    with pytest.raises(BadInput) as bad:
        read_score_rows(tmp_path / "in.parquet")
    assert str(bad.value) == f"{tmp_path / 'in.parquet'}: row 2: field 'response': expected a string, got null"
    (tmp_path / "in.csv").write_text("prompt,answer\np,r\n")
    with pytest.raises(BadInput, match=r"in\.csv: row 1: field 'response': missing; expected a string$"):
        read_score_rows(tmp_path / "in.csv")
    (tmp_path / "header-only.csv").write_text("\ufeffprompt,response\n")
    assert read_score_rows(tmp_path / "header-only.csv") == []  # a header and no rows: zero rows, not an error
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(BadInput, match=r"broken\.parquet: not a readable PARQUET file \(.+\); expected a Parquet "
                                       r"table of rows with a header$"):
        read_score_rows(tmp_path / "broken.parquet")



@pytest.mark.parametrize("layout", ["csv", "tsv"])
def test_a_bad_csv_row_is_named_by_the_line_it_starts_on_as_ingest_names_it(tmp_path: Path, layout: str):
    """``rewardline score --input in.csv`` said "in.csv: row 2: field 'prompt[0]': ..." for the record on line 5 (the
    one before it has a cell of two lines, then a blank line), while ingest names a CSV record by its line: "in.csv:5",
    found by csv_lines.record_start_lines; also for a row that does not fit the table of the rows before it."""
    from rewardline.modeling.rows_files import open_rows_file
    from rewardline.modeling.score import check_score_row

    sep = "," if layout == "csv" else "\t"
    path = tmp_path / f"in.{layout}"
    path.write_text(f'prompt{sep}response\n"Line one\nline two"{sep}fine\n\n[1]{sep}x\n')
    with open_rows_file(path) as rows_file, pytest.raises(BadInput) as bad:
        rows_file.check(check_score_row, tmp_path / "out.jsonl")
    assert str(bad.value) == f"{path}:5: field 'prompt[0]': expected an object {{role, content}}, got a number"
    messages = '"[{""role"": ""user"", ""content"": ""hi""}]"'
    path.write_text(f'prompt{sep}response\n"a\nb"{sep}x\n{messages}{sep}y\n')
    with open_rows_file(path) as rows_file, pytest.raises(BadInput) as unfit:
        rows_file.check(check_score_row, tmp_path / "out.parquet")
    assert str(unfit.value).startswith(f"{path}:4: the row does not fit the table of the rows before it"), unfit.value

def test_a_csv_record_with_the_wrong_number_of_cells_is_named_by_its_row(tmp_path: Path):
    """Was "in.csv: not a readable CSV file (CSV parse error: Expected 2 columns, got 1: q)": no row to look at."""
    (tmp_path / "in.csv").write_text('prompt,response\np,"two\nlines"\n\nq\nr,s\n')  # row 2 has one cell
    with pytest.raises(BadInput) as bad:
        read_score_rows(tmp_path / "in.csv")
    assert str(bad.value) == (f"{tmp_path / 'in.csv'}:5: not a readable CSV file (CSV parse error: Expected 2 "
                              "columns, got 1: q); expected 2 cells (prompt, response), got 1")  # its line, as ingest's
    (tmp_path / "in.tsv").write_text("prompt\tresponse\np\tr\tx\n")
    with pytest.raises(BadInput, match=r"in\.tsv:2: not a readable TSV file \(.+\); expected 2 cells "
                                       r"\(prompt, response\), got 3$"):
        read_score_rows(tmp_path / "in.tsv")


def test_rows_that_do_not_fit_one_table_are_refused_before_scoring(tmp_path: Path):
    rows = tmp_path / "mixed.jsonl"  # a text prompt, then a prompt of messages: fine as JSONL, not as one column
    rows.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"prompt": MESSAGES, "response": "red"}) + "\n")
    with pytest.raises(BadInput, match=r"mixed\.jsonl:2: the row does not fit the table of the rows before it "
                                       r"\(.+\); expected rows of one shape, or write out\.parquet as \.jsonl$"):
        score_jsonl(tmp_path / "no-such-model", rows, tmp_path / "out.parquet")  # refused before the model loads
    assert not (tmp_path / "out.parquet").exists()


def test_a_list_cell_is_written_to_csv_as_its_json_text(tmp_path: Path):
    write_rows([{"prompt": MESSAGES, "steps": ["a", "b"], "step_scores": [0.25, None], "reward": 0.25}],
               tmp_path / "out.csv")
    (row,) = pcsv.read_csv(tmp_path / "out.csv").to_pylist()
    assert json.loads(row["prompt"]) == MESSAGES and json.loads(row["step_scores"]) == [0.25, None]
    assert row["reward"] == 0.25


def test_rerank_writes_a_parquet_table_grouped_by_prompt(model_dir: Path, tmp_path: Path):
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "in.parquet")
    counts = rerank_jsonl(model_dir, tmp_path / "in.parquet", tmp_path / "ranked.parquet", top_k=1)
    assert counts["rows_written"] == 2 and counts["prompts"] == 2
    ranked = pq.read_table(tmp_path / "ranked.parquet").to_pylist()
    assert [r["prompt"] for r in ranked] == ["what is a cat", "name a prime"] and [r["rank"] for r in ranked] == [1, 1]


def test_gzip_in_and_out(model_dir: Path, tmp_path: Path):
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "in.jsonl.gz").write_bytes(gzip.compress((tmp_path / "in.jsonl").read_bytes()))
    score_jsonl(model_dir, tmp_path / "in.jsonl", tmp_path / "plain.jsonl")
    score_jsonl(model_dir, tmp_path / "in.jsonl.gz", tmp_path / "out.csv.gz")
    got = pcsv.read_csv(pa.BufferReader(gzip.decompress((tmp_path / "out.csv.gz").read_bytes()))).to_pylist()
    expected = [json.loads(line) for line in (tmp_path / "plain.jsonl").read_text().splitlines()]
    assert [r["reward"] for r in got] == pytest.approx([r["reward"] for r in expected], abs=1e-6)
    assert not list(tmp_path.glob(".*.part"))  # written through a temp file renamed into place


def test_score_reads_and_writes_s3(model_dir: Path, tmp_path: Path, s3_env):
    """`rewardline score --input s3://... --out s3://...` against a real S3 server (SeaweedFS): a Parquet table in,
    gzipped JSONL out, the rewards of the local run."""
    from rewardline.ops import storage

    prefix = f"s3://{s3_env.bucket}/rows-{uuid.uuid4().hex[:8]}"
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(ROWS), sink)
    storage.write_bytes(f"{prefix}/in.parquet", sink.getvalue().to_pybytes())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "rewardline.cli", "--json", "score", "--model", str(model_dir),
                          "--input", f"{prefix}/in.parquet", "--out", f"{prefix}/out.jsonl.gz"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["output"] == f"{prefix}/out.jsonl.gz"
    got = [json.loads(line) for line in gzip.decompress(storage.read_bytes(f"{prefix}/out.jsonl.gz")).splitlines()]
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "in.parquet")
    score_jsonl(model_dir, tmp_path / "in.parquet", tmp_path / "local.jsonl")
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert [{**r, "reward": None} for r in got] == [{**r, "reward": None} for r in local]
    assert [r["reward"] for r in got] == pytest.approx([r["reward"] for r in local], abs=1e-6)


def test_an_out_naming_a_folder_or_a_bucket_is_refused_before_scoring(model_dir: Path, tmp_path: Path, s3_env):
    """Was: `rewardline score --input x.parquet --out s3://bucket/out/` wrote an object named `out`, `--out DIR/`
    a file named DIR, `--out s3://bucket` exited 3 (transient) 'Parameter validation failed: Invalid length for
    parameter Key', and an --out that is an existing directory exited 2 with '[Errno 21] Is a directory:
    /tmp/.DIR.<hex>.part' once every row was scored. Now exit 2 before any row is scored, nothing written."""
    from rewardline.ops import storage

    src = tmp_path / "in.jsonl"
    write_rows(ROWS, src)
    (tmp_path / "existing").mkdir()
    prefix = f"s3://{s3_env.bucket}/out-{uuid.uuid4().hex[:8]}"
    expected = "expected a rows file name, its suffix picking the layout (.jsonl, .parquet, .csv or .tsv; .gz after " \
               "any for gzip)"
    cases = {f"{prefix}/": "ends in '/', a folder", f"{tmp_path}/absent/": "ends in '/', a folder",
             str(tmp_path / "existing"): "is a directory", f"s3://{s3_env.bucket}": f"names the bucket "
             f"{s3_env.bucket}, not an object (s3://bucket/key)",
             # was: exit 0, the input replaced by its scored copy
             str(src): "is the input; writing it would replace the rows being scored"}
    before = src.read_bytes()
    for out, what in cases.items():
        for run in (score_jsonl, rerank_jsonl):
            with pytest.raises(BadInput) as refused:
                run(model_dir, src, out)
            assert str(refused.value) == f"output {out}: {what}; {expected}"
    assert not storage.exists(prefix) and not (tmp_path / "absent").exists()
    assert list((tmp_path / "existing").iterdir()) == [] and src.read_bytes() == before


def test_an_s3_out_with_no_bucket_or_no_endpoint_fails_before_scoring(tmp_path: Path, s3_env,
                                                                       monkeypatch: pytest.MonkeyPatch):
    """Was: `rewardline score --out s3://no-such-bucket/x.jsonl`, or an --out on an S3 endpoint that does not answer,
    scored every row and only then failed, at the upload. Now the bucket is checked before any row is scored: a
    missing bucket exits 2 naming it, an endpoint that does not answer exits 3. The model here is an empty folder,
    which scoring would refuse: an error about the bucket shows the check came first."""
    from rewardline.errors import exit_code
    from rewardline.ops import storage

    src, unloaded = tmp_path / "in.jsonl", tmp_path / "empty-model"
    write_rows(ROWS, src)
    unloaded.mkdir()
    out = f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/scored.jsonl"
    for run in (score_jsonl, rerank_jsonl):
        with pytest.raises(storage.StorageNotFound) as missing:
            run(unloaded, src, out)
        assert str(missing.value) == f"checking the bucket of {out} failed: no bucket named " \
                                     f"{out.split('/')[2]!r} at {s3_env.endpoint_url}"
        assert exit_code(missing.value) == 2
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("REWARDLINE_S3_MAX_ATTEMPTS", "1")
    with pytest.raises(storage.StorageError) as down:
        score_jsonl(unloaded, src, f"s3://{s3_env.bucket}/scored.jsonl")
    assert str(down.value).startswith(f"checking the bucket of s3://{s3_env.bucket}/scored.jsonl failed: ")
    assert exit_code(down.value) == 3


def _closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_s3_input_that_is_a_prefix_or_missing_says_so(model_dir: Path, tmp_path: Path, s3_env):
    """Was: `rewardline score --input s3://bucket/in --out y.jsonl` with in/ a prefix of rows files said 'reading
    s3://bucket/in failed: The specified key does not exist.', as for a key that is missing, where a local folder
    or a missing file says what it is. Now: 'URI: a prefix holding N file(s) (FIRST, ...), not an object; expected
    a rows file: ...' / 'URI: missing; expected a rows file: ...', exit 2 as before."""
    from rewardline.ops import storage

    prefix = f"s3://{s3_env.bucket}/in-{uuid.uuid4().hex[:8]}"
    for name in ("a.jsonl", "b.jsonl"):
        storage.write_bytes(f"{prefix}/{name}", b"".join(json.dumps(r).encode() + b"\n" for r in ROWS))
    expected = "expected a rows file: JSONL (one JSON object per line), Parquet, CSV or TSV"
    cases = {prefix: f"a prefix holding 2 file(s) ({prefix}/a.jsonl, ...), not an object",
             f"{prefix}/": f"a prefix holding 2 file(s) ({prefix}/a.jsonl, ...), not an object",
             f"{prefix}/missing.parquet": "missing"}
    for given, what in cases.items():
        for run in (score_jsonl, rerank_jsonl):
            with pytest.raises(BadInput) as refused:
                run(model_dir, given, tmp_path / "out.jsonl")
            assert str(refused.value) == f"{given}: {what}; {expected}"
    assert not (tmp_path / "out.jsonl").exists()


def test_a_csv_written_by_score_reads_back_as_the_same_rows(model_dir: Path, tmp_path: Path):
    """A prompt of messages (and a PRM's steps) is written to CSV as JSON text; read back, it is the list again, so
    scoring the CSV that `score` wrote gives the same rewards (it used to score the JSON text as a text prompt)."""
    rows = [{"prompt": MESSAGES, "response": "red", "note": "[not json"}, {"prompt": MESSAGES, "response": "blue",
                                                                          "note": "[1, 2]"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    score_jsonl(model_dir, tmp_path / "in.parquet", tmp_path / "first.csv")
    score_jsonl(model_dir, tmp_path / "first.csv", tmp_path / "second.jsonl")
    second = [json.loads(line) for line in (tmp_path / "second.jsonl").read_text().splitlines()]
    first = pcsv.read_csv(tmp_path / "first.csv").to_pylist()
    assert [r["prompt"] for r in second] == [MESSAGES, MESSAGES]
    assert [r["note"] for r in second] == ["[not json", "[1, 2]"]  # other columns stay text
    assert [r["reward"] for r in second] == pytest.approx([r["reward"] for r in first], abs=1e-6)


def test_score_streams_chunk_by_chunk_with_the_rewards_of_one_pass(model_dir: Path, tmp_path: Path, monkeypatch):
    """`score` reads, scores and writes ``chunk_rows`` rows at a time (memory holds a chunk, not the file): the
    rewards do not depend on the chunk size, and a table's columns are every key of any chunk (a column null in the
    first chunk takes its type from a later one; a key only the last row has is kept, where one table built from
    the first row's keys dropped it)."""
    import rewardline.modeling.score as score_module

    rows = [{**row, "note": None} for row in ROWS] + [{"prompt": "name a prime", "response": "2", "note": "even",
                                                       "id": 4, "judge": "gpt"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    score_jsonl(model_dir, tmp_path / "in.jsonl", tmp_path / "whole.jsonl")
    whole = [json.loads(line) for line in (tmp_path / "whole.jsonl").read_text().splitlines()]
    sizes: list[int] = []
    real = score_module.score_texts
    monkeypatch.setattr(score_module, "score_texts", lambda *a, **k: sizes.append(len(a[1])) or real(*a, **k))
    for out in ("chunked.parquet", "chunked.csv", "chunked.jsonl.gz"):
        assert score_jsonl(model_dir, tmp_path / "in.jsonl", tmp_path / out, chunk_rows=3) == 4
        if out.endswith(".parquet"):
            got = pq.read_table(tmp_path / out).to_pylist()
        elif out.endswith(".csv"):
            got = pcsv.read_csv(tmp_path / out).to_pylist()
        else:
            got = [json.loads(line) for line in gzip.decompress((tmp_path / out).read_bytes()).splitlines()]
        assert [r["reward"] for r in got] == pytest.approx([r["reward"] for r in whole], abs=1e-6), out
        assert [r["note"] or None for r in got] == [None, None, None, "even"], out  # CSV: null is an empty cell
        assert [r.get("judge") or None for r in got] == [None, None, None, "gpt"], out
    assert sizes == [3, 1] * 3  # each chunk scored on its own


def test_an_oversized_jsonl_line_is_measured_without_being_held(tmp_path: Path):
    """A JSONL line over ``max_record_bytes`` is refused with its whole size, read in bounded pieces."""
    from rewardline.data.limits import Limits
    from rewardline.errors import TooLarge

    huge = json.dumps({"prompt": "p", "response": "x" * 3_000_000})
    (tmp_path / "in.jsonl").write_text(json.dumps(ROWS[0]) + "\n" + huge + "\n" + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(TooLarge) as err:
        read_score_rows(tmp_path / "in.jsonl", limits=Limits(max_record_bytes=1_000))
    assert err.value.size == len(huge) and str(err.value).startswith(f"{tmp_path / 'in.jsonl'}:2: ")
    assert len(read_score_rows(tmp_path / "in.jsonl", limits=Limits(max_record_bytes=4_000_000,
                                                                  max_response_chars=4_000_000))) == 3


def test_an_input_without_rows_gives_a_table_with_the_inputs_columns_and_the_scores(model_dir: Path, tmp_path: Path):
    """A header-only CSV scored to CSV wrote a 0-byte file (no header, no reward column) that score itself then
    refused as "Empty CSV file"; to Parquet, a table with no columns. Now the output has the input's columns and the
    columns scoring adds, and no rows; the same for rerank."""
    (tmp_path / "header-only.csv").write_text("prompt,response,note\n")
    (tmp_path / "empty.jsonl").write_text("")
    assert score_jsonl(model_dir, tmp_path / "header-only.csv", tmp_path / "out.csv") == 0
    assert (tmp_path / "out.csv").read_text().splitlines() == ['"prompt","response","note","reward"']
    assert score_jsonl(model_dir, tmp_path / "out.csv", tmp_path / "again.jsonl") == 0  # reads back
    score_jsonl(model_dir, tmp_path / "header-only.csv", tmp_path / "out.parquet")
    assert pq.read_schema(tmp_path / "out.parquet").names == ["prompt", "response", "note", "reward"]
    score_jsonl(model_dir, tmp_path / "empty.jsonl", tmp_path / "from-jsonl.parquet")
    assert pq.read_schema(tmp_path / "from-jsonl.parquet").names == ["reward"]
    rerank_jsonl(model_dir, tmp_path / "header-only.csv", tmp_path / "ranked.parquet")
    assert pq.read_schema(tmp_path / "ranked.parquet").names == ["prompt", "response", "note", "reward", "rank",
                                                                 "beats_others"]


def test_the_first_row_that_does_not_fit_the_table_is_named_by_line(tmp_path: Path):
    """Text prompts on some rows and message lists on others said only "out.csv: the rows do not fit one CSV
    table": in a large file, no word of where. The first row whose shape differs from the rows before it is named."""
    rows = tmp_path / "mixed.jsonl"
    lines = [ROWS[0], ROWS[1], {"prompt": MESSAGES, "response": "red"}, ROWS[2]]
    rows.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(BadInput, match=r"mixed\.jsonl:3: the row does not fit the table of the rows before it "
                                       r"\(.+\); expected rows of one shape, or write out\.csv as \.jsonl$"):
        score_jsonl(tmp_path / "no-such-model", rows, tmp_path / "out.csv")
