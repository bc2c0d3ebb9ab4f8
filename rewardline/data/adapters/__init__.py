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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
    loads_lenient,
    read_json_list,
    read_jsonl,
    repeat,
)
from rewardline.data.adapters.tabular import read_csv_records, tabular_records
from rewardline.data.csv_lines import csv_header
from rewardline.data.json_cells import json_array
from rewardline.data.limits import Limits

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


@dataclass(frozen=True)
class LocalParquet:
    """A local Parquet file read by path, its row groups on demand, instead of as bytes: a large source is
    never held whole in memory (the out-of-core ingest). Accepted wherever the adapters take a file's data."""

    path: str


def local_parquet(uri: str) -> LocalParquet | None:
    """``uri`` as :class:`LocalParquet` when it names a local, uncompressed Parquet file (magic ``PAR1``)."""
    path = uri.removeprefix("file://")
    if "://" in path or path.endswith(".gz"):
        return None
    try:
        with open(path, "rb") as head:
            return LocalParquet(path) if head.read(4) == PARQUET_MAGIC else None
    except OSError:
        return None


#: A source file's content: its bytes, or a local Parquet file read by path.
FileData = bytes | LocalParquet


def _parquet_input(data: FileData) -> str | io.BytesIO:
    return data.path if isinstance(data, LocalParquet) else io.BytesIO(data)


#: A JSON list behind a UTF-8 byte-order mark (as Windows tools save JSON), which the JSON decoders refuse.
_BOM_LIST = re.compile(rb"\xef\xbb\xbf\s*\[")


def _decompress(origin: str, data: FileData) -> FileData:
    """The file's bytes, gunzipped; a JSON list's leading byte-order mark dropped (JSONL and CSV readers skip it)."""
    if isinstance(data, LocalParquet):
        return data
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise ValueError(f"{origin}: corrupt gzip data: {err}") from err
    elif origin.endswith(".gz"):
        raise ValueError(f"{origin}: name ends in .gz but the data is not gzip")
    return data[3:] if _BOM_LIST.match(data) else data


def _container(origin: str, data: FileData) -> str:
    """One of parquet, csv, json-list, jsonl. A ``.parquet`` name without Parquet's magic number is a damaged
    file (a ValueError, as a ``.gz`` name that is not gzip), not JSON Lines whose "lines" are binary."""
    if isinstance(data, LocalParquet) or data[:4] == PARQUET_MAGIC:
        return "parquet"
    if _base_name(origin).endswith(".parquet"):
        raise ValueError(f"{origin}: name ends in .parquet but the data is not Parquet (no PAR1 magic number); "
                         "expected a Parquet file")
    if _base_name(origin).endswith(".csv"):
        return "csv"
    return "json-list" if data.lstrip()[:1] == b"[" else "jsonl"


def _columns(origin: str, data: FileData, container: str, required: bool = True) -> tuple[list[str], dict | None]:
    """Field names of the first record (and that record itself for JSON containers).

    A JSON file without any object in its first lines is an error when the format must be
    sniffed from it (``required``), else no columns: every line is then quarantined.
    """
    if container == "parquet":
        return pq.read_schema(_parquet_input(data)).names, None
    if container == "csv":
        return csv_header(data), None
    record = first_record(data)
    if record is None and not required:
        return [], None
    if record is None and container == "json-list":  # say where the document breaks, as a given format does
        try:
            loads_lenient(data)
        except ValueError as err:
            raise ValueError(f"{origin}: not a valid JSON document: {err}") from err
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


def _first_values(data: FileData, container: str, names: tuple[str, ...]) -> dict:
    """The first record's ``names`` fields of a Parquet or CSV file (JSON containers have it already):
    Parquet list columns give their first value, CSV fields are strings."""
    if container == "parquet":
        parquet = pq.ParquetFile(_parquet_input(data))
        present = [n for n in names if n in parquet.schema_arrow.names]
        if not present or parquet.metadata.num_rows == 0:
            return {}
        return parquet.read_row_group(0, columns=present).slice(0, 1).to_pylist()[0]
    rows = csv.reader(io.StringIO(data.decode("utf-8", "replace").lstrip("\ufeff"), newline=""))
    header, first = next(rows, []), next(rows, [])
    return {k: v for k, v in zip(header, first, strict=False) if k in names}


