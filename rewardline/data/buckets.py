"""Out-of-core data stages: rows partitioned by prompt, processed one bucket at a time.

Every content check and statistic of ingest, validate and pairs is either per prompt (duplicates,
id / text conflicts, a prompt's rankings, its comparisons, its utilities, its split) or a sum over
prompts (record counts, Krippendorff's α coincidence matrix, the leave-one-out sums per annotator).
So a table too large for memory is cut by prompt: a row's **shard** is

    shard = hash64(prompt_id) mod S

(:func:`rewardline.data.hashing.hash64`, seed-fixed), the rows of each shard are spilled to a
temporary Parquet file (lz4) in their input order, and consecutive shards are grouped into
**buckets** of at most ``rows_per_bucket`` rows (:func:`shard_groups`). A stage then runs its
in-memory code on one bucket at a time and adds the buckets' partial results; the memory it needs is
that of one bucket, not of the data.

Small inputs never spill (:class:`RowSink` holds them until they pass ``rows_per_bucket``): one
bucket, processed exactly as before. With several buckets a stage writes bucket ``i`` as part ``i`` of
each output table (:mod:`rewardline.data.tables`), its rows in the order the single-bucket code gives
them, so the output is deterministic for a given input, shard count and bucket size; the next stage
takes those prompt-aligned parts as its buckets (:class:`PromptBuckets`) instead of spilling again.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rewardline.data.hashing import hash64
from rewardline.data.tables import part_files, read_table, table_schema

#: Shards a spilled table is cut into; buckets are runs of consecutive shards.
SHARDS = 64
#: Rows (ranked rows / ranking rows) per bucket: ~1M rows with two 200-character texts is ~0.5 GB.
ROWS_PER_BUCKET = 1_000_000
#: Rows per Parquet read batch when a stage streams a table into shards.
READ_BATCH_ROWS = 250_000


def prompt_shards(prompt_ids: pa.Array | pa.ChunkedArray, shards: int) -> np.ndarray:
    """The shard of each row: ``hash64(prompt_id) mod shards`` (null ids hash as the empty string)."""
    return (hash64(prompt_ids) % np.uint64(shards)).astype(np.int64)


def shard_groups(rows_per_shard: np.ndarray, rows_per_bucket: int) -> list[list[int]]:
    """Consecutive shards grouped greedily into buckets of at most ``rows_per_bucket`` rows (a shard larger
    than that is a bucket of its own); empty shards join their neighbours. Never an empty list."""
    groups: list[list[int]] = [[]]
    held = 0
    for shard, rows in enumerate(rows_per_shard.tolist()):
        if groups[-1] and held + rows > rows_per_bucket:
            groups.append([])
            held = 0
        groups[-1].append(shard)
        held += rows
    return groups


class ShardSpill:
    """One table's rows spilled to ``directory/<name>-<shard>.parquet``, one file per shard, rows in the
    order they were written."""

    def __init__(self, directory: Path, name: str, shards: int, schema: pa.Schema) -> None:
        self.directory, self.name, self.shards, self.schema = directory, name, shards, schema
        self.rows = np.zeros(shards, np.int64)
        self._writers: dict[int, pq.ParquetWriter] = {}

    def path(self, shard: int) -> Path:
        return self.directory / f"{self.name}-{shard}.parquet"

    def write(self, table: pa.Table, shard: np.ndarray) -> None:
        """Append each row of ``table`` to its ``shard``'s file (stable: rows keep their order), in slices of
        :data:`READ_BATCH_ROWS` rows (the regrouped copy of a slice is all that is made at once)."""
        for start in range(0, table.num_rows, READ_BATCH_ROWS):
            self._write(table.slice(start, READ_BATCH_ROWS), shard[start:start + READ_BATCH_ROWS])

    def _write(self, table: pa.Table, shard: np.ndarray) -> None:
        order = np.argsort(shard, kind="stable")
        counts = np.bincount(shard, minlength=self.shards)
        grouped = table.take(pa.array(order)).cast(self.schema)
        start = 0
        for s in np.flatnonzero(counts).tolist():
            if s not in self._writers:
                self._writers[s] = pq.ParquetWriter(self.path(s), self.schema, compression="lz4")
            self._writers[s].write_table(grouped.slice(start, int(counts[s])))
            start += int(counts[s])
        self.rows += counts

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def read(self, shards: list[int]) -> pa.Table:
        """The rows of ``shards`` (in shard order, each shard's rows in written order)."""
        parts = [pq.read_table(self.path(s)) for s in shards if self.rows[s]]
        return pa.concat_tables(parts) if parts else self.schema.empty_table()


class RowSink:
    """Collects a stage's row batches: in memory while they fit in one bucket, spilled by prompt shard once
    they pass ``rows_per_bucket`` (or from the start when ``shards`` is given: tests force buckets so).

    ``buckets()`` then yields one table per bucket: the whole input when nothing spilled."""

    def __init__(self, schema: pa.Schema, route: Callable[[pa.Table], pa.Array | pa.ChunkedArray],
                 rows_per_bucket: int = ROWS_PER_BUCKET, shards: int | None = None) -> None:
        self.schema, self.route, self.rows_per_bucket = schema, route, rows_per_bucket
        self.forced = shards
        self._held: list[pa.Table] = []
        self._held_rows = 0
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.spill: ShardSpill | None = None
        if shards is not None:
            self._start_spill(shards)

    @property
    def spilled(self) -> bool:
        return self.spill is not None

    def _start_spill(self, shards: int) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="rewardline-spill-")
        self.spill = ShardSpill(Path(self._tmp.name), "rows", shards, self.schema)
        held, self._held, self._held_rows = self._held, [], 0
        for table in held:
            self.add(table)

    def add(self, table: pa.Table) -> None:
        """Take a batch of rows; once spilling, ``route(table)`` (the prompt ids) sends each row to its shard."""
        if self.spill is None:
            self._held.append(table)
            self._held_rows += table.num_rows
            if self._held_rows > self.rows_per_bucket:
                self._start_spill(SHARDS)
            return
        self.spill.write(table, prompt_shards(self.route(table), self.spill.shards))

    def buckets(self) -> Iterator[pa.Table]:
        """One table per bucket (see the module docstring), then the spill files are removed."""
        if self.spill is None:
            held, self._held = self._held, []
            yield pa.concat_tables(held) if held else self.schema.empty_table()
            return
        self.spill.close()
        groups = [[s] for s in range(self.spill.shards)] if self.forced else shard_groups(
            self.spill.rows, self.rows_per_bucket)
        try:
            for group in groups:
                yield self.spill.read(group)
        finally:
            self.close()

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def stream_table(path: Path, columns: list[str] | None = None, batch_rows: int = READ_BATCH_ROWS
                 ) -> Iterator[pa.Table]:
    """The Parquet table at ``path`` (a file, or a partitioned folder: part after part) in batches of
    ``batch_rows`` rows (only ``columns`` when given)."""
    for file in part_files(path):
        source = pq.ParquetFile(file, pre_buffer=False)  # pre-buffering keeps every row group read so far cached
        for batch in source.iter_batches(batch_size=batch_rows, columns=columns):
            yield pa.Table.from_batches([batch])


