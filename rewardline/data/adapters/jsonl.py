"""Input records: a source file parsed into one Arrow table plus its quarantine.

Every container (JSONL, JSON list, CSV, Parquet) becomes a :class:`Records`: an Arrow
table with the adapter's *input schema* (one row per input record), the 1-based
line (JSONL, CSV: where the record starts), item or row number of every row, and the records
already quarantined. Adapters then only add their own format-level checks with :meth:`Records.reject`.

JSONL is read robustly and still vectorised: the whole file is parsed by
``pyarrow.json.read_json`` against an explicit schema (so every block infers the same
types). If a span of lines fails to parse, or yields a different number of rows than
it has lines, it is split in half and each half parsed again, recursively; a file
with b bad lines out of n costs O(b log n) Arrow parses. Only a single failing line
is looked at in Python (orjson), to say *why* it failed.

Arrow only ever sees lines shaped like one JSON object (first non-space byte ``{``,
last ``}``; one regex over a zero-copy view of all lines). Other lines are quarantined
before any Arrow call: a span starting with a bare ``null`` kills the process inside
``read_json`` (SIGSEGV, pyarrow 25), and a ``null`` line inside a span silently becomes
an all-null record. Lines with bytes that are not UTF-8 are cut out the same way.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from rewardline.data import schema as S
from rewardline.data.adapters.ids import id_fault, ids_as_strings, integer_ids, switched, with_int_ids
from rewardline.data.limits import MAX_RECORD_BYTES, Limits

SNIFF_MAX_BYTES = 16 * MAX_RECORD_BYTES  # longer lines are skipped when looking for the first record

RAW_CHARS = 2000  # QUARANTINE.raw is truncated to this many characters


@dataclass
class Records:
    """Parsed input records of one file.

    ``table`` rows are records that parsed; ``line[i]`` is row i's 1-based line in the file (JSONL; CSV: the line
    where the record starts, the header line 1), item (JSON list) or row (Parquet): its ``origin_line``;
    ``raw_of`` (text formats) maps those numbers to their source text, else rows are
    rendered back to JSON on demand.
    """

    origin_file: str
    table: pa.Table
    line: np.ndarray
    records_in: int
    raw_of: Callable[[np.ndarray], list[str]] | None = None
    quarantined: list[pa.Table] = field(default_factory=list)

    def raw_text(self, mask: np.ndarray) -> list[str]:
        """Source text of the rows selected by ``mask`` (the failure path only)."""
        if self.raw_of is not None:
            return self.raw_of(self.line[mask])
        rows = self.table.filter(pa.array(mask)).to_pylist()
        return [orjson.dumps(r, default=str).decode() for r in rows]

    def reject(self, mask: np.ndarray | pa.Array, field: str | None, reason: str | np.ndarray) -> Records:
        """Quarantine the rows where ``mask`` is true (with ``field`` and ``reason``: one for all, or an array of
        one per table row) and drop them."""
        return self.reject_many([(mask, field, reason)])

    def reject_many(self, checks: list[tuple[np.ndarray | pa.Array, str | None, str | np.ndarray]]) -> Records:
        """Apply several (mask, field, reason) checks computed on the same table; a record
        failing several is quarantined once, under the first check it fails."""
        first = np.full(self.table.num_rows, -1)
        for k, (mask, _, _) in enumerate(checks):
            m = np.asarray(pc.fill_null(mask, False) if isinstance(mask, pa.Array | pa.ChunkedArray) else mask)
            first[(first < 0) & m.astype(bool)] = k
        if (first < 0).all():
            return self
        bad = [
            quarantine_rows(self.origin_file, self.line[first == k], field,
                            reason if isinstance(reason, str) else list(reason[first == k]), self.raw_text(first == k))
            for k, (_, field, reason) in enumerate(checks)
            if (first == k).any()
        ]
        keep = first < 0
        return Records(
            origin_file=self.origin_file,
            table=self.table.filter(pa.array(keep)),
            line=self.line[keep],
            records_in=self.records_in,
            raw_of=self.raw_of,
            quarantined=[*self.quarantined, *bad],
        )

    def quarantine(self) -> pa.Table:
        """All quarantined records, sorted by record number."""
        table = pa.concat_tables(self.quarantined) if self.quarantined else S.empty(S.QUARANTINE)
        return table.sort_by("origin_line")


def _utf8_safe(texts: list[str | None]) -> list[str | None]:
    """``texts`` as valid UTF-8: a lone surrogate (what a lenient decoder makes of bytes such as
    ``\\xed\\xa0\\x80``) becomes a ``\\udXXX`` escape instead of failing Arrow's string encoding."""
    def safe(text: str | None) -> str | None:
        if text is None:
            return None
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return [safe(t) for t in texts]


