"""Where each record of a CSV / TSV file starts: the 1-based line (the header is line 1) by which ingest
(``origin_line``) and ``rewardline score`` name a record, a quoted cell being free to span lines; and the csv-module
split both fall back on.

Light on purpose (NumPy, Arrow, the csv module): the scoring path (:mod:`rewardline.modeling.rows_files`, which the
registered pyfunc model ships) reads it without the ingest adapters.
"""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv


def csv_header(data: bytes, delimiter: str = ",") -> list[str]:
    """Field names in a CSV (TSV: ``delimiter``) file's first line, ended by LF, CRLF or CR (a UTF-8 BOM dropped)."""
    header = re.split(rb"[\r\n]", data, maxsplit=1)[0].decode("utf-8", "replace").lstrip("\ufeff")
    return next(csv.reader([header], delimiter=delimiter), [])


def split_csv_records(data: bytes, origin: str, delimiter: str = ",") -> tuple[list[list[str]], np.ndarray]:
    """Header + records of a CSV file split by Python's csv module, blank lines dropped as Arrow does
    (failure path only), and the 1-based line where each starts (lines end at LF, CRLF or CR, as for Arrow). Bytes
    that are not UTF-8 survive as surrogate escapes."""
    limit = csv.field_size_limit(max(csv.field_size_limit(), len(data)))  # default 131072 chars per field
    rows, starts, read = [], [], 0
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape"), newline=""), delimiter=delimiter)
        for row in reader:
            if row:
                rows.append(row)
                starts.append(read + 1)
            read = reader.line_num
    except csv.Error as err:
        raise ValueError(f"{origin}: cannot split the CSV into records: {err}") from err
    finally:
        csv.field_size_limit(limit)
    return rows, np.array(starts, dtype=np.int64)


#: A run of line ends (LF, CRLF or CR, for Arrow's CSV reader and Python's csv module alike): in a quoted cell, one
#: more non-empty line of the file (the lines between its line ends are empty).
_LINE_BREAKS = r"(?:\r\n|\r|\n)+"


def _nonblank_lines(data: bytes) -> np.ndarray:
    """1-based numbers of the lines (ended by LF, CRLF or CR) that are not empty: the lines Arrow reads."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if b"\r" not in data:  # LF line ends: the usual file
        ends = np.flatnonzero(buf == ord("\n"))
        starts = np.concatenate([[0], ends + 1])
    else:
        cr, lf = buf == ord("\r"), buf == ord("\n")
        crlf = cr & np.append(lf[1:], False)
        ends = np.flatnonzero(cr | (lf & ~np.insert(cr[:-1], 0, False)))  # where each line end starts
        starts = np.concatenate([[0], ends + 1 + crlf[ends]])
    lengths = np.append(ends, len(buf)) - starts
    return np.flatnonzero(lengths > 0).astype(np.int64) + 1


def arrow_record_lines(table: pa.Table, data: bytes) -> np.ndarray | None:
    """The line where each record of ``table`` (Arrow's read of CSV ``data``) starts, from the line breaks inside its
    quoted cells (a record spans 1 + their number of non-empty lines); None when that does not account for the file's
    lines (a header spanning lines): then the csv module splits it."""
    lines = _nonblank_lines(data)
    if len(lines) == table.num_rows + 1:  # every record on one line: the usual file
        return lines[1:]
    spans = np.ones(table.num_rows, np.int64)
    for col in table.columns:
        if (pa.types.is_binary(col.type) or pa.types.is_string(col.type)) and pc.any(
                pc.match_substring_regex(col, "[\r\n]")).as_py():
            spans += np.asarray(pc.fill_null(pc.count_substring_regex(col, _LINE_BREAKS), 0), np.int64)
    first = np.concatenate([[1], 1 + np.cumsum(spans)])  # index into ``lines`` of each record's first line
    return lines[first[:-1]] if first[-1] == len(lines) else None


def record_start_lines(data: bytes, origin: str, delimiter: str = ",") -> np.ndarray:
    """The line where each record of CSV (TSV: ``delimiter``) ``data`` starts, the header being line 1, as ingest's
    ``origin_line`` names it (``rewardline score`` names a bad row by it): :func:`arrow_record_lines` on Arrow's
    read, or the csv module's split when that cannot tell or Arrow cannot read the file (a record of another width)."""
    names = csv_header(data, delimiter)
    try:
        table = pcsv.read_csv(io.BytesIO(data), parse_options=pcsv.ParseOptions(delimiter=delimiter,
                                                                                  newlines_in_values=True),
                              convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.binary())))
        line = arrow_record_lines(table, data)
    except pa.ArrowInvalid:
        line = None
    return line if line is not None else split_csv_records(data, origin, delimiter)[1][1:]
