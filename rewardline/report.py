"""Formatting for what people read: the Markdown reports and the gate messages of every stage."""

from __future__ import annotations

import math
import numbers
from typing import Any


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
