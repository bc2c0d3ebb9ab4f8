"""Source adapters: raw file bytes -> a RANKED_RESPONSES table + a QUARANTINE table.

``read_file`` sniffs the container (gzip, Parquet, CSV, JSON list, JSONL), parses it into
:class:`~rewardline.data.adapters.jsonl.Records` against the format's input schema, and hands
them to the format's adapter, which quarantines format-level faults and builds the
ranked rows with vectorised Arrow/NumPy. Content-level checks (empty texts, K < 2,
invalid or duplicate ranks, conflicting texts) belong to :mod:`rewardline.data.canonical`.

Accounting invariant: distinct ``origin_line`` in ``ranked`` + rows of ``quarantine``
= ``records_in``, no record in both; a record feeds one ranking (an AlpacaEval record may feed two:
its comparison with the reference and its file's K-way ranking of samples), counted once.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from rewardline.data import schema as S
from rewardline.data import steps as ST
from rewardline.data.adapters import (
    alpaca_eval,
    gsm8k,
    hh_rlhf,
    math_shepherd,
    native,
    pairwise,
    prm800k,
    rewardbench,
    solutions,
    trl,
)
from rewardline.data.adapters.jsonl import (
    Records,
    first_record,
    quarantine_rows,
    read_json_list,
    read_jsonl,
    repeat,
)

RawOf = Callable[[np.ndarray], list[str]]
FORMATS = ("rankings", "hh-rlhf", "alpaca-eval", "pairwise", "trl", "rewardbench", *ST.STEP_FORMATS)
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"


@dataclass
class AdapterResult:
    """What an adapter made of one file."""

    ranked: pa.Table  # schema.RANKED_RESPONSES
    quarantine: pa.Table  # schema.QUARANTINE
    records_in: int  # input records read from the file
    solutions: pa.Table = field(default_factory=ST.empty_rows)  # steps.STEP_ROWS (step formats only)


def _base_name(origin: str) -> str:
    """File name without directories and a trailing ``.gz``."""
    name = origin.rstrip("/").rsplit("/", 1)[-1]
    return name[:-3] if name.endswith(".gz") else name


def default_batch_id(origin: str) -> str:
    """``data/raw/hh_rlhf.jsonl.gz`` -> ``hh_rlhf``: the file name without its format extensions."""
    return re.sub(r"\.(jsonl|json|ndjson|csv|parquet|pq)$", "", _base_name(origin))


def _decompress(origin: str, data: bytes) -> bytes:
    if data[:2] == GZIP_MAGIC:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise ValueError(f"{origin}: corrupt gzip data: {err}") from err
    if origin.endswith(".gz"):
        raise ValueError(f"{origin}: name ends in .gz but the data is not gzip")
    return data


def _container(origin: str, data: bytes) -> str:
    """One of parquet, csv, json-list, jsonl."""
    if data[:4] == PARQUET_MAGIC:
        return "parquet"
    if _base_name(origin).endswith(".csv"):
        return "csv"
    return "json-list" if data.lstrip()[:1] == b"[" else "jsonl"


def _columns(origin: str, data: bytes, container: str, required: bool = True) -> tuple[list[str], dict | None]:
    """Field names of the first record (and that record itself for JSON containers).

    A JSON file without any object in its first lines is an error when the format must be
    sniffed from it (``required``), else no columns: every line is then quarantined.
    """
    if container == "parquet":
        return pq.read_schema(io.BytesIO(data)).names, None
    if container == "csv":
        header = data.split(b"\n", 1)[0].decode("utf-8", "replace").lstrip("\ufeff")
        return next(csv.reader([header]), []), None
    record = first_record(data)
    if record is None and not required:
        return [], None
    if record is None:
        raise ValueError(f"{origin}: no JSON object found in the first records; cannot read it as {container}")
    return list(record), record


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def _chosen_rejected_format(cols: set[str], first: dict | None) -> str:
    """rewardbench (a ``subset`` or ``num_correct``), trl (a ``prompt``, message lists, or texts that are
    not hh-style transcripts), else hh-rlhf: chosen/rejected transcripts with ``\\n\\nHuman:`` turns and
    no prompt field (also when the first record says nothing either way)."""
    if "subset" in cols or "num_correct" in cols:
        return "rewardbench"
    if "prompt" in cols:
        return "trl"
    values = [(first or {}).get(name) for name in ("chosen", "rejected")]
    if any(isinstance(v, list) for v in values):
        return "trl"
    texts = [v for v in values if isinstance(v, str)]
    if texts and not any(_HH_TURN.search(v) for v in texts):
        return "trl"
    return "hh-rlhf"


def _format_of(origin: str, columns: list[str], first: dict | None = None) -> str:
    cols = set(columns)
    if "responses" in cols or {"response", "rank"} <= cols:
        return "rankings"
    if {"chosen", "rejected"} <= cols:
        return _chosen_rejected_format(cols, first)
    if {"instruction", "output_1", "output_2", "preference"} <= cols:
        return "alpaca-eval"
    if {"model_a", "model_b", "winner"} <= cols:
        return "pairwise"
    step_format = _step_format(cols)
    if step_format:
        return step_format
    raise ValueError(
        f"{origin}: cannot detect the source format from fields {sorted(cols)}; expected one of: "
        "rankings (responses, or response + rank), hh-rlhf (chosen, rejected), "
        "trl (chosen, rejected, prompt?, margin?), rewardbench (prompt, chosen, rejected, subset), "
        "alpaca-eval (instruction, output_1, output_2, preference), pairwise (model_a, model_b, winner), "
        "prm800k (question, label), math-shepherd (input, label), gsm8k (question, answer), "
        "solutions (question, solutions)"
    )


def _step_format(cols: set[str]) -> str | None:
    """The step-level formats, checked after every ranking format so they never take one's files."""
    if {"question", "label"} <= cols:
        return "prm800k"
    if {"input", "label"} <= cols:
        return "math-shepherd"
    if {"question", "solutions"} <= cols:
        return "solutions"
    if {"question", "answer"} <= cols:
        return "gsm8k"
    return None