def _list_fields(data: FileData, container: str, first: dict | None) -> dict[str, bool]:
    """Which of prompt / chosen / rejected hold lists (messages, or RewardBench 2 responses; in a CSV file, the
    first record's cells of a list's JSON text)."""
    names = ("prompt", "chosen", "rejected")
    if container == "parquet":
        types = pq.read_schema(_parquet_input(data))
        return {n: n in types.names and (pa.types.is_list(types.field(n).type)
                                         or pa.types.is_large_list(types.field(n).type)) for n in names}
    if container == "csv":  # a CSV cell holds text: a list is its JSON text
        first = {k: json_array(v) for k, v in _first_values(data, container, names).items()}
    return {n: isinstance((first or {}).get(n), list) for n in names}


def is_empty(origin: str, data: FileData) -> bool:
    """True if the file holds no records at all: only whitespace, an empty JSON list ``[]``, a CSV file with only its
    header line, or a Parquet file of zero rows (gzip allowed)."""
    data = _decompress(origin, data)
    container = _container(origin, data)
    if container == "parquet":
        try:
            return pq.ParquetFile(_parquet_input(data)).metadata.num_rows == 0
        except (pa.ArrowException, OSError):
            return False  # not readable: the reader says why
    blank = rb"\s*[^\r\n]*\s*" if container == "csv" else rb"\s*(\[\s*\])?\s*"  # CSV: a header line at most
    return re.fullmatch(blank, data) is not None


def detect_format(origin: str, data: FileData) -> str:
    """Sniff the format of a file from the fields of its first record."""
    data = _decompress(origin, data)
    container = _container(origin, data)
    return _sniffed_format(origin, data, container, *_columns(origin, data, container))


def _sniffed_format(origin: str, data: FileData, container: str, columns: list[str], first: dict | None) -> str:
    if first is None and {"chosen", "rejected"} <= set(columns):
        first = _first_values(data, container, ("chosen", "rejected"))
    return _format_of(origin, columns, first)


# ------------------------------------------------------------------ tabular inputs



def _read_records(data: FileData, origin: str, container: str, schema: pa.Schema, limits: Limits,
                  ids: tuple[str, ...] = ()) -> Records:
    """The file's records against ``schema``. The id fields ``ids`` (string-typed in ``schema``) take a string or
    an integer in any record and are read as the string (Parquet integer columns and CSV cells are cast to it;
    another Parquet column type in a text field quarantines its rows, as in JSON)."""
    if container == "parquet":
        return tabular_records(pq.read_table(_parquet_input(data)), origin, schema, limits=limits, ids=ids)
    if container == "csv":
        return read_csv_records(data, origin, schema, limits, ids)
    if container == "json-list":
        return read_json_list(data, origin, schema, limits, ids=ids)
    return read_jsonl(data, origin, schema, limits=limits, ids=ids)


_ADAPTERS = {
    "hh-rlhf": hh_rlhf,
    "alpaca-eval": alpaca_eval,
    "pairwise": pairwise,
}
_SHAPED = {"trl": trl.shape, "rewardbench": rewardbench.shape}  # input schema from the first record's types
_STEP_ADAPTERS = {"prm800k": prm800k, "math-shepherd": math_shepherd, "gsm8k": gsm8k, "solutions": solutions}


def _read_solutions(data: bytes, origin_file: str, container: str, fmt: str, batch_id: str | None,
                    options: ST.StepOptions, limits: Limits) -> AdapterResult:
    """A step-level source: records -> ``steps.STEP_ROWS`` (no ranked rows)."""
    module = _STEP_ADAPTERS[fmt]
    records = _read_records(data, origin_file, container, module.SCHEMA, limits)
    rows, records = module.to_solutions(records, options)
    rows = ST.conform_rows(rows)
    n = rows.num_rows
    for name, value in (("source_format", fmt), ("origin_file", origin_file),
                        ("batch_id", batch_id or default_batch_id(origin_file))):
        rows = rows.set_column(rows.schema.get_field_index(name), name, repeat(value, n))
    return AdapterResult(S.empty(S.RANKED_RESPONSES), records.quarantine(), records.records_in, rows)


def read_file(data: FileData, origin_file: str, fmt: str = "auto", batch_id: str | None = None,
              step_options: ST.StepOptions | None = None, limits: Limits | None = None) -> AdapterResult:
    """Parse one source file (raw bytes, gzip allowed) into ranked rows (or, for the step formats,
    solution rows) + quarantine.

    ``fmt`` is one of :data:`FORMATS` or ``"auto"``. ``batch_id`` fills rows without one
    (only the rankings format carries its own); by default the file name without extensions.
    ``step_options`` configure the step adapters (GSM8K negatives and their seed).
    A record over ``limits.max_record_bytes`` (default :class:`Limits`) is quarantined before it is
    parsed; the text limits are content checks (:func:`rewardline.data.canonical.canonicalize`).
    The whole file at once: :func:`read_file_batches` concatenated.
    """
    parts = list(read_file_batches(data, origin_file, fmt, batch_id, step_options, limits))
    if len(parts) == 1:
        return parts[0]
    return AdapterResult(ranked=pa.concat_tables([p.ranked for p in parts]),
                         quarantine=pa.concat_tables([p.quarantine for p in parts]),
                         records_in=sum(p.records_in for p in parts))


