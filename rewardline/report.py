"""Formatting for what people read: the Markdown reports and the gate messages of every stage."""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Mapping
from typing import Any, TextIO


def fmt(value: Any, digits: int = 4) -> str:
    """A number as report text: reals with ``digits`` decimals, integers as they are, ``n/a`` when not measured.

    ``None``, NaN and ±inf (a metric undefined on the data) read ``n/a``; booleans and strings
    are shown as ``str`` gives them; NumPy scalars format like Python numbers.
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool | numbers.Integral):
        return str(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return f"{number:.{digits}f}" if math.isfinite(number) else "n/a"
    return str(value)


def md_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell (``|`` escaped, line breaks as spaces)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def human(value: Any) -> str:
    """A number rounded for people (terminal tables): integers with thousands separators; reals with 3
    decimals below 1, 2 up to 1,000, none above; ``n/a`` for None / NaN / inf; ``yes`` / ``no``; a list
    joined by commas."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            return "n/a"
        return f"{number:.3f}" if abs(number) < 1 else f"{number:,.2f}" if abs(number) < 1000 else f"{number:,.0f}"
    if isinstance(value, list | tuple):
        return ", ".join(human(v) for v in value) if value else "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {human(v)}" for k, v in value.items()) if value else "-"
    return str(value)


def _is_records(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, Mapping) for v in value)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def print_summary(title: str, values: Mapping[str, Any], file: TextIO | None = None) -> None:
    """``values`` (nested keys dotted) as a two-column table under ``title``: a rich table when rich is
    installed (colour only on a terminal), else aligned plain text."""
    flat = flatten(values)
    records = {key: value for key, value in flat.items() if _is_records(value)}  # e.g. registry versions
    rows = [(key, human(value)) for key, value in flat.items() if key not in records]
    stream = file or sys.stdout
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich comes with typer
        width = max((len(k) for k, _ in rows), default=0)
        stream.write(title + "\n" + "".join(f"  {k.ljust(width)}  {v}\n" for k, v in rows))
        for key, items in records.items():
            stream.write(f"{key}\n" + "".join("  " + "  ".join(f"{k} {human(v)}" for k, v in item.items()) + "\n"
                                              for item in items))
        return
    table = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, text in rows:
        table.add_row(key, text)
    console = Console(file=stream, soft_wrap=False, width=160)
    console.print(table)
    for key, items in records.items():
        columns = list(dict.fromkeys(k for item in items for k in item))
        listing = Table(*columns, title=key, title_justify="left", box=None, pad_edge=False)
        for item in items:
            listing.add_row(*(human(item.get(c)) for c in columns))
        # as wide as its widest row: cut to 160 columns, headers and cells ended in "…" (which was which lost)
        Console(file=stream, soft_wrap=False, width=10_000).print(listing)