def _first_values(data: bytes, container: str, names: tuple[str, ...]) -> dict:
    """The first record's ``names`` fields of a Parquet or CSV file (JSON containers have it already):
    Parquet list columns give their first value, CSV fields are strings."""
    if container == "parquet":
        parquet = pq.ParquetFile(io.BytesIO(data))
        present = [n for n in names if n in parquet.schema_arrow.names]
        if not present or parquet.metadata.num_rows == 0:
            return {}
        return parquet.read_row_group(0, columns=present).slice(0, 1).to_pylist()[0]
    rows = csv.reader(io.StringIO(data.decode("utf-8", "replace").lstrip("\ufeff"), newline=""))
    header, first = next(rows, []), next(rows, [])
    return {k: v for k, v in zip(header, first, strict=False) if k in names}


def _list_fields(data: bytes, container: str, first: dict | None) -> dict[str, bool]:
    """Which of prompt / chosen / rejected hold lists (messages, or RewardBench 2 responses)."""
    names = ("prompt", "chosen", "rejected")
    if container == "parquet":
        types = pq.read_schema(io.BytesIO(data))
        return {n: n in types.names and (pa.types.is_list(types.field(n).type)
                                         or pa.types.is_large_list(types.field(n).type)) for n in names}
    return {n: isinstance((first or {}).get(n), list) for n in names}


def is_empty(origin: str, data: bytes) -> bool:
    """True if the file holds no records at all: only whitespace, or an empty JSON list ``[]`` (gzip allowed)."""
    return re.fullmatch(rb"\s*(\[\s*\])?\s*", _decompress(origin, data)) is not None


def detect_format(origin: str, data: bytes) -> str:
    """Sniff the format of a file from the fields of its first record."""
    data = _decompress(origin, data)
    container = _container(origin, data)
    return _sniffed_format(origin, data, container, *_columns(origin, data, container))


def _sniffed_format(origin: str, data: bytes, container: str, columns: list[str], first: dict | None) -> str:
    if first is None and {"chosen", "rejected"} <= set(columns):
        first = _first_values(data, container, ("chosen", "rejected"))
    return _format_of(origin, columns, first)


# ------------------------------------------------------------------ tabular inputs

_INT = re.compile(r"^\s*[+-]?\d+\s*$")
_FLOAT = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$|^\s*(?i:nan|[+-]?inf(inity)?)\s*$")


def _expected(typ: pa.DataType) -> str:
    if pa.types.is_integer(typ):
        return "an integer"
    if pa.types.is_floating(typ):
        return "a number"
    return f"a value of type {typ}"


