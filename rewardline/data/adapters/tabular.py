"""Tabular records (Parquet tables, CSV files) against a format's input schema: cells coerced to the
schema's types (a cell that does not convert quarantines its row, naming the field and the expected
type), rows over ``limits.max_record_bytes`` quarantined before the adapter sees them. A text field takes
text alone (an id field also integers), as in JSON: a Parquet column of numbers or booleans there
quarantines its rows with the JSON reason instead of being cast to strings."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from rewardline.data.adapters.jsonl import Records, quarantine_rows, type_fault
from rewardline.data.csv_lines import arrow_record_lines, csv_header, split_csv_records
from rewardline.data.json_cells import json_array
from rewardline.data.limits import Limits

RawOf = Callable[[np.ndarray], list[str]]


_INT = re.compile(r"^\s*[+-]?\d+\s*$")
_FLOAT = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$|^\s*(?i:nan|[+-]?inf(inity)?)\s*$")


def _expected(typ: pa.DataType) -> str:
    if pa.types.is_integer(typ):
        return "an integer"
    if pa.types.is_floating(typ):
        return "a number"
    return f"a value of type {typ}"


def _utf8_column(col: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """A binary column as strings; rows that are not UTF-8 become null and are flagged in the mask."""
    try:
        return col.cast(pa.string()), np.zeros(len(col), bool)
    except pa.ArrowInvalid:  # failure path: find the rows that are not UTF-8
        pass

    def text(value: bytes | None) -> str | None:
        try:
            return None if value is None else value.decode("utf-8")
        except UnicodeDecodeError:
            return None

    values = col.to_pylist()
    texts = [text(v) for v in values]
    bad = np.array([v is not None and t is None for v, t in zip(values, texts, strict=True)], dtype=bool)
    return pa.array(texts, pa.string()), bad


def _coerce_column(col: pa.Array, typ: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast ``col`` to ``typ``; rows that do not fit become null and are flagged in the mask."""
    if col.type == typ:
        return col, np.zeros(len(col), bool)
    try:
        return col.cast(typ), np.zeros(len(col), bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    if pa.types.is_string(col.type) and (pa.types.is_integer(typ) or pa.types.is_floating(typ)):
        pattern = _INT if pa.types.is_integer(typ) else _FLOAT
        fits = pc.fill_null(pc.match_substring_regex(col, pattern.pattern), True)
        cleaned = pc.if_else(fits, pc.utf8_trim_whitespace(col), pa.scalar(None, pa.string()))
        try:
            return cleaned.cast(typ), ~np.asarray(fits, bool)
        except pa.ArrowInvalid:  # e.g. integer overflow: fall through to the row-wise path
            pass
    if pa.types.is_floating(col.type) and pa.types.is_integer(typ):
        whole = pc.fill_null(pc.equal(col, pc.trunc(col)), True)
        return pc.if_else(whole, col, pa.scalar(None, col.type)).cast(typ), ~np.asarray(whole, bool)
    # Failure path only: row by row.
    values, bad = [], np.zeros(len(col), bool)
    for i, v in enumerate(col.to_pylist()):
        try:
            values.append(pa.array([v]).cast(typ)[0].as_py())
        except (pa.ArrowException, ValueError, TypeError):
            values.append(None)
            bad[i] = True
    return pa.array(values, typ), bad


def _cast_nested(col: pa.Array, typ: pa.DataType) -> pa.Array:
    """Cast a struct/list column to ``typ``, filling absent struct fields with nulls."""
    if pa.types.is_struct(typ) and pa.types.is_struct(col.type):
        names = [col.type.field(i).name for i in range(col.type.num_fields)]
        children = [
            _cast_nested(col.field(f.name), f.type) if f.name in names else pa.nulls(len(col), f.type) for f in typ
        ]
        return pa.StructArray.from_arrays(children, fields=list(typ), mask=col.is_null())
    if pa.types.is_list(typ) and (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        values = _cast_nested(col.values, typ.value_type)
        offsets = col.offsets.cast(pa.int32())
        return pa.ListArray.from_arrays(offsets, values, type=typ, mask=col.is_null())
    return col.cast(typ)


def _json_cells(col: pa.Array, typ: pa.DataType, name: str, ids: tuple[str, ...]) -> tuple[pa.Array, np.ndarray,
                                                                                           np.ndarray]:
    """A text column of a list field (a CSV cell holds text) read as its cells' JSON: (column of ``typ``, rows
    whose cell is not a JSON list of the field's shape, their reasons, as JSON records get them)."""
    values, reasons = [], np.full(len(col), None, dtype=object)
    for i, cell in enumerate(col.to_pylist()):
        if isinstance(cell, bytes):
            cell = cell.decode("utf-8", "replace")
        value = json_array(cell)
        if cell is not None and not isinstance(value, list):
            shown = cell if len(cell) <= 60 else cell[:57] + "..."
            reasons[i] = f"{name}: expected a JSON array (a list in a CSV cell is its JSON text), got {shown!r}"
        else:
            fault = type_fault(value, typ, name, ids)
            reasons[i] = None if fault is None else fault[1]
        values.append(None if reasons[i] is not None else _ids_as_text(value, typ))
    return pa.array(values, typ), reasons != None, reasons  # noqa: E711 - elementwise


def _ids_as_text(value: object, typ: pa.DataType) -> object:
    """A checked JSON value with the integers of its string fields (ids: :func:`type_fault` let only those
    through) as their strings, so that Arrow takes it as ``typ``."""
    if isinstance(value, int) and not isinstance(value, bool) and (pa.types.is_string(typ)
                                                                   or pa.types.is_large_string(typ)):
        return str(value)
    if isinstance(value, list) and (pa.types.is_list(typ) or pa.types.is_large_list(typ)):
        return [_ids_as_text(v, typ.value_type) for v in value]
    if isinstance(value, dict) and pa.types.is_struct(typ):
        return {**value, **{f.name: _ids_as_text(value[f.name], f.type) for f in typ if f.name in value}}
    return value


def _text_bytes(table: pa.Table) -> np.ndarray:
    """Bytes of every row's string and binary fields, summed (``binary_length``: no copy of the texts)."""
    size = np.zeros(table.num_rows, np.int64)
    for col in table.columns:
        if pa.types.is_string(col.type) or pa.types.is_binary(col.type) or pa.types.is_large_string(col.type) \
                or pa.types.is_large_binary(col.type):
            size += np.asarray(pc.fill_null(pc.binary_length(col), 0), dtype=np.int64)
    return size


def _reject_oversized(records: Records, limits: Limits) -> Records:
    """Quarantine rows over ``limits.max_record_bytes`` (reason: the size and the bound)."""
    size = _text_bytes(records.table)
    over = limits.oversized_records(size)
    if not over.any():
        return records
    reasons = [limits.record_reason(int(b)) for b in size[over]]
    quarantined = quarantine_rows(records.origin_file, records.line[over], None, reasons, records.raw_text(over))
    return Records(records.origin_file, records.table.filter(pa.array(~over)), records.line[~over],
                   records_in=records.records_in, raw_of=records.raw_of,
                   quarantined=[*records.quarantined, quarantined])


def _is_text(typ: pa.DataType) -> bool:
    """A column type whose values are text (or all null): a string field reads it as it is."""
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    return (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_binary(typ)
            or pa.types.is_large_binary(typ) or pa.types.is_null(typ))


def _feeds_text_wrongly(source: pa.DataType, target: pa.DataType, path: str, ids: tuple[str, ...]) -> bool:
    """True if a string field of ``target`` (at dotted ``path``) would be cast from a column or struct field of
    ``source`` that holds neither text nor, for an id field of ``ids``, integers."""
    if pa.types.is_string(target) or pa.types.is_large_string(target):
        return not (_is_text(source) or (path in ids and pa.types.is_integer(source)))
    if pa.types.is_struct(target) and pa.types.is_struct(source):
        present = {f.name: f.type for f in source}
        return any(_feeds_text_wrongly(present[f.name], f.type, f"{path}.{f.name}", ids)
                   for f in target if f.name in present)
    if (pa.types.is_list(target) or pa.types.is_large_list(target)) and (
            pa.types.is_list(source) or pa.types.is_large_list(source)):
        return _feeds_text_wrongly(source.value_type, target.value_type, path, ids)
    return False


def _text_leaves(typ: pa.DataType) -> pa.DataType:
    """``typ`` with every leaf but its strings typed null, so that :func:`type_fault` checks the text alone."""
    if pa.types.is_struct(typ):
        return pa.struct([f.with_type(_text_leaves(f.type)) for f in typ])
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return pa.list_(_text_leaves(typ.value_type))
    return typ if pa.types.is_string(typ) or pa.types.is_large_string(typ) else pa.null()


def _reject_non_text(records: Records, schema: pa.Schema, ids: tuple[str, ...]) -> Records:
    """Quarantine rows whose value for a text field is not text (an id field's: not text or an integer), with
    the reason JSON records get: ``prompt_id: expected a string or an integer, got float 2.5`` (failure path:
    only columns of another type are read value by value)."""
    checks = []
    for f in schema:
        if f.name not in records.table.column_names:
            continue
        col = records.table.column(f.name)
        if not _feeds_text_wrongly(col.type, f.type, f.name, ids):
            continue
        typ = _text_leaves(f.type)
        found = [type_fault(value, typ, f.name, ids) for value in col.to_pylist()]
        reasons = np.array([fault[1] if fault else None for fault in found], dtype=object)
        for name in dict.fromkeys(fault[0] for fault in found if fault):  # one check per field, in order met
            mask = np.array([fault is not None and fault[0] == name for fault in found], dtype=bool)
            checks.append((mask, name, reasons))
    return records.reject_many(checks) if checks else records


def refuse_repeated_columns(names: list[str], origin: str, schema: pa.Schema) -> None:
    """ValueError (the whole file: which of the columns is meant is unknown) when a column of ``schema`` appears
    more than once in a CSV header or a Parquet schema."""
    repeated = sorted({name for name in names if name in schema.names and names.count(name) > 1})
    if repeated:
        raise ValueError(f"{origin}: column {repeated[0]!r} appears {names.count(repeated[0])} times; "
                         "expected each column once")


def tabular_records(
    table: pa.Table,
    origin: str,
    schema: pa.Schema,
    raw_of: RawOf | None = None,
    line: np.ndarray | None = None,
    records_in: int | None = None,
    limits: Limits | None = None,
    ids: tuple[str, ...] = (),
) -> Records:
    """Records from a CSV/Parquet table: conform columns, flag rows whose values have the wrong type.

    ``line`` is each row's 1-based line (CSV: where the record starts) or row number (default 1..n); ``records_in``
    counts records that
    never became rows too (CSV rows with the wrong number of columns). A row whose text fields
    hold more than ``limits.max_record_bytes`` bytes in all is quarantined first, before any cast. The id
    fields ``ids`` (dotted paths, string-typed in ``schema``) take integer columns too, cast to strings.
    """
    refuse_repeated_columns(table.column_names, origin, schema)
    n = table.num_rows
    line = np.arange(1, n + 1, dtype=np.int64) if line is None else np.asarray(line, dtype=np.int64)
    records = Records(origin, table, line, records_in=n if records_in is None else records_in, raw_of=raw_of)
    records = _reject_non_text(_reject_oversized(records, limits or Limits()), schema, ids)
    table, line = records.table, records.line
    n = table.num_rows
    columns, faults = [], []
    for f in schema:
        if f.name not in table.column_names:
            columns.append(pa.nulls(n, f.type))
            continue
        col = table.column(f.name).combine_chunks()
        if pa.types.is_nested(f.type):
            if _is_text(col.type) and not pa.types.is_null(col.type):  # CSV: the list's JSON text
                col, bad, reasons = _json_cells(col, f.type, f.name, ids)
                if bad.any():
                    faults.append((bad, f.name, reasons))
            try:
                columns.append(_cast_nested(col, f.type))
            except (pa.ArrowException, ValueError) as err:
                raise ValueError(f"{origin}: column '{f.name}' cannot be read as {f.type}: {err}") from err
            continue
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            col, not_utf8 = _utf8_column(col)
            if not_utf8.any():
                faults.append((not_utf8, f.name, f"invalid UTF-8 in {f.name}; expected UTF-8 text"))
        casted, bad = _coerce_column(col, f.type)
        columns.append(casted)
        if bad.any():
            faults.append((bad, f.name, f"{f.name}: expected {_expected(f.type)}"))
    records.table = pa.Table.from_arrays(columns, schema=schema)
    for bad, name, reason in faults:  # bad (and an array of reasons) is over the original rows; line is sorted
        at = np.searchsorted(line, records.line)
        records = records.reject(bad[at], name, reason if isinstance(reason, str) else reason[at])
    return records


def _csv_raw_of(rows: list[list[str]], starts: np.ndarray) -> RawOf:
    """Source text of records (by the line where each starts: ``starts``, header's included), re-joined as CSV."""
    index = {int(line): i for i, line in enumerate(starts)}

    def raw_of(lines: np.ndarray) -> list[str]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="")
        texts = []
        for line in lines:
            out.seek(0)
            out.truncate()
            writer.writerow(rows[index[int(line)]])
            texts.append(out.getvalue().encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        return texts

    return raw_of


def _read_csv_rowwise(data: bytes, origin: str, schema: pa.Schema, limits: Limits | None = None,
                      ids: tuple[str, ...] = ()) -> Records:
    """Failure path for CSV files with rows of the wrong width: split records in Python, quarantine
    those whose number of fields differs from the header's, read the rest as :func:`read_csv_records` does."""
    rows, starts = split_csv_records(data, origin)
    header, body = rows[0], rows[1:]
    width = np.array([len(row) for row in body], dtype=np.int64)
    fits = width == len(header)
    numbers = starts[1:]

    def cell(value: str) -> bytes | None:
        return value.encode("utf-8", "surrogateescape") if value else None  # "" is null, as null_values=[""]

    kept = [body[i] for i in np.flatnonzero(fits)]
    table = pa.table({name: pa.array([cell(row[j]) for row in kept], pa.binary()) for j, name in enumerate(header)})
    raw_of = _csv_raw_of(rows, starts)
    records = tabular_records(table, origin, schema, raw_of, line=numbers[fits], records_in=len(body), limits=limits,
                              ids=ids)
    wrong = numbers[~fits]
    if wrong.size:
        reasons = [f"expected {len(header)} fields (as in the header), got {w}" for w in width[~fits]]
        records.quarantined.append(quarantine_rows(origin, wrong, None, reasons, raw_of(wrong)))
    return records


def read_csv_records(data: bytes, origin: str, schema: pa.Schema, limits: Limits | None = None,
                     ids: tuple[str, ...] = ()) -> Records:
    """Records of a CSV file against ``schema``: cells are text; a list field's cell is the list's JSON text
    (integers in it at the id fields ``ids`` read as their strings). A record's line is where it starts in the file
    (the header is line 1), as an editor shows it: :func:`~rewardline.data.csv_lines.arrow_record_lines`, vectorised."""
    header = csv_header(data)
    refuse_repeated_columns(header, origin, schema)
    try:
        table = pcsv.read_csv(
            io.BytesIO(data),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.binary() for name in header},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:  # a row with another number of fields than the header (pyarrow's
        # invalid_row_handler cannot be used: it fails to show the handler a row that is not UTF-8)
        return _read_csv_rowwise(data, origin, schema, limits, ids)

    def raw_of(lines: np.ndarray) -> list[str]:  # failure path: re-split the text by CSV rows
        return _csv_raw_of(*split_csv_records(data, origin))(lines)

    line = arrow_record_lines(table, data)
    if line is None:  # failure path: the csv module finds where the records start
        line = split_csv_records(data, origin)[1][1:]
    return tabular_records(table, origin, schema, raw_of, line=line, limits=limits, ids=ids)
