"""Tables past the 2 GiB of 32-bit Arrow string offsets: batched generation, batched Parquet reads, chunked casts.

The limits are made small (module constants) so that the batched paths run on small data; each test
compares the batched result with the one-piece result, row for row.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from rewardline.data import adapters, schema, synthetic
from rewardline.data.adapters import read_file
from rewardline.data.canonical import canonicalize


def test_synthetic_batches_concatenate_to_the_one_piece_table(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = synthetic.synthetic_rankings_table(101, seed=4)
    monkeypatch.setattr(synthetic, "_BATCH_RANKINGS", 7)
    batched = synthetic.synthetic_rankings_table(101, seed=4)
    assert batched.column("responses").num_chunks == 15  # ceil(101 / 7)
    assert batched.combine_chunks().equals(whole.combine_chunks())
    assert synthetic.synthetic_rankings_table(0).num_rows == 0


def test_cast_column_splits_large_strings_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """large_string → string in pieces of at most STRING_CHUNK_BYTES of text (nulls and empty chunks kept)."""
    monkeypatch.setattr(schema, "STRING_CHUNK_BYTES", 10)
    texts = ["abcd", None, "efghijk", "", "lmnopqrstu", "v", "wxyz"]
    column = pa.chunked_array([pa.array(texts, pa.large_string()), pa.array([], pa.large_string())])
    cast = schema.cast_column(column, pa.string())
    assert cast.type == pa.string() and cast.to_pylist() == texts
    assert cast.num_chunks > 2
    assert all(pc.sum(pc.binary_length(c)).as_py() in (None, *range(11)) for c in cast.chunks if len(c))
    assert schema.cast_column(pa.chunked_array([], pa.large_string()), pa.string()).to_pylist() == []


def _nested_parquet(n: int) -> bytes:
    """``n`` synthetic nested rankings with faults at known records: an empty text (record 3) and a
    missing annotator (record 10), so quarantine record numbers must stay file-wide across batches."""
    table = synthetic.synthetic_rankings_table(n, seed=1)
    rows = table.to_pylist()
    rows[2]["responses"][1]["text"] = ""
    rows[9]["annotator_id"] = None
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), buf, row_group_size=8)
    return buf.getvalue()


def test_parquet_read_in_batches_equals_the_whole_file_read(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _nested_parquet(40)
    whole = read_file(data, "src/r.parquet", fmt="rankings")
    monkeypatch.setattr(adapters, "PARQUET_BATCH_RECORDS", 6)
    batched = read_file(data, "src/r.parquet", fmt="rankings")
    assert batched.records_in == whole.records_in == 40
    assert batched.ranked.combine_chunks().equals(whole.ranked.combine_chunks())
    assert batched.quarantine.equals(whole.quarantine)
    assert batched.quarantine["origin_line"].to_pylist() == [10]  # missing annotator: an adapter fault
    tables = canonicalize(batched.ranked)
    assert tables.quarantine["origin_line"].to_pylist() == [3]  # empty text: a content fault
    assert tables.records_ok + tables.records_quarantined + batched.quarantine.num_rows == 40
    assert tables.responses.schema.field("response").type == pa.string()  # outputs keep 32-bit strings


def test_ranked_texts_are_large_strings() -> None:
    ranked = read_file(_nested_parquet(12), "src/r.parquet", fmt="rankings").ranked
    assert ranked.schema.field("response").type == pa.large_string()
    assert ranked.schema.field("prompt").type == pa.large_string()
    assert np.all(pc.utf8_length(ranked["response"]).to_numpy() >= 0)


def test_record_codes_equal_the_joined_text_codes() -> None:
    """The numeric (file, line) codes number records exactly as key_codes on ``file + SEP + line`` does."""
    from rewardline.data.keys import key_codes, record_codes

    rng = np.random.default_rng(0)
    files = pa.chunked_array([pa.array(rng.choice(["b.jsonl", "a.csv", "c"], 500).tolist()),
                              pa.array(["a.csv", None, "d"])])
    lines = pa.chunked_array([pa.array(rng.integers(1, 40, 500)), pa.array([3, 7, None], pa.int64())])
    assert np.array_equal(record_codes(files, lines), key_codes(files, pc.cast(lines, pa.string())))
    assert record_codes(pa.array([], pa.string()), pa.array([], pa.int64())).size == 0