def read_file_batches(data: FileData, origin_file: str, fmt: str = "auto", batch_id: str | None = None,
                      step_options: ST.StepOptions | None = None, limits: Limits | None = None
                      ) -> Iterator[AdapterResult]:
    """:func:`read_file` one record batch at a time (a Parquet source of a record-wise format: batches of
    :data:`PARQUET_BATCH_RECORDS` records; any other file: one result), so that a caller streaming the rows
    (the out-of-core ingest) never holds a whole file's ranked rows."""
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"{origin_file}: unknown format {fmt!r}; expected 'auto' or one of {FORMATS}")
    data = _decompress(origin_file, data)
    container = _container(origin_file, data)
    if not isinstance(data, LocalParquet) and not data.strip():
        yield AdapterResult(S.empty(S.RANKED_RESPONSES), S.empty(S.QUARANTINE), 0)
        return
    columns, first = _columns(origin_file, data, container, required=fmt == "auto")
    fmt = _sniffed_format(origin_file, data, container, columns, first) if fmt == "auto" else fmt
    if fmt in _STEP_ADAPTERS:
        yield _read_solutions(data, origin_file, container, fmt, batch_id, step_options or ST.StepOptions(),
                              limits or Limits())
        return
    if fmt in _SHAPED:
        module = _SHAPED[fmt](_list_fields(data, container, first))
    else:
        module = _ADAPTERS.get(fmt) or (native.NESTED if "responses" in columns else native.LONG)
    record_wise = module in (native.NESTED, native.LONG)
    for records in _record_batches(data, origin_file, container, module.SCHEMA, limits or Limits(), record_wise,
                                   module.FLEXIBLE):
        ranked, records = module.to_ranked(records)
        ranked = S.conform(ranked, S.RANKED_RESPONSES)
        batch = pc.fill_null(ranked.column("batch_id"), batch_id or default_batch_id(origin_file))
        ranked = ranked.set_column(ranked.schema.get_field_index("batch_id"), "batch_id", batch)
        origin = repeat(origin_file, ranked.num_rows)
        ranked = ranked.set_column(ranked.schema.get_field_index("origin_file"), "origin_file", origin)
        yield AdapterResult(ranked=ranked, quarantine=records.quarantine(), records_in=records.records_in)
        del ranked, records, batch, origin  # not held while the next batch is read and decoded


#: Records per batch when a Parquet source of a record-wise format (native rankings: each record is
#: checked and exploded on its own) is read batch by batch: a batch's strings stay far below the 2 GiB
#: that 32-bit Arrow offsets address, and only one batch's nested input is decoded at a time.
PARQUET_BATCH_RECORDS = 250_000


def _record_batches(data: FileData, origin: str, container: str, schema: pa.Schema, limits: Limits,
                    record_wise: bool, ids: tuple[str, ...]) -> Iterator[Records]:
    """The file's records: one :class:`Records` of all of them, or, for a Parquet file of a record-wise
    format, one per batch of :data:`PARQUET_BATCH_RECORDS` records (record numbers stay file-wide)."""
    if container != "parquet" or not record_wise:
        yield _read_records(data, origin, container, schema, limits, ids)
        return
    # pre_buffer off: pre-buffering caches the compressed column chunks of every row group read so far until the
    # iteration ends (measured: +0.3 GB per 1M-record row group of the 3M benchmark source, so memory grew with it)
    source = pq.ParquetFile(_parquet_input(data), pre_buffer=False)
    first = 0
    for batch in source.iter_batches(batch_size=PARQUET_BATCH_RECORDS):
        lines = np.arange(first + 1, first + batch.num_rows + 1, dtype=np.int64)
        yield tabular_records(pa.Table.from_batches([batch]), origin, schema, line=lines, limits=limits, ids=ids)
        first += batch.num_rows
    if first == 0:  # no rows: one empty batch, as the whole-file read gives
        yield tabular_records(source.schema_arrow.empty_table(), origin, schema, limits=limits, ids=ids)


__all__ = ["FORMATS", "AdapterResult", "default_batch_id", "detect_format", "is_empty", "read_file",
           "read_file_batches"]