class PromptBuckets:
    """Stage input tables (each with a ``prompt_id`` column) cut into the same prompt buckets; iterate (as often
    as needed) for one dict of tables per bucket. Use as a context manager: the spill files go on exit.

    Three ways, the first that applies:

    * every table partitioned into the same number (> 1) of parts, written prompt-aligned by the stage before
      (:mod:`rewardline.data.tables`), and no forced ``shards``: bucket ``i`` is part ``i`` of each table, read as
      it is, with nothing spilled (:attr:`parts`);
    * ``rows`` (the row count that sizes the buckets: the rankings') at most ``rows_per_bucket`` and no forced
      ``shards``: one bucket, the whole tables read at once (memory-mapped), as the in-memory stages did;
    * otherwise the tables are re-partitioned by prompt shard into temporary files (one-file tables of an older
      layout past ``rows_per_bucket`` rows, or tests forcing ``shards``)."""

    def __init__(self, paths: dict[str, Path], columns: dict[str, list[str] | None], rows: int,
                 rows_per_bucket: int = ROWS_PER_BUCKET, shards: int | None = None) -> None:
        self.paths, self.columns = paths, columns
        files = [part_files(path) for path in paths.values()]
        aligned = all(path.is_dir() for path in paths.values()) and len({len(f) for f in files}) == 1
        self.parts: list[dict[str, Path]] | None = None
        if shards is None and aligned and len(files[0]) > 1:
            self.parts = [dict(zip(paths, bucket, strict=True)) for bucket in zip(*files, strict=True)]
        self.single = self.parts is None and shards is None and rows <= rows_per_bucket
        self.count = shards or SHARDS
        self.forced, self.rows_per_bucket = shards is not None, rows_per_bucket
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.spills: dict[str, ShardSpill] = {}

    def __enter__(self) -> PromptBuckets:
        if self.single or self.parts is not None:
            return self
        self._tmp = tempfile.TemporaryDirectory(prefix="rewardline-spill-")
        for name, path in self.paths.items():
            schema = table_schema(path)
            if self.columns.get(name) is not None:
                schema = pa.schema([schema.field(c) for c in self.columns[name]])
            spill = self.spills[name] = ShardSpill(Path(self._tmp.name), name, self.count, schema)
            for table in stream_table(path, self.columns.get(name)):
                spill.write(table, prompt_shards(pc.fill_null(table["prompt_id"], ""), self.count))
            spill.close()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def groups(self) -> list[list[int]]:
        if self.forced:
            return [[s] for s in range(self.count)]
        sizing = self.spills.get("rankings") or next(iter(self.spills.values()))
        return shard_groups(sizing.rows, self.rows_per_bucket)

    def __iter__(self) -> Iterator[dict[str, pa.Table]]:
        if self.parts is not None or self.single:  # read as they are: part i of each table, or each table whole
            for bucket in self.parts or [self.paths]:
                yield {name: read_table(path, self.columns.get(name)) for name, path in bucket.items()}
            return
        for group in self.groups():
            yield {name: spill.read(group) for name, spill in self.spills.items()}
