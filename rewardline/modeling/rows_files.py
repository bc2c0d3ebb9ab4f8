"""Rows files: what ``rewardline score`` and ``rerank`` read and write, one row per candidate.

Three layouts, told apart by the file's suffix (and, for Parquet, by its magic bytes ``PAR1``), a ``.gz`` after
it meaning gzip:

* JSONL (any other suffix): one JSON object per line; a row is named ``FILE:LINE``;
* Parquet (``.parquet``, ``.pq``): the table's rows, nested columns (a ``prompt`` of messages, ``steps``) included;
* CSV / TSV (``.csv``, ``.tsv``): a header line, then one row per record, every cell read as text, except that a
  ``prompt`` or ``steps`` cell holding a JSON array is that array (messages, a PRM's steps: what this module writes
  for them); a bad row is named ``FILE:LINE`` by the line where its record starts (a quoted cell may span lines),
  as ingest names it (:func:`rewardline.data.csv_lines.record_start_lines`, found when a row is refused);
  a Parquet row ``FILE: row N``.

A file is a local path or any URL :mod:`rewardline.ops.storage` reads (``s3://``, ``gs://``, ``hf://``,
``https://``; downloaded once to a temp file). Files are streamed: :class:`RowsFile` yields rows in chunks of
:data:`CHUNK_ROWS` (JSONL line by line, a JSONL line read no further than ``max_record_bytes``; Parquet by record
batch; CSV by Arrow's streaming reader) and :func:`rows_writer` appends chunks, so memory holds one chunk, not the
file. The output is written whole or not at all (:func:`rewardline.ops.storage.staged_output`: a temp file renamed
into place, or uploaded once complete). It takes its layout from ``--out``'s suffix the same way, so ``--input
rows.parquet --out scored.parquet`` round-trips a table with its extra columns (a Parquet input's column types
kept). A CSV cell cannot hold a list (``step_scores``, a prompt of messages): such a cell is written as its JSON
text. A table's columns are every key of any row, in order of first appearance (a key only some rows have is null
on the others); rows must be of one shape (a ``prompt`` that is text on one row and messages on another does not
fit one column): :meth:`RowsFile.check` says so before any row is scored.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import gzip
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from rewardline.data.csv_lines import csv_header, record_start_lines, split_csv_records
from rewardline.data.json_cells import json_array
from rewardline.data.limits import Limits
from rewardline.data.tables import PAIRS_DIRECTORY, stage_kind
from rewardline.errors import BadInput
from rewardline.ops import storage

PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv"}
DELIMITERS = {"csv": ",", "tsv": "\t"}
_LAYOUT_NAMES = {"parquet": "Parquet table", "csv": "CSV file", "tsv": "TSV file"}
#: The CSV / TSV columns whose cells may hold a JSON array (a prompt of messages, a PRM's steps).
LIST_COLUMNS = ("prompt", "steps")
#: Rows read, checked and scored at a time: memory holds one chunk of rows (and their tokens), not the file.
CHUNK_ROWS = 8192
#: Where a row is, for :class:`BadInput`: ``{"file": ..., "line": N}`` (JSONL; CSV / TSV once a row is refused, by
#: :meth:`RowsFile.check`) or ``{"file": "SOURCE: row N"}``.
Where = dict[str, Any]


def _suffix(name: str | Path) -> str:
    """The suffix that names the layout: ``rows.csv.gz`` → ``.csv``."""
    path = Path(str(name).split("?", 1)[0])
    return (path.with_suffix("") if path.suffix.lower() == ".gz" else path).suffix.lower()


def rows_layout(name: str | Path, head: bytes = b"") -> str:
    """``jsonl``, ``parquet``, ``csv`` or ``tsv`` for a file by its suffix; Parquet also by ``head`` (its first
    bytes, decompressed), whatever its name."""
    layout = TABLE_SUFFIXES.get(_suffix(name))
    if layout is None and head.startswith(PARQUET_MAGIC):
        return "parquet"
    return layout or "jsonl"


def check_rows_out(out: str | Path, source: str | Path | None = None) -> None:
    """Refuse, with :class:`BadInput` (exit 2) before any row is read, an ``out`` that names no file: a folder (an
    existing local directory, a name ending in ``/``: the file would be written as the folder's own name, or fail
    once every row is scored) or an object store's bucket alone (``s3://bucket``); or that is the input ``source``
    (published over it, the output would replace the rows it was made from). An S3 ``out`` whose endpoint does not
    answer, or whose bucket is missing, fails here too (:func:`~rewardline.ops.storage.check_bucket`), not at
    the upload after every row is scored."""
    text = str(out)
    protocol, sep, rest = text.partition("://")
    if source is not None and _same_file(text, str(source)):
        what = "is the input; writing it would replace the rows being scored"
    elif sep and protocol in storage.BUCKET_PROTOCOLS and "/" not in rest.strip("/"):
        what = f"names the bucket {rest.strip('/') or '(none)'}, not an object ({protocol}://bucket/key)"
    elif text.endswith("/"):
        what = "ends in '/', a folder"
    elif not storage.is_remote(text) and Path(text.removeprefix("file://")).is_dir():
        what = "is a directory"
    else:
        storage.check_bucket(text)
        return
    raise BadInput(detail=f"output {text}: {what}; expected a rows file name, its suffix picking the layout "
                          "(.jsonl, .parquet, .csv or .tsv; .gz after any for gzip)")


def _same_file(a: str, b: str) -> bool:
    """Whether two rows-file names are one file: the same local file (links resolved), or the same URL."""
    if storage.is_remote(a) or storage.is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a.removeprefix("file://")) == os.path.realpath(b.removeprefix("file://"))


def not_a_rows_file(path: Path) -> str:
    """What ``path`` is instead of a rows file; a stage directory says which command reads it."""
    if not path.exists():
        return "missing"
    if stage_kind(path) == PAIRS_DIRECTORY:
        return "a pairs directory (`rewardline evaluate --data` scores its splits; `rewardline export-pairs` writes " \
               "its texts as JSONL)"
    return "a directory"


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _json_value(value: Any) -> Any:
    """A JSON form of a value a Parquet cell can hold that ``json`` cannot write (dates, decimals, bytes)."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")




