"""Rows files: what ``rewardline score`` and ``rerank`` read and write, one row per candidate.

Three layouts, told apart by the file's suffix (and, for Parquet, by its magic bytes ``PAR1``):

* JSONL (any other suffix): one JSON object per line; a row is named ``FILE:LINE``;
* Parquet (``.parquet``, ``.pq``): the table's rows, nested columns (a ``prompt`` of messages, ``steps``) included;
* CSV / TSV (``.csv``, ``.tsv``): a header line, then one row per record, every cell read as text; a row is named
  ``FILE: row N`` (N counts records from 1, not lines: a quoted cell may span lines).

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
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from rewardline.errors import BadInput

PARQUET_MAGIC = b"PAR1"
TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv"}
DELIMITERS = {"csv": ",", "tsv": "\t"}


def rows_layout(path: Path | str, head: bytes = b"") -> str:
    """``jsonl``, ``parquet``, ``csv`` or ``tsv`` for ``path`` by its suffix; Parquet also by ``head`` (the file's
    first bytes), whatever its name."""
    layout = TABLE_SUFFIXES.get(Path(path).suffix.lower())
    if layout is None and head.startswith(PARQUET_MAGIC):
        return "parquet"
    return layout or "jsonl"


def read_table_rows(path: Path, layout: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Each row of a Parquet / CSV / TSV file as ``(where, row)``: ``where`` names the file and the row for
    :class:`BadInput` (``{"file": "PATH: row N"}``), ``row`` is the row as a dict (CSV cells as text)."""
    try:
        if layout == "parquet":
            table = pq.read_table(path)
        else:
            table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=DELIMITERS[layout],
                                                                         newlines_in_values=True),
                                  convert_options=pcsv.ConvertOptions(column_types=_text_columns(path, layout)))
    except (pa.ArrowInvalid, OSError) as err:
        raise BadInput(path, detail=f"not a readable {layout.upper()} file ({_first_line(err)}); expected a "
                                    f"{_LAYOUT_NAMES[layout]} of rows with a header") from None
    for number, row in enumerate(table.to_pylist(), start=1):
        yield {"file": f"{path}: row {number}"}, row


_LAYOUT_NAMES = {"parquet": "Parquet table", "csv": "CSV file", "tsv": "TSV file"}


def _text_columns(path: Path, layout: str) -> dict[str, pa.DataType]:
    """Every header column of a CSV / TSV file read as text (``7`` stays the response ``"7"``)."""
    with open(path, "rb") as f:
        header = f.readline().decode("utf-8", "replace").lstrip("\ufeff")
    return {name: pa.string() for name in next(csv.reader([header], delimiter=DELIMITERS[layout]), [])}


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


def _table(rows: list[dict[str, Any]], out_path: Path, layout: str) -> pa.Table:
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        raise BadInput(out_path, detail=f"the rows do not fit one {layout.upper()} table ({_first_line(err)}); "
                                        "expected rows of one shape, or write .jsonl") from None


def check_writable(rows: list[dict[str, Any]], out_path: Path | str) -> None:
    """Raise :class:`BadInput` now, before any scoring, if ``rows`` cannot be written to ``out_path``'s layout."""
    layout = TABLE_SUFFIXES.get(Path(out_path).suffix.lower(), "jsonl")
    if layout != "jsonl" and rows:
        _table(rows, Path(out_path), layout)


def write_rows(rows: Iterable[dict[str, Any]], out_path: Path | str) -> None:
    """Write ``rows`` to ``out_path`` in the layout of its suffix (:func:`rows_layout`), a row's columns in its own
    order; in a CSV / TSV file a list or struct cell is its JSON text. Rows Arrow cannot put in one table raise
    :class:`BadInput` (:func:`check_writable` tells before the work is done)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    layout = TABLE_SUFFIXES.get(out_path.suffix.lower(), "jsonl")
    if layout == "jsonl":
        with open(out_path, "w") as f:
            f.writelines(json.dumps(row, default=_json_value) + "\n" for row in rows)
        return
    table = _table(list(rows), out_path, layout)
    if layout == "parquet":
        pq.write_table(table, out_path)
        return
    for index, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            texts = [None if v is None else json.dumps(v, default=_json_value) for v in table.column(index).to_pylist()]
            table = table.set_column(index, field.name, pa.array(texts, pa.string()))
    pcsv.write_csv(table, out_path, pcsv.WriteOptions(delimiter=DELIMITERS[layout]))