def quarantine_rows(
    origin_file: str, lines: np.ndarray, field: str | None, reason: str | list[str], raw: list[str]
) -> pa.Table:
    """QUARANTINE rows for records ``lines`` of ``origin_file``."""
    n = len(lines)
    reasons = reason if isinstance(reason, list) else [reason] * n
    return pa.table(
        {
            "origin_file": pa.array([origin_file] * n, pa.string()),
            "origin_line": pa.array(np.asarray(lines, dtype=np.int64)),
            "field": pa.array(_utf8_safe([field] * n), pa.string()),
            "reason": pa.array(_utf8_safe(reasons), pa.string()),
            "raw": pc.utf8_slice_codeunits(pa.array(_utf8_safe(raw), pa.string()), 0, RAW_CHARS),
        },
        schema=S.QUARANTINE,
    )


def repeat(value: str | None, n: int) -> pa.Array:
    """A string array holding ``value`` n times."""
    if value is None:
        return pa.nulls(n, pa.string())
    return pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), pa.array([value])).cast(pa.string())


# --------------------------------------------------------------------------- JSONL


def _line_spans(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Byte [start, end) of every physical line (end excludes the newline)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == ord("\n"))
    starts = np.concatenate([[0], newlines + 1]).astype(np.int64)
    ends = np.concatenate([newlines, [len(data)]]).astype(np.int64)
    return starts, ends


