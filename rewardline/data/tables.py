"""Reading and writing the canonical Parquet tables of a stage directory.

Tables are Arrow end to end: written with ``pyarrow.parquet`` (streamed by row group,
zstd) and read back memory-mapped, so large tables never go through pandas. Training
opens the same files as HF ``datasets`` (``Dataset.from_parquet``: memory-mapped Arrow,
cached by fingerprint). Writing through ``datasets.Dataset(table).to_parquet`` was
measured at +2.7 GB peak RSS on 1M rankings (it fingerprints the table), so the data
stages write with pyarrow directly.

A stage directory's tables are *partitioned*: ``{name}/part-NNN.parquet``, one file per prompt bucket
(:mod:`rewardline.data.buckets`; one part below a million rows). That holds for ingest's and validate's
``prompts``, ``responses`` and ``rankings``, and for a pairs directory's splits, its copies of the prompts and
responses, and its per-response utility targets (:data:`TARGETS`). The parts are **prompt-aligned**: part ``i``
of every table of one directory holds the rows of the same prompts, so a stage reads its input a bucket at a time
by taking part ``i`` of each table (:class:`rewardline.data.buckets.PromptBuckets`), a trainer finds part ``i``'s
targets in part ``i``, and parallel readers split the work by file. :func:`table_path` also finds the single
``{name}.parquet`` file of directories written before partitioning (and the one-file quarantine and solutions
tables); every reader goes through it.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rewardline.data.schema import SOLUTIONS_FILE

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


def table_path(stage_dir: Path, name: str) -> Path:
    """Where ``stage_dir`` keeps table ``name`` (a split, :data:`TARGETS`, ``rankings``, ...): its partitioned
    folder ``{name}/`` or (written before partitioning) the file ``{name}.parquet``; the folder's path when
    neither exists."""
    single = stage_dir / f"{name}.parquet"
    return single if single.is_file() and not (stage_dir / name).is_dir() else stage_dir / name


def stage_tables(stage_dir: Path, names: tuple[str, ...], expected: str | None = None) -> dict[str, Path]:
    """``{name: table_path(stage_dir, name)}`` for ``names``; a clear error (exit 2) naming the first one missing,
    what ``stage_dir`` is instead (:func:`stage_kind`) and, when given, the ``expected`` kind of directory."""
    paths = {name: table_path(stage_dir, name) for name in names}
    for name, path in paths.items():
        if not path.exists():
            found = stage_kind(stage_dir)
            raise FileNotFoundError(
                f"expected table {name} ({name}/part-NNN.parquet or {name}.parquet) in {stage_dir}, but it does not "
                f"exist{f': expected {expected}' if expected else ''}{f'; {stage_dir} is {found}' if found else ''}")
    return paths


PAIRS_DIRECTORY = "a pairs directory"  # stage_kind's answer for a directory with a train split
RANKINGS_OUTPUT = "an ingest or validate output (rankings)"  # ... for one with rankings (preference data)
STEP_DATA = "step-labelled PRM data"  # ... for an ingest of step-labelled solutions
STEP_FORMATS = "gsm8k, prm800k, math-shepherd or solutions"


def has_step_data(stage_dir: Path) -> bool:
    """Whether ``stage_dir`` holds step-labelled solutions: a ``solutions.parquet`` with rows."""
    solutions = stage_dir / SOLUTIONS_FILE
    return solutions.is_file() and pq.read_metadata(solutions).num_rows > 0


def stage_kind(stage_dir: Path) -> str | None:
    """What ``stage_dir`` is, from its tables, for error messages: a pairs directory (a ``train`` split), an ingest
    of step-labelled solutions (a ``solutions.parquet`` with rows: what it trains), an ingest or validate output
    (``rankings``), missing, not a directory, or None when none of these."""
    if not stage_dir.exists():
        return "missing"
    if not stage_dir.is_dir():
        return "a file, not a directory"
    if table_path(stage_dir, "train").exists():
        return PAIRS_DIRECTORY
    if has_step_data(stage_dir):
        return (f"{STEP_DATA} ({SOLUTIONS_FILE}, an ingest of --format {STEP_FORMATS}): it trains a process reward "
                f"model (`rewardline train --data {stage_dir} --set objective=prm`), which the prm_evaluate stage "
                "evaluates; an outcome reward model trains and is evaluated on a pairs directory (`rewardline pairs`)")
    if table_path(stage_dir, "rankings").exists():
        return f"{RANKINGS_OUTPUT}: `rewardline validate` and then `rewardline pairs` on it make a pairs directory"
    return None


def part_files(path: Path) -> list[Path]:
    """The files of the table at ``path``: a partitioned folder's parts in order, or the one file."""
    return parts_of(path) if path.is_dir() else [path]


def table_schema(path: Path) -> pa.Schema:
    """The Arrow schema of the table at ``path`` (its first part's: every part has the table's schema)."""
    return pq.read_schema(part_files(path)[0])


def table_rows(path: Path) -> int:
    """The row count of the table at ``path`` (summed over its parts), from the Parquet footers."""
    return sum(pq.read_metadata(file).num_rows for file in part_files(path))


def read_split(pairs_dir: Path, split: str, columns: list[str] | None = None) -> pa.Table | None:
    """Split ``split`` of a pairs directory, or None when the directory has none."""
    path = table_path(pairs_dir, split)
    return read_table(path, columns) if path.exists() else None


def table_parts(stage_dir: Path, name: str) -> Iterator[pa.Table]:
    """Table ``name`` of a stage directory one part (prompt bucket) at a time: a prompt's rows are in one part."""
    for part in part_files(table_path(stage_dir, name)):
        yield read_table(part)


def write_part(table: pa.Table, stage_dir: Path, name: str, part: int = 0) -> Path:
    """Write part ``part`` of table ``name``; part 0 clears the table first (a rerun leaves no stale part, nor the
    one-file table of an older layout)."""
    if part == 0:
        remove_table(stage_dir, name)
    return write_table(table, stage_dir / name / part_name(part))


def remove_table(stage_dir: Path, name: str) -> None:
    """Delete table ``name`` from ``stage_dir``, partitioned or one-file; nothing if absent."""
    if (stage_dir / name).is_dir():
        shutil.rmtree(stage_dir / name)
    (stage_dir / f"{name}.parquet").unlink(missing_ok=True)


def content_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, or of a partitioned folder's parts' bytes in part order."""
    digest = hashlib.new(algorithm)
    for file in parts_of(path) if path.is_dir() else [path]:
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def copy_table(src_dir: Path, dst_dir: Path, name: str) -> None:
    """Copy table ``name`` of ``src_dir`` unchanged into ``dst_dir``, in its layout (stage directories are
    self-contained); a stale copy of either layout is removed first."""
    src = table_path(src_dir, name)
    remove_table(dst_dir, name)
    dst_dir.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst_dir / name)
    else:
        shutil.copyfile(src, dst_dir / src.name)


def read_json(path: Path | None) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when ``path`` is None or names no file (an optional report)."""
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def json_safe(obj: Any) -> Any:
    """NaN / inf → None, NumPy scalars → Python, through dicts, lists and tuples (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(obj: Any, path: Path) -> Path:
    """Write ``obj`` as pretty, key-sorted JSON (stable diffs for ``dvc metrics diff``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return path
