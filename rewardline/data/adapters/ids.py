"""Id fields of JSON sources: a string or an integer in any record, stored as the string.

An adapter names its id fields (``FLEXIBLE``: dotted paths such as ``prompt_id`` or
``responses.response_id``); its input schema types them as strings. Arrow's JSON reader gives a field
one type per parse, so :func:`rewardline.data.adapters.jsonl.read_jsonl` parses a span of lines with each
id typed as the span's values are (``int64`` where they are integers), switches an id's type when Arrow
meets the other kind (:func:`switched`), and casts every parsed table to the input schema (7 -> ``"7"``).
A span holding both kinds (or one record holding both, in its responses' ids) is split down to
``jsonl.MIXED_SPAN_BYTES``, then read with its integer ids written as strings (:func:`ids_as_strings`).
Whatever the order of the records, the same ids result. Booleans, floats, objects and arrays are not ids
(nor integers beyond 64 bits, which the JSON decoder reads as floats): :func:`id_fault` names them.
"""

from __future__ import annotations

import json
import math
import re

import pyarrow as pa

#: Arrow's complaint when a field's values change kind: "Column(/responses/[]/response_id) changed from string
#: to number in row 0".
_CHANGED = re.compile(r"Column\(/([^)]*)\) changed from \w+ to (\w+)")


def id_fault(value: object, path: str) -> str | None:
    """The reason an id field's decoded JSON ``value`` (not null) is refused, or None if it is an id: a string or
    an integer. The JSON decoder reads an integer beyond 64 bits as a float: such a float is named as too long."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return None
    shown = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)[:60]  # str: Parquet dates
    kind = {dict: "object", list: "array", bool: "boolean"}.get(type(value), type(value).__name__)
    huge = isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) >= 2**63
    expected = "a string, or an integer within 64 bits" if huge else "a string or an integer"
    return f"{path}: expected {expected}, got {kind} {shown}"


def _set_type(typ: pa.DataType, parts: list[str], new: pa.DataType) -> pa.DataType:
    """``typ`` with the field at the dotted path ``parts`` (through lists and structs) typed ``new``."""
    if pa.types.is_list(typ):
        return pa.list_(_set_type(typ.value_type, parts, new))
    if pa.types.is_large_list(typ):
        return pa.large_list(_set_type(typ.value_type, parts, new))
    if not parts or not pa.types.is_struct(typ):
        return new if not parts else typ
    fields = [f.with_type(_set_type(f.type, parts[1:], new)) if f.name == parts[0] else f for f in typ]
    return pa.struct(fields)


def with_int_ids(schema: pa.Schema, ints: frozenset[str]) -> pa.Schema:
    """``schema`` with the id fields ``ints`` (dotted paths) typed int64."""
    for path in sorted(ints):
        name, *rest = path.split(".")
        i = schema.get_field_index(name)
        schema = schema.set(i, schema.field(i).with_type(_set_type(schema.field(i).type, rest, pa.int64())))
    return schema


def switched(error: str, ids: tuple[str, ...], ints: frozenset[str]) -> str | None:
    """The id field whose type a parse that failed with ``error`` should switch (to int64 where Arrow met a
    number in a string-typed id, to string where it met a string in an int64-typed one), or None."""
    found = _CHANGED.search(error)
    if found is None:
        return None
    path = ".".join(part for part in found[1].split("/") if part != "[]")
    if path not in ids:
        return None
    to_int = found[2] == "number" and path not in ints
    to_str = found[2] == "string" and path in ints
    return path if to_int or to_str else None


def _walk(value: object, parts: list[str], found: list[tuple[dict, str]]) -> None:
    """Collect (object, key) of every value at the dotted path ``parts`` below ``value`` (lists: each item)."""
    if isinstance(value, list):
        for item in value:
            _walk(item, parts, found)
    elif isinstance(value, dict) and parts and parts[0] in value:
        if len(parts) == 1:
            found.append((value, parts[0]))
        else:
            _walk(value[parts[0]], parts[1:], found)


def integer_ids(record: object, ids: tuple[str, ...]) -> frozenset[str]:
    """The id fields whose first value in ``record`` (a decoded JSON object) is an integer."""
    ints = []
    for path in ids:
        found: list[tuple[dict, str]] = []
        _walk(record, path.split("."), found)
        values = [obj[key] for obj, key in found if obj[key] is not None]
        if values and isinstance(values[0], int) and not isinstance(values[0], bool):
            ints.append(path)
    return frozenset(ints)


def ids_as_strings(record: dict, ids: tuple[str, ...]) -> bool:
    """Write ``record``'s integer ids as strings, in place; True if any was."""
    changed = False
    for path in ids:
        found: list[tuple[dict, str]] = []
        _walk(record, path.split("."), found)
        for obj, key in found:
            if isinstance(obj[key], int) and not isinstance(obj[key], bool):
                obj[key] = str(obj[key])
                changed = True
    return changed
