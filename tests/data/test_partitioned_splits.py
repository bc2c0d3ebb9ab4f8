"""A pairs directory's partitioned splits (``rewardline.data.tables``): parts in order, the older one-file layout."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardline.data.tables import (
    content_digest,
    parts_of,
    read_split,
    table_parts,
    table_path,
    write_part,
    write_table,
)


def _part(first: int, n: int) -> pa.Table:
    return pa.table({"prompt_id": [f"p{i:02d}" for i in range(first, first + n)], "label": [1.0] * n},
                    schema=pa.schema([("prompt_id", pa.string()), ("label", pa.float32())]))


def test_parts_read_back_whole_in_part_order_and_one_at_a_time(tmp_path: Path) -> None:
    parts = [_part(0, 3), _part(3, 0), _part(3, 2)]  # an empty bucket keeps its (empty) part
    for index, table in enumerate(parts):
        write_part(table, tmp_path, "train", part=index)
    assert [p.name for p in parts_of(tmp_path / "train")] == ["part-000.parquet", "part-001.parquet",
                                                               "part-002.parquet"]
    whole = read_split(tmp_path, "train")
    assert whole.equals(pa.concat_tables(parts)) and whole.num_rows == 5
    assert [t.num_rows for t in table_parts(tmp_path, "train")] == [3, 0, 2]
    assert read_split(tmp_path, "train", columns=["label"]).column_names == ["label"]
    assert pq.read_table(tmp_path / "train").num_rows == 5  # what a plain pyarrow reader sees
    assert read_split(tmp_path, "val") is None  # a split the directory does not have


def test_part_zero_clears_a_previous_write(tmp_path: Path) -> None:
    for index in range(3):
        write_part(_part(index, 1), tmp_path, "val", part=index)
    write_part(_part(7, 2), tmp_path, "val")
    assert len(parts_of(tmp_path / "val")) == 1 and read_split(tmp_path, "val")["prompt_id"].to_pylist() == [
        "p07", "p08"]


def test_a_one_file_split_of_an_older_pairs_directory_is_read_too(tmp_path: Path) -> None:
    write_table(_part(0, 4), tmp_path / "test.parquet")
    assert table_path(tmp_path, "test") == tmp_path / "test.parquet"
    assert read_split(tmp_path, "test").num_rows == 4 and [t.num_rows for t in table_parts(tmp_path, "test")] == [4]
    assert content_digest(tmp_path / "test.parquet") == hashlib.sha256((tmp_path / "test.parquet").read_bytes()
                                                                        ).hexdigest()
    write_part(_part(0, 1), tmp_path, "test")  # both present: the partitioned folder wins
    assert table_path(tmp_path, "test") == tmp_path / "test" and read_split(tmp_path, "test").num_rows == 1


def test_a_folder_digest_covers_every_part_in_order(tmp_path: Path) -> None:
    write_part(_part(0, 2), tmp_path, "train", part=0)
    write_part(_part(2, 2), tmp_path, "train", part=1)
    files = parts_of(tmp_path / "train")
    assert content_digest(tmp_path / "train", "md5") == hashlib.md5(b"".join(f.read_bytes() for f in files)
                                                                     ).hexdigest()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no part-NNN.parquet"):
        read_split(tmp_path, "empty")