def _line_view(data: bytes, starts: np.ndarray) -> pa.Array:
    """Every line (with its newline) as a zero-copy large_binary Arrow array over ``data``."""
    offsets = np.concatenate([starts, [len(data)]]).astype(np.int64)
    return pa.Array.from_buffers(pa.large_binary(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _nonblank(data: bytes, starts: np.ndarray) -> np.ndarray:
    """Mask of lines holding a non-whitespace byte (a zero-copy Arrow view of the lines + one regex)."""
    return np.asarray(pc.match_substring_regex(_line_view(data, starts), r"[^ \t\r\n\f\v]"), dtype=bool)


# An optional UTF-8 byte-order mark, blanks, "{", anything, "}", blanks. RE2 matches binary
# arrays byte-wise (Latin-1), so the escapes below are the BOM's three bytes.
_OBJECT_SHAPED = r"^(?:\xef\xbb\xbf)?[ \t\r\n\f\v]*\{(?s:.*)\}[ \t\r\n\f\v]*$"


def _object_shaped(data: bytes, starts: np.ndarray) -> np.ndarray:
    """Mask of lines that may hold one JSON object: the only lines ever handed to Arrow."""
    return np.asarray(pc.match_substring_regex(_line_view(data, starts), _OBJECT_SHAPED), dtype=bool)


def _invalid_utf8(data: bytes, starts: np.ndarray, ends: np.ndarray) -> dict[int, str]:
    """{line index: reason} for lines holding bytes that are not UTF-8 (one decode per bad line).

    Fast path: Arrow validates the zero-copy view of all lines at once (no Python copy of the text);
    only a file that fails it is decoded from the first bad byte on."""
    try:
        _line_view(data, starts).cast(pa.large_string())
        return {}
    except pa.ArrowInvalid:
        pass
    bad: dict[int, str] = {}
    view, pos = memoryview(data), 0
    while pos < len(data):
        try:
            str(view[pos:], "utf-8")
            break
        except UnicodeDecodeError as err:
            at = pos + err.start
            i = int(np.searchsorted(starts, at, side="right") - 1)
            bad[i] = f"invalid UTF-8: byte 0x{data[at]:02x} at column {at - starts[i] + 1} ({err.reason})"
            pos = int(ends[i]) + 1
    return bad


def _kind(value: object) -> str:
    return (
        "null"
        if value is None
        else {dict: "object", list: "array", bool: "boolean"}.get(type(value), type(value).__name__)
    )


def type_fault(value: object, typ: pa.DataType, path: str, ids: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """First (field, reason) where a decoded JSON ``value`` does not fit Arrow type ``typ``; the fields ``ids``
    (dotted paths) take a string or an integer (:mod:`rewardline.data.adapters.ids`)."""
    if value is None:
        return None
    field_name = re.sub(r"\[\d+\]", "", path)
    if field_name in ids:
        reason = id_fault(value, path)
        return None if reason is None else (field_name, reason)

    def fault(expected: str) -> tuple[str, str]:
        # the stdlib, not orjson: values from the lenient decoder may hold NaN or ints beyond 64 bits
        shown = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)[:60]  # str: Parquet dates
        return field_name, f"{path}: expected {expected}, got {_kind(value)} {shown}"

    if pa.types.is_struct(typ):
        if not isinstance(value, dict):
            return fault("an object")
        for child in typ:
            sub = f"{path}.{child.name}" if path else child.name
            found = type_fault(value.get(child.name), child.type, sub, ids)
            if found:
                return found
    elif pa.types.is_list(typ) or pa.types.is_large_list(typ):
        if not isinstance(value, list):
            return fault("an array")
        for i, item in enumerate(value):
            found = type_fault(item, typ.value_type, f"{path}[{i}]", ids)
            if found:
                return found
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
        if not isinstance(value, str):
            return fault("a string")
    elif pa.types.is_integer(typ):
        if not isinstance(value, int) or isinstance(value, bool):
            return fault("an integer")
    elif pa.types.is_floating(typ):
        if not isinstance(value, int | float) or isinstance(value, bool):
            return fault("a number")
        if not math.isfinite(value):  # only the lenient decoder yields NaN / inf
            return fault("a finite number")
    elif pa.types.is_boolean(typ) and not isinstance(value, bool):
        return fault("a boolean")
    return None


def loads_error(text: str) -> str:
    """orjson's complaint about ``text`` (which it rejects)."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as err:
        return str(err)
    return "not strict JSON"


def _line_fault(text: str, schema: pa.Schema, arrow_error: str, ids: tuple[str, ...]) -> tuple[str | None, str]:
    """(field, reason) for one line that Arrow could not parse against ``schema`` (or was not shown)."""
    try:
        value, lenient = loads_lenient(text)
    except ValueError as err:
        return None, f"invalid JSON: {err}"
    if lenient:  # NaN / Infinity / 1e400: name the field if it is one we read, else a syntax fault
        found = type_fault(value, pa.struct(list(schema)), "", ids) if isinstance(value, dict) else None
        return found or (None, f"invalid JSON: {loads_error(text)}")
    if not isinstance(value, dict):
        return None, f"record is not a JSON object (got {_kind(value)}); expected one JSON object per line"
    return type_fault(value, pa.struct(list(schema)), "", ids) or (None, f"unreadable record: {arrow_error}")


def _parse(chunk: memoryview, schema: pa.Schema, block_size: int) -> pa.Table:
    return pj.read_json(
        pa.BufferReader(pa.py_buffer(chunk)),
        read_options=pj.ReadOptions(use_threads=True, block_size=block_size),
        parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
    )


#: A span of lines whose ids hold both strings and integers is read in Python (its integer ids written as
#: strings, then one Arrow parse) when it holds at most this many bytes; a longer one is split first.
MIXED_SPAN_BYTES = 1 << 20


@dataclass
class _SpanParser:
    """Arrow parses of spans [lo, hi) of a file's lines (indices into ``starts`` / ``ends``).

    A span that fails to parse, or yields another number of rows than it has lines, is split in half and
    each half parsed again; a single line that fails is looked at in Python, to say why. Id fields are
    typed as the values met so far are (string or int64, :func:`~rewardline.data.adapters.ids.switched`): a
    span is parsed again with an id's type switched once, so a run of records with integer ids after string
    ones costs one parse more; a span that holds both kinds is split down to :data:`MIXED_SPAN_BYTES`, then
    read with its integer ids written as strings.
    """

    view: memoryview
    starts: np.ndarray
    ends: np.ndarray
    schema: pa.Schema
    ids: tuple[str, ...]
    block_size: int
    ints: frozenset[str] = frozenset()  # the id fields now typed int64

    def text(self, i: int) -> str:
        return bytes(self.view[self.starts[i] : self.ends[i]]).decode()

    def parse(self, spans: list[tuple[int, int]], bad: dict[int, tuple[str | None, str]]) -> list[tuple[int, pa.Table]]:
        """(first line, table cast to ``schema``) of the spans' lines that parse, in order; the others' faults
        go to ``bad``."""
        if spans and self.ids:  # the first record's integer ids: a file of integer ids parses at once
            with contextlib.suppress(orjson.JSONDecodeError):
                self.ints = integer_ids(orjson.loads(self.text(spans[0][0])), self.ids)
        good: list[tuple[int, pa.Table]] = []
        for span in spans:
            stack = [(*span, frozenset())]
            while stack:
                lo, hi, tried = stack.pop()
                error, mixed = "row count differs from line count", hi - lo == 1
                try:
                    table = _parse(self.view[self.starts[lo] : self.ends[hi - 1]],
                                   with_int_ids(self.schema, self.ints), self.block_size)
                    if table.num_rows == hi - lo:
                        good.append((lo, table.select(self.schema.names).cast(self.schema)))
                        continue
                except (pa.ArrowException, ValueError) as err:
                    error = str(err)
                    path = switched(error, self.ids, self.ints)
                    if path is not None and path not in tried:  # the span again, this id typed the other way
                        self.ints ^= {path}
                        stack.append((lo, hi, tried | {path}))
                        continue
                    mixed = mixed or (path is not None and self.ends[hi - 1] - self.starts[lo] <= MIXED_SPAN_BYTES)
                table = self.with_string_ids(lo, hi) if mixed else None
                if table is not None:
                    good.append((lo, table))
                elif hi - lo > 1:
                    mid = (lo + hi) // 2
                    stack += [(mid, hi, frozenset()), (lo, mid, frozenset())]
                else:
                    bad[lo] = _line_fault(self.text(lo), self.schema, error, self.ids)
        return sorted(good, key=lambda item: item[0])

    def with_string_ids(self, lo: int, hi: int) -> pa.Table | None:
        """Lines [lo, hi) read with their integer ids written as strings (records whose ids hold both kinds:
        ``prompt_id`` 7 and "p-2", or one record's two ``response_id`` 1 and "r2"), cast to ``schema``; None
        when a line is no strict JSON object, none has an integer id, or they still do not parse."""
        if not self.ids:
            return None
        records, changed = [], False
        for i in range(lo, hi):
            try:
                value = orjson.loads(self.view[self.starts[i] : self.ends[i]])
            except orjson.JSONDecodeError:
                return None
            if not isinstance(value, dict):
                return None
            changed = ids_as_strings(value, self.ids) or changed
            records.append(orjson.dumps(value))
        if not changed:
            return None
        try:
            table = _parse(memoryview(b"\n".join(records)), self.schema, self.block_size)
        except (pa.ArrowException, ValueError):
            return None
        return table.select(self.schema.names).cast(self.schema) if table.num_rows == hi - lo else None


def read_jsonl(data: bytes, origin_file: str, schema: pa.Schema, line_numbers: np.ndarray | None = None,
               limits: Limits | None = None, ids: tuple[str, ...] = ()) -> Records:
    """Parse JSONL ``data`` against ``schema``; bad lines are quarantined with a reason.

    Blank lines are not records. ``line_numbers`` overrides the record numbers of the
    non-blank lines (used for JSON lists, whose records are numbered by item). A line over
    ``limits.max_record_bytes`` is quarantined from its length alone: no decoder or parser sees it.
    The fields ``ids`` (dotted paths, string-typed in ``schema``) take a string or an integer in any
    record, read as the string (:mod:`rewardline.data.adapters.ids`).
    """
    limits = limits or Limits()
    starts, ends = _line_spans(data)
    keep_idx = np.flatnonzero(_nonblank(data, starts))
    object_shaped = _object_shaped(data, starts)[keep_idx]
    numbers = (keep_idx + 1) if line_numbers is None else np.asarray(line_numbers, dtype=np.int64)[keep_idx]
    starts, ends = starts[keep_idx], ends[keep_idx]
    n = len(keep_idx)
    oversized = limits.oversized_records(ends - starts)
    utf8_bad = _invalid_utf8(data, starts, ends) if n else {}
    block_size = max(1 << 20, int(np.where(oversized, 0, ends - starts).max(initial=0)) * 2 + 16)
    view = memoryview(data)

    bad: dict[int, tuple[str | None, str]] = {
        int(i): (None, limits.record_reason(int(ends[i] - starts[i]))) for i in np.flatnonzero(oversized)}
    bad.update({i: (None, r) for i, r in utf8_bad.items() if i not in bad})
    for i in np.flatnonzero(~object_shaped):  # failure path: never shown to Arrow
        if i not in bad:
            text = bytes(view[starts[i] : ends[i]]).decode()
            bad[int(i)] = _line_fault(text, schema, "expected one JSON object per line", ids)

    # Lines that are not UTF-8 or not object-shaped split the file into spans that Arrow can parse.
    cuts = [-1, *sorted(bad), n]
    spans = [(a + 1, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b - a > 1]
    good = _SpanParser(view, starts, ends, schema, ids, block_size).parse(spans, bad)

    row_idx = np.concatenate([np.arange(lo, lo + t.num_rows) for lo, t in good]) if good else np.zeros(0, int)
    tables = [t for _, t in good]
    table = pa.concat_tables(tables) if tables else S.empty(schema)

    def raw_of(record_numbers: np.ndarray) -> list[str]:
        idx = np.searchsorted(numbers, record_numbers)
        # at most RAW_CHARS characters are kept: decode no more than 4 bytes per character of the line
        return [bytes(view[starts[i] : min(ends[i], starts[i] + 4 * RAW_CHARS)]).decode("utf-8", "backslashreplace")
                .rstrip("\r") for i in idx]

    records = Records(origin_file, table, numbers[row_idx], records_in=n, raw_of=raw_of)
    if bad:
        order = np.array(sorted(bad), dtype=np.int64)
        quarantined = quarantine_rows(
            origin_file, numbers[order], None, [bad[i][1] for i in order], raw_of(numbers[order])
        )
        fields = pa.array([bad[i][0] for i in order], pa.string())
        records.quarantined.append(quarantined.set_column(2, "field", fields))
    return records


def loads_lenient(data: bytes | str) -> tuple[object, bool]:
    """(decoded JSON, whether the lenient decoder was needed); ValueError if not JSON at all.

    orjson first; on failure (failure path only) the stdlib, which also reads ``NaN``,
    ``Infinity`` and numbers that overflow a double (``1e400`` -> inf), so that such records
    are quarantined for their value with the field named, not for their syntax.
    """
    try:
        return orjson.loads(data), False
    except orjson.JSONDecodeError as err:
        try:
            return json.loads(data), True
        except (ValueError, RecursionError):
            raise ValueError(str(err)) from err


def read_json_list(data: bytes, origin_file: str, schema: pa.Schema, limits: Limits | None = None,
                   ids: tuple[str, ...] = ()) -> Records:
    """A JSON document holding a list of records; item i (0-based) is record i + 1 (its size for
    ``limits.max_record_bytes``: the item re-serialised as compact JSON)."""
    try:
        items, lenient = loads_lenient(data)
    except ValueError as err:
        raise ValueError(f"{origin_file}: not a valid JSON document: {err}") from err
    if not isinstance(items, list):
        raise ValueError(f"{origin_file}: expected a JSON list of records, got {_kind(items)}")
    # json.dumps writes NaN/Infinity back, which Arrow reads, so the score checks can quarantine
    # the one record holding them.
    jsonl = b"\n".join(json.dumps(item).encode() for item in items) if lenient else b"\n".join(map(orjson.dumps, items))
    return read_jsonl(jsonl, origin_file, schema, line_numbers=np.arange(1, len(items) + 1), limits=limits, ids=ids)


def first_record(data: bytes) -> dict | None:
    """The first JSON object of a JSONL file or JSON list (None if none is found in the first lines)."""
    head = data.lstrip()
    if head.startswith(b"["):
        try:
            items = loads_lenient(data)[0]
        except ValueError:
            return None
        return next((x for x in items if isinstance(x, dict)), None) if isinstance(items, list) else None
    for line in head.split(b"\n", 1000)[:1000]:
        if len(line) > SNIFF_MAX_BYTES:  # a huge line is not decoded just to sniff the format
            continue
        try:
            value = loads_lenient(line)[0]  # a NaN or 1e400 score does not hide the record's fields
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None