def _coerce_column(col: pa.Array, typ: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast ``col`` to ``typ``; rows that do not fit become null and are flagged in the mask."""
    if col.type == typ:
        return col, np.zeros(len(col), bool)
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        try:
            col = col.cast(pa.string())
        except pa.ArrowInvalid:  # failure path: find the rows that are not UTF-8
            texts = [None if v is None else v.decode("utf-8", "replace") for v in col.to_pylist()]
            bad = np.array([v is not None and "\ufffd" in v for v in texts])
            return _coerce_column(pa.array([None if b else t for t, b in zip(texts, bad, strict=True)]), typ)[0], bad
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


def _tabular_records(
    table: pa.Table,
    origin: str,
    schema: pa.Schema,
    raw_of: RawOf | None = None,
    line: np.ndarray | None = None,
    records_in: int | None = None,
) -> Records:
    """Records from a CSV/Parquet table: conform columns, flag rows whose values have the wrong type.

    ``line`` is each row's record number (default 1..n); ``records_in`` counts records that
    never became rows too (CSV rows with the wrong number of columns).
    """
    n = table.num_rows
    line = np.arange(1, n + 1, dtype=np.int64) if line is None else np.asarray(line, dtype=np.int64)
    records = Records(origin, table, line, records_in=n if records_in is None else records_in, raw_of=raw_of)
    columns, faults = [], []
    for f in schema:
        if f.name not in table.column_names:
            columns.append(pa.nulls(n, f.type))
            continue
        col = table.column(f.name).combine_chunks()
        if pa.types.is_nested(f.type):
            try:
                columns.append(_cast_nested(col, f.type))
            except (pa.ArrowException, ValueError) as err:
                raise ValueError(f"{origin}: column '{f.name}' cannot be read as {f.type}: {err}") from err
            continue
        casted, bad = _coerce_column(col, f.type)
        columns.append(casted)
        if bad.any():
            faults.append((bad, f.name, f"{f.name}: expected {_expected(f.type)}"))
    records.table = pa.Table.from_arrays(columns, schema=schema)
    for bad, name, reason in faults:  # bad is over the original rows; line is sorted
        records = records.reject(bad[np.searchsorted(line, records.line)], name, reason)
    return records


def _csv_rows(data: bytes, origin: str) -> list[list[str]]:
    """Header + records of a CSV file split by Python's csv module, blank lines dropped as Arrow does
    (failure path only). Bytes that are not UTF-8 survive as surrogate escapes."""
    limit = csv.field_size_limit(max(csv.field_size_limit(), len(data)))  # default 131072 chars per field
    try:
        return [row for row in csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape"), newline="")) if row]
    except csv.Error as err:
        raise ValueError(f"{origin}: cannot split the CSV into records: {err}") from err
    finally:
        csv.field_size_limit(limit)


def _csv_raw_of(rows: list[list[str]]) -> RawOf:
    """Source text of records (1-based, header excluded), re-joined as CSV."""

    def raw_of(record_numbers: np.ndarray) -> list[str]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="")
        texts = []
        for i in record_numbers:
            out.seek(0)
            out.truncate()
            writer.writerow(rows[i])
            texts.append(out.getvalue().encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        return texts

    return raw_of


def _read_csv_rowwise(data: bytes, origin: str, schema: pa.Schema) -> Records:
    """Failure path for CSV files with rows of the wrong width: split records in Python, quarantine
    those whose number of fields differs from the header's, read the rest as :func:`_read_csv` does."""
    rows = _csv_rows(data, origin)
    header, body = rows[0], rows[1:]
    width = np.array([len(row) for row in body], dtype=np.int64)
    fits = width == len(header)
    numbers = np.arange(1, len(body) + 1, dtype=np.int64)

    def cell(value: str) -> bytes | None:
        return value.encode("utf-8", "surrogateescape") if value else None  # "" is null, as null_values=[""]

    kept = [body[i] for i in np.flatnonzero(fits)]
    table = pa.table({name: pa.array([cell(row[j]) for row in kept], pa.binary()) for j, name in enumerate(header)})
    raw_of = _csv_raw_of(rows)
    records = _tabular_records(table, origin, schema, raw_of, line=numbers[fits], records_in=len(body))
    wrong = numbers[~fits]
    if wrong.size:
        reasons = [f"expected {len(header)} fields (as in the header), got {w}" for w in width[~fits]]
        records.quarantined.append(quarantine_rows(origin, wrong, None, reasons, raw_of(wrong)))
    return records


def _read_csv(data: bytes, origin: str, schema: pa.Schema) -> Records:
    header = _columns(origin, data, "csv")[0]
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
        return _read_csv_rowwise(data, origin, schema)

    def raw_of(record_numbers: np.ndarray) -> list[str]:  # failure path: re-split the text by CSV rows
        return _csv_raw_of(_csv_rows(data, origin))(record_numbers)

    return _tabular_records(table, origin, schema, raw_of)


def _read_records(data: bytes, origin: str, container: str, schema: pa.Schema) -> Records:
    if container == "parquet":
        return _tabular_records(pq.read_table(io.BytesIO(data)), origin, schema)
    if container == "csv":
        return _read_csv(data, origin, schema)
    if container == "json-list":
        return read_json_list(data, origin, schema)
    return read_jsonl(data, origin, schema)


def _flexible(schema: pa.Schema, names: tuple[str, ...], record: dict | None) -> pa.Schema:
    """Id-like fields take the JSON type of the first record's value (int ids are common)."""
    for name in names:
        value = (record or {}).get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            schema = schema.set(schema.get_field_index(name), pa.field(name, pa.int64()))
    return schema


def _strings(table: pa.Table, names: tuple[str, ...]) -> pa.Table:
    for name in names:
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table.column(name).cast(pa.string()))
    return table


