"""Reading and writing the canonical Parquet tables of a stage directory.

Tables are Arrow end to end: written with ``pyarrow.parquet`` (streamed by row group,
zstd) and read back memory-mapped, so large tables never go through pandas. Training
opens the same files as HF ``datasets`` (``Dataset.from_parquet``: memory-mapped Arrow,
cached by fingerprint). Writing through ``datasets.Dataset(table).to_parquet`` was
measured at +2.7 GB peak RSS on 1M rankings (it fingerprints the table), so the data
stages write with pyarrow directly.

A pairs directory's splits are *partitioned*: ``{split}/part-NNN.parquet``, one file per prompt bucket
(:mod:`rewardline.data.buckets`; one part below a million rows), so a reader can take them a bucket at a
time (:func:`split_parts`) and parallel readers split the work by file. :func:`split_path` also finds
the single ``{split}.parquet`` file of pairs directories written before partitioning. The per-response
utility targets (``pairs.targets``) are partitioned the same way, ``targets/part-NNN.parquet`` (part ``i`` holds
bucket ``i``'s responses, so it pairs with part ``i`` of every split), and the same functions read and write them
under the name :data:`TARGETS`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

COMPRESSION = "zstd"
#: The partitioned table of a pairs directory that holds the per-response utility targets.
TARGETS = "targets"
ROW_GROUP_ROWS = 256_000


def write_table(table: pa.Table, path: Path) -> Path:
    """Write ``table`` as Parquet at ``path`` (parent directories are created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
    return path


class TableAppender:
    """Parquet files written a table at a time (the out-of-core stages' outputs, bucket after bucket): each
    path is opened at its first :meth:`append`, with :func:`write_table`'s settings, and every file is closed
    on exit. One append per path writes what :func:`write_table` writes."""

    def __init__(self) -> None:
        self._writers: dict[Path, pq.ParquetWriter] = {}

    def append(self, table: pa.Table, path: Path, schema: pa.Schema | None = None) -> None:
        if path not in self._writers:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writers[path] = pq.ParquetWriter(path, schema or table.schema, compression=COMPRESSION)
        self._writers[path].write_table(table, row_group_size=ROW_GROUP_ROWS)

    def __enter__(self) -> TableAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet table memory-mapped (a file, or a partitioned folder: its parts in order); a clear error
    if it is missing."""
    if not path.exists():
        raise FileNotFoundError(f"expected table {path.name} in {path.parent}, but it does not exist")
    if path.is_dir():
        return pa.concat_tables(pq.read_table(part, columns=columns, memory_map=True) for part in parts_of(path))
    return pq.read_table(path, columns=columns, memory_map=True)


def part_name(index: int) -> str:
    """The file name of part ``index`` of a partitioned table."""
    return f"part-{index:03d}.parquet"


def parts_of(folder: Path) -> list[Path]:
    """A partitioned table's part files in part order; a clear error if there are none."""
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"{folder} holds no part-NNN.parquet file: not a partitioned table")
    return parts


def split_path(pairs_dir: Path, split: str) -> Path:
    """Where ``pairs_dir`` keeps ``split`` (or :data:`TARGETS`): its partitioned folder ``{split}/`` or (written
    before partitioning) the file ``{split}.parquet``; the folder's path when neither exists."""
    single = pairs_dir / f"{split}.parquet"
    return single if single.is_file() and not (pairs_dir / split).is_dir() else pairs_dir / split


def read_split(pairs_dir: Path, split: str, columns: list[str] | None = None) -> pa.Table | None:
    """Split ``split`` of a pairs directory, or None when the directory has none."""
    path = split_path(pairs_dir, split)
    return read_table(path, columns) if path.exists() else None


def split_parts(pairs_dir: Path, split: str) -> Iterator[pa.Table]:
    """Split ``split`` of a pairs directory one part (prompt bucket) at a time: a prompt's pairs are in one part."""
    path = split_path(pairs_dir, split)
    for part in parts_of(path) if path.is_dir() else [path]:
        yield pq.read_table(part, memory_map=True)


def write_split(table: pa.Table, pairs_dir: Path, split: str, part: int = 0) -> Path:
    """Write part ``part`` of split ``split`` (or :data:`TARGETS`); part 0 clears the table first (a rerun leaves
    no stale part, nor the one-file table of an older layout)."""
    if part == 0:
        remove_split(pairs_dir, split)
    return write_table(table, pairs_dir / split / part_name(part))


def remove_split(pairs_dir: Path, split: str) -> None:
    """Delete ``split`` (or :data:`TARGETS`) from ``pairs_dir``, partitioned or one-file; nothing if absent."""
    if (pairs_dir / split).is_dir():
        shutil.rmtree(pairs_dir / split)
    (pairs_dir / f"{split}.parquet").unlink(missing_ok=True)


def content_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, or of a partitioned folder's parts' bytes in part order."""
    digest = hashlib.new(algorithm)
    for file in parts_of(path) if path.is_dir() else [path]:
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def copy_table(src: Path, dst: Path) -> None:
    """Copy a table file unchanged (stage directories are self-contained)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def read_json(path: Path | None) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when ``path`` is None or names no file (an optional report)."""
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def write_json(obj: Any, path: Path) -> Path:
    """Write ``obj`` as pretty, key-sorted JSON (stable diffs for ``dvc metrics diff``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return path
