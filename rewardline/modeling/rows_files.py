"""Rows files: what ``rewardline score`` and ``rerank`` read and write, one row per candidate.

Three layouts, told apart by the file's suffix (and, for Parquet, by its magic bytes ``PAR1``), a ``.gz`` after
it meaning gzip:

* JSONL (any other suffix): one JSON object per line; a row is named ``FILE:LINE``;
* Parquet (``.parquet``, ``.pq``): the table's rows, nested columns (a ``prompt`` of messages, ``steps``) included;
* CSV / TSV (``.csv``, ``.tsv``): a header line, then one row per record, every cell read as text, except that a
  ``prompt`` or ``steps`` cell holding a JSON array is that array (messages, a PRM's steps: what this module writes
  for them); a row is named ``FILE: row N`` (N counts records from 1, not lines: a quoted cell may span lines).

A file is a local path or any URL :mod:`rewardline.ops.storage` reads (``s3://``, ``gs://``, ``hf://``,
``https://``); the output is written whole or not at all (a temp file renamed into place; an object store's PUT).
Output takes its layout from ``--out``'s suffix the same way, so ``--input rows.parquet --out scored.parquet``
round-trips a table with its extra columns. A CSV cell cannot hold a list (``step_scores``, a prompt of messages):
such a cell is written as its JSON text. A table needs rows of one shape (a ``prompt`` that is text on one row and
messages on another does not fit one column): :func:`check_writable` says so before any row is scored. Tables are
read and written with Arrow (one call per file).
"""

from __future__ import annotations

import csv
import datetime
import decimal
import gzip
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

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


def read_rows_file(source: str | Path) -> tuple[bytes, str]:
    """The content of a rows file (a local path or a URL), gunzipped, and its layout (:func:`rows_layout`).
    A local path that is no file raises :class:`BadInput` saying what it is instead (:func:`not_a_rows_file`)."""
    where = str(source)
    if storage.is_remote(where):
        data = storage.read_bytes(where)
    else:
        path = Path(where.removeprefix("file://"))
        if not path.is_file():
            raise BadInput(source, detail=f"{not_a_rows_file(path)}; expected a rows file: JSONL (one JSON object "
                                          "per line), Parquet, CSV or TSV")
        data = path.read_bytes()
    if data.startswith(GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise BadInput(source, detail=f"not a readable gzip file ({err}); expected complete gzip data") from None
    return data, rows_layout(where, data[:4])


def not_a_rows_file(path: Path) -> str:
    """What ``path`` is instead of a rows file; a stage directory says which command reads it."""
    if not path.exists():
        return "missing"
    if stage_kind(path) == PAIRS_DIRECTORY:
        return "a pairs directory (`rewardline evaluate --data` scores its splits; `rewardline export-pairs` writes " \
               "its texts as JSONL)"
    return "a directory"


def read_table_rows(data: bytes, layout: str, source: str | Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Each row of a Parquet / CSV / TSV file's ``data`` as ``(where, row)``: ``where`` names ``source`` and the row
    for :class:`BadInput` (``{"file": "SOURCE: row N"}``), ``row`` is the row as a dict (CSV cells as text)."""
    try:
        if layout == "parquet":
            table = pq.read_table(pa.BufferReader(data))
        else:
            header = data.split(b"\n", 1)[0].decode("utf-8", "replace").lstrip("\ufeff")
            names = next(csv.reader([header], delimiter=DELIMITERS[layout]), [])
            table = pcsv.read_csv(io.BytesIO(data), parse_options=pcsv.ParseOptions(
                delimiter=DELIMITERS[layout], newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())))
    except (pa.ArrowInvalid, OSError) as err:
        raise BadInput(source, detail=f"not a readable {layout.upper()} file ({_first_line(err)}); expected a "
                                      f"{_LAYOUT_NAMES[layout]} of rows with a header") from None
    rows = table.to_pylist()
    for name in set(LIST_COLUMNS).intersection(table.column_names) if layout != "parquet" else ():
        for row in rows:
            row[name] = _json_array(row[name])
    for number, row in enumerate(rows, start=1):
        yield {"file": f"{source}: row {number}"}, row


def _json_array(cell: Any) -> Any:
    """``cell`` as the list its JSON text holds when it is one (``[{"role": ...}]``), else unchanged."""
    if not isinstance(cell, str) or not cell.lstrip().startswith("["):
        return cell
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        return cell
    return value if isinstance(value, list) else cell


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


def _table(rows: list[dict[str, Any]], out: str | Path, layout: str) -> pa.Table:
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        raise BadInput(out, detail=f"the rows do not fit one {layout.upper()} table ({_first_line(err)}); "
                                   "expected rows of one shape, or write .jsonl") from None


def check_writable(rows: list[dict[str, Any]], out: str | Path) -> None:
    """Raise :class:`BadInput` now, before any scoring, if ``rows`` cannot be written to ``out``'s layout."""
    layout = rows_layout(out)
    if layout != "jsonl" and rows:
        _table(rows, out, layout)


def write_rows(rows: Iterable[dict[str, Any]], out: str | Path) -> None:
    """Write ``rows`` to ``out`` (a local path or a URL), whole or not at all, in the layout of its suffix
    (:func:`rows_layout`; gzip after ``.gz``), a row's columns in its own order; in a CSV / TSV file a list or
    struct cell is its JSON text. Rows Arrow cannot put in one table raise :class:`BadInput`
    (:func:`check_writable` tells before the work is done)."""
    layout = rows_layout(out)
    if layout == "jsonl":
        data = "".join(json.dumps(row, default=_json_value) + "\n" for row in rows).encode()
    else:
        table, sink = _table(list(rows), out, layout), io.BytesIO()
        if layout == "parquet":
            pq.write_table(table, sink)
        else:
            for index, field in enumerate(table.schema):
                if pa.types.is_nested(field.type):
                    texts = [None if v is None else json.dumps(v, default=_json_value)
                             for v in table.column(index).to_pylist()]
                    table = table.set_column(index, field.name, pa.array(texts, pa.string()))
            pcsv.write_csv(table, sink, pcsv.WriteOptions(delimiter=DELIMITERS[layout]))
        data = sink.getvalue()
    storage.write_bytes(str(out), gzip.compress(data, mtime=0) if Path(str(out)).suffix.lower() == ".gz" else data)