_ADAPTERS = {
    "hh-rlhf": hh_rlhf,
    "alpaca-eval": alpaca_eval,
    "pairwise": pairwise,
}
_SHAPED = {"trl": trl.shape, "rewardbench": rewardbench.shape}  # input schema from the first record's types
_STEP_ADAPTERS = {"prm800k": prm800k, "math-shepherd": math_shepherd, "gsm8k": gsm8k, "solutions": solutions}


def _read_solutions(data: bytes, origin_file: str, container: str, fmt: str, batch_id: str | None,
                    options: ST.StepOptions) -> AdapterResult:
    """A step-level source: records -> ``steps.STEP_ROWS`` (no ranked rows)."""
    module = _STEP_ADAPTERS[fmt]
    records = _read_records(data, origin_file, container, module.SCHEMA)
    rows, records = module.to_solutions(records, options)
    rows = ST.conform_rows(rows)
    n = rows.num_rows
    for name, value in (("source_format", fmt), ("origin_file", origin_file),
                        ("batch_id", batch_id or default_batch_id(origin_file))):
        rows = rows.set_column(rows.schema.get_field_index(name), name, repeat(value, n))
    return AdapterResult(S.empty(S.RANKED_RESPONSES), records.quarantine(), records.records_in, rows)


def read_file(data: bytes, origin_file: str, fmt: str = "auto", batch_id: str | None = None,
              step_options: ST.StepOptions | None = None) -> AdapterResult:
    """Parse one source file (raw bytes, gzip allowed) into ranked rows (or, for the step formats,
    solution rows) + quarantine.

    ``fmt`` is one of :data:`FORMATS` or ``"auto"``. ``batch_id`` fills rows without one
    (only the rankings format carries its own); by default the file name without extensions.
    ``step_options`` configure the step adapters (GSM8K negatives and their seed).
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"{origin_file}: unknown format {fmt!r}; expected 'auto' or one of {FORMATS}")
    data = _decompress(origin_file, data)
    container = _container(origin_file, data)
    if not data.strip():
        records_in, ranked, quarantine = 0, S.empty(S.RANKED_RESPONSES), S.empty(S.QUARANTINE)
        return AdapterResult(ranked, quarantine, records_in)
    columns, first = _columns(origin_file, data, container, required=fmt == "auto")
    fmt = _sniffed_format(origin_file, data, container, columns, first) if fmt == "auto" else fmt
    if fmt in _STEP_ADAPTERS:
        return _read_solutions(data, origin_file, container, fmt, batch_id, step_options or ST.StepOptions())
    if fmt in _SHAPED:
        module = _SHAPED[fmt](_list_fields(data, container, first))
    else:
        module = _ADAPTERS.get(fmt) or (native.NESTED if "responses" in columns else native.LONG)
    schema = _flexible(module.SCHEMA, module.FLEXIBLE, first)
    records = _read_records(data, origin_file, container, schema)
    records.table = _strings(records.table, module.FLEXIBLE)
    ranked, records = module.to_ranked(records)

    ranked = S.conform(ranked, S.RANKED_RESPONSES)
    batch = pc.fill_null(ranked.column("batch_id"), batch_id or default_batch_id(origin_file))
    ranked = ranked.set_column(ranked.schema.get_field_index("batch_id"), "batch_id", batch)
    origin = repeat(origin_file, ranked.num_rows)
    ranked = ranked.set_column(ranked.schema.get_field_index("origin_file"), "origin_file", origin)
    return AdapterResult(ranked=ranked, quarantine=records.quarantine(), records_in=records.records_in)


__all__ = ["FORMATS", "AdapterResult", "default_batch_id", "detect_format", "is_empty", "read_file"]