@dataclass(frozen=True)
class RowsFile:
    """An opened rows file (:func:`open_rows_file`): ``source`` as the user named it (in messages), ``path`` the
    local file read (a remote file's downloaded copy), its ``layout`` (:func:`rows_layout`) and whether it is
    ``gzipped``. Each pass (:meth:`rows`, :meth:`chunks`, :meth:`check`) reads it again from the start."""

    source: str
    path: Path
    layout: str
    gzipped: bool

    @contextlib.contextmanager
    def _stream(self) -> Iterator[IO[bytes]]:
        with self.path.open("rb") as raw, (gzip.GzipFile(fileobj=raw) if self.gzipped else contextlib.nullcontext(raw)
                                           ) as stream:
            try:
                yield stream
            except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
                if not self.gzipped:
                    raise
                raise BadInput(self.source, detail=f"not a readable gzip file ({err}); expected complete gzip "
                                                   "data") from None

    def rows(self, limits: Limits | None = None) -> Iterator[tuple[Where, Any]]:
        """``(where, row)`` of every row in file order; a JSONL line over ``limits.max_record_bytes`` raises
        :class:`~rewardline.errors.TooLarge` before it is parsed, a line that is not JSON :class:`BadInput`."""
        with self._stream() as stream:
            if self.layout == "jsonl":
                yield from _jsonl_rows(stream, self.source, limits or Limits())
                return
            rows = (row for batch in self._batches(stream) for row in self._decoded(batch.to_pylist()))
            for number, row in enumerate(rows, start=1):
                yield {"file": f"{self.source}: row {number}"}, row

    def chunks(self, limits: Limits | None = None, size: int = CHUNK_ROWS) -> Iterator[list[tuple[Where, Any]]]:
        """:meth:`rows` in lists of at most ``size``."""
        rows = self.rows(limits)
        while chunk := list(itertools.islice(rows, size)):
            yield chunk

    def check(self, check: Callable[[Any, Where], None], out: str | Path, limits: Limits | None = None,
              size: int = CHUNK_ROWS) -> tuple[int, pa.Schema | None]:
        """Read every row and ``check(row, where)`` it (the first bad row raises), before any work on the rows; an
        ``out`` that names no file, or the input itself, is refused first (:func:`check_rows_out`).
        Returns the number of rows and, when ``out`` is a table layout, the schema of the rows' columns: a Parquet
        input's own, else inferred and unified chunk by chunk (:func:`rows_schema`; rows that cannot form one table
        raise :class:`BadInput`)."""
        check_rows_out(out, self.source)
        table_out = rows_layout(out) != "jsonl"
        count, schema = 0, None
        for chunk in self.chunks(limits, size):
            try:
                for where, row in chunk:
                    check(row, where)
                if table_out and self.layout != "parquet":
                    schema = _chunk_schema(chunk, out, schema)
            except BadInput:
                if self.layout not in DELIMITERS:
                    raise
                lines = self.record_lines()[count:count + len(chunk)]  # failure path: checked again by line, as
                by_line = [({"file": self.source, "line": int(line)}, row)  # ingest names a record
                           for line, (_, row) in zip(lines, chunk, strict=True)]
                for where, row in by_line:
                    check(row, where)
                _chunk_schema(by_line, out, schema)
                raise
            count += len(chunk)
        if table_out and (self.layout == "parquet" or count == 0):
            return count, self.columns()
        return count, schema

    def columns(self) -> pa.Schema:
        """The input's own columns, read without its rows: a Parquet file's schema, a CSV / TSV header's names (as
        text, every cell's type), none for JSONL (its keys live in its rows)."""
        if self.layout == "parquet":
            return pq.read_schema(self.path)
        if self.layout == "jsonl":
            return pa.schema([])
        with self._stream() as stream:
            return pa.schema([pa.field(name, pa.string()) for name in self._header(stream)])

    def _header(self, stream: IO[bytes]) -> list[str]:
        """The CSV / TSV header's column names (the first line; a byte-order mark dropped: :func:`csv_header`)."""
        return csv_header(stream.readline(), DELIMITERS[self.layout])

    def _batches(self, stream: IO[bytes]) -> Iterator[pa.RecordBatch]:
        """The table's record batches (Parquet or CSV / TSV, every CSV cell as text); a file Arrow cannot read
        raises :class:`BadInput`."""
        try:
            if self.layout == "parquet":
                yield from pq.ParquetFile(self.path).iter_batches(batch_size=CHUNK_ROWS)
                return
            names = self._header(stream)
            with self._stream() as again:  # from the start, header included: a header-only file is zero rows
                yield from pcsv.open_csv(again, parse_options=pcsv.ParseOptions(
                    delimiter=DELIMITERS[self.layout], newlines_in_values=True),
                    convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as err:
            what = f"not a readable {self.layout.upper()} file ({_first_line(err)})"
            bad = self._short_or_long_record() if self.layout in DELIMITERS else None
            if bad is not None:
                line, cells, names = bad
                raise BadInput(self.source, line=line, detail=f"{what}; expected {len(names)} cells "
                                                               f"({', '.join(names)}), got {cells}") from None
            raise BadInput(self.source, detail=f"{what}; expected a {_LAYOUT_NAMES[self.layout]} of rows with a "
                                               "header") from None

    def record_lines(self) -> np.ndarray:
        """The line where each CSV / TSV record starts, the header being line 1: failure path only (reads the whole
        file; :func:`rewardline.data.csv_lines.record_start_lines`)."""
        with self._stream() as stream:
            return record_start_lines(stream.read(), self.source, DELIMITERS[self.layout])

    def _short_or_long_record(self) -> tuple[int, int, list[str]] | None:
        """``(line, cells, header names)`` of the first CSV / TSV record whose cell count differs from the header's,
        by the line where it starts (as ingest names it; blank lines skipped, as Arrow skips them); None when every
        record fits (Arrow failed for another reason). Split again by Python's csv (:func:`split_csv_records`, one
        pass giving the records and their lines): failure path only."""
        with self._stream() as stream:
            data = stream.read()
        try:
            records, starts = split_csv_records(data, self.source, DELIMITERS[self.layout])
        except ValueError:  # the csv module cannot split it either: Arrow's message alone
            return None
        names = [n.lstrip("\ufeff") if i == 0 else n for i, n in enumerate(records[0] if records else [])]
        wrong = next((i for i, record in enumerate(records[1:], start=1) if len(record) != len(names)), None)
        return None if wrong is None else (int(starts[wrong]), len(records[wrong]), names)

    def _decoded(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """CSV / TSV rows with their :data:`LIST_COLUMNS` cells that hold a JSON array read as that list."""
        if self.layout in DELIMITERS:
            for row in rows:
                for name in LIST_COLUMNS:
                    if name in row:
                        row[name] = json_array(row[name])
        return rows


def _not_a_remote_rows_file(uri: str) -> str | None:
    """What a remote ``uri`` that is no object is instead: a prefix holding files, or missing; None when the store
    cannot say (a missing bucket: its own error says so)."""
    try:
        under = storage.list_files(uri.rstrip("/") + "/")
    except storage.StorageError:
        return None
    if under:
        return f"a prefix holding {len(under)} file(s) ({under[0]}{', ...' if len(under) > 1 else ''}), not an object"
    return "missing"


@contextlib.contextmanager
def open_rows_file(source: str | Path) -> Iterator[RowsFile]:
    """Open a rows file (a local path or a URL; a remote one is downloaded once, to a temp file removed on exit).
    A local path that is no file raises :class:`BadInput` saying what it is instead (:func:`not_a_rows_file`)."""
    where = str(source)
    with tempfile.TemporaryDirectory(prefix="rewardline-rows-") as folder:
        if storage.is_remote(where):
            path = Path(folder) / "input"
            try:
                storage.download_file(where, path)
            except storage.StorageNotFound as err:
                if (what := _not_a_remote_rows_file(where)) is None:
                    raise
                raise BadInput(source, detail=f"{what}; expected a rows file: JSONL (one JSON object per line), "
                                              "Parquet, CSV or TSV") from err
        else:
            path = Path(where.removeprefix("file://"))
            if not path.is_file():
                raise BadInput(source, detail=f"{not_a_rows_file(path)}; expected a rows file: JSONL (one JSON "
                                              "object per line), Parquet, CSV or TSV")
        with path.open("rb") as raw:
            gzipped = raw.read(2) == GZIP_MAGIC
        rows_file = RowsFile(where, path, "jsonl", gzipped)
        with rows_file._stream() as stream:
            layout = rows_layout(where, stream.read(4))
        if layout == "parquet" and gzipped:  # Parquet is read by seeking: decompress it first
            with rows_file._stream() as stream, (Path(folder) / "input.parquet").open("wb") as plain:
                shutil.copyfileobj(stream, plain)
            path, gzipped = Path(folder) / "input.parquet", False
        yield RowsFile(where, path, layout, gzipped)


def _jsonl_rows(stream: IO[bytes], source: str, limits: Limits) -> Iterator[tuple[Where, Any]]:
    """``(where, value)`` of each non-blank line of a JSONL ``stream``, read no further than
    ``limits.max_record_bytes`` per line (a longer line raises :class:`~rewardline.errors.TooLarge` with its
    size); the first line that is not JSON raises :class:`BadInput` (a pretty-printed JSON array is named as one)."""
    first = True
    for number in itertools.count(1):
        raw = stream.readline(limits.max_record_bytes + 2)
        if not raw:
            return
        size = len(raw.rstrip(b"\r\n"))
        while size > limits.max_record_bytes and not raw.endswith(b"\n") and (rest := stream.readline(1 << 20)):
            size, raw = size + len(rest.rstrip(b"\r\n")), rest  # measure the rest of an oversized line, keep none
        where: Where = {"file": source, "line": number}
        limits.check_row("", "", **where, raw_bytes=size)
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            what = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else \
                f"not valid JSON ({err.msg} at column {err.colno})"
            array = first and raw.lstrip().startswith(b"[")
            raise BadInput(**where, detail=what + (
                ": a JSON array, not JSONL; expected one JSON object per line (`jq -c '.[]' FILE`), or a Parquet, "
                "CSV or TSV file named by its suffix" if array else "")) from None
        first = False
        yield where, value


def rows_schema(rows: list[dict[str, Any]], out: str | Path, schema: pa.Schema | None = None) -> pa.Schema | None:
    """The Arrow schema of ``rows`` for ``out``'s table layout (None for JSONL): a column per key of any row, in
    order of first appearance, its type inferred from the values, unified with ``schema`` (a previous chunk's; a
    column null so far takes the type it meets). Rows that do not fit one table raise :class:`BadInput`."""
    layout = rows_layout(out)
    if layout == "jsonl":
        return None
    names = dict.fromkeys(key for row in rows for key in row)
    try:
        chunk = pa.table({name: pa.array([row.get(name) for row in rows]) for name in names}).schema
        return chunk if schema is None else pa.unify_schemas([schema, chunk], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        raise _unfit(out, layout, err) from None


def _chunk_schema(chunk: list[tuple[Where, Any]], out: str | Path, schema: pa.Schema | None) -> pa.Schema | None:
    """:func:`rows_schema` of a checked chunk; rows that do not fit one table are named by the first row that does
    not fit the rows before it (found one row at a time, on the failure path only)."""
    try:
        return rows_schema([row for _, row in chunk], out, schema)
    except BadInput:
        for where, row in chunk:
            try:
                schema = rows_schema([row], out, schema)
            except BadInput:
                names = ", ".join(sorted(row)) if isinstance(row, dict) else type(row).__name__
                raise BadInput(**where, detail=f"the row does not fit the table of the rows before it (columns "
                                               f"{names}: a value of another type than above); expected rows of one "
                                               f"shape, or write {Path(str(out)).name} as .jsonl") from None
        raise


def _unfit(out: str | Path, layout: str, err: Exception) -> BadInput:
    return BadInput(out, detail=f"the rows do not fit one {layout.upper()} table ({_first_line(err)}); expected rows "
                                "of one shape, or write .jsonl")


def with_columns(schema: pa.Schema | None, columns: dict[str, pa.DataType]) -> pa.Schema | None:
    """``schema`` with each of ``columns`` set to its type (replaced in place, or appended); None stays None."""
    if schema is None:
        return None
    for name, kind in columns.items():
        index = schema.get_field_index(name)
        schema = schema.set(index, pa.field(name, kind)) if index >= 0 else schema.append(pa.field(name, kind))
    return schema


@contextlib.contextmanager
def rows_writer(out: str | Path, schema: pa.Schema | None = None) -> Iterator[Callable[[list[dict[str, Any]]], None]]:
    """A function that appends a chunk of rows to ``out`` (a local path or a URL) in the layout of its suffix
    (gzip after ``.gz``); the file appears whole when the block ends without an error, and not at all otherwise
    (:func:`rewardline.ops.storage.staged_output`). A table layout writes ``schema``'s columns (:func:`rows_schema`
    of the rows to come; None: of the first chunk); a CSV / TSV cell of a list or struct column is its JSON text."""
    layout = rows_layout(out)
    with storage.staged_output(str(out)) as staged, staged.open("wb") as raw, \
            (gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if _suffix_is_gz(out) else contextlib.nullcontext(raw)
             ) as sink:
        if layout == "jsonl":
            yield lambda rows: sink.write("".join(json.dumps(row, default=_json_value) + "\n" for row in rows).encode())
            return
        table_sink = _TableSink(sink, layout, schema, out)
        yield table_sink.write
        table_sink.close()


def _suffix_is_gz(out: str | Path) -> bool:
    return Path(str(out).split("?", 1)[0]).suffix.lower() == ".gz"


class _TableSink:
    """Parquet / CSV / TSV record batches appended to ``sink`` under one schema (fixed by the first chunk when not
    given); an empty output is a table with the schema's columns and no rows."""

    def __init__(self, sink: IO[bytes], layout: str, schema: pa.Schema | None, out: str | Path) -> None:
        self.sink, self.layout, self.schema, self.out = sink, layout, schema, out
        self.writer: pq.ParquetWriter | pcsv.CSVWriter | None = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.schema is None:
            self.schema = rows_schema(rows, self.out)
        try:
            table = pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise _unfit(self.out, self.layout, err) from None
        if self.layout != "parquet":
            table = _nested_as_json(table)
        if self.writer is None:
            options = pcsv.WriteOptions(delimiter=DELIMITERS.get(self.layout, ","))
            self.writer = pq.ParquetWriter(self.sink, table.schema) if self.layout == "parquet" else \
                pcsv.CSVWriter(self.sink, table.schema, write_options=options)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is None:
            self.write([])
        self.writer.close()


def _nested_as_json(table: pa.Table) -> pa.Table:
    """``table`` with each list or struct column replaced by its cells' JSON text (a CSV cell holds text)."""
    for index, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            texts = [None if v is None else json.dumps(v, default=_json_value) for v in table.column(index).to_pylist()]
            table = table.set_column(index, field.name, pa.array(texts, pa.string()))
    return table


def write_rows(rows: Iterable[dict[str, Any]], out: str | Path) -> None:
    """Write ``rows`` to ``out`` whole or not at all (:func:`rows_writer`, one chunk; the table's columns are
    :func:`rows_schema`'s). Rows Arrow cannot put in one table raise :class:`BadInput` (:meth:`RowsFile.check`
    tells before the work is done)."""
    rows = list(rows)
    with rows_writer(out, rows_schema(rows, out)) as write:
        write(rows)
