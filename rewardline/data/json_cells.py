"""A list held in a text cell (a CSV cell holds text): its JSON text, ``[{"role": "user", ...}]``.

Plain Python, no Arrow: ``rewardline score`` / ``rerank`` read a rows file's cells with it, and ingest's CSV
reader the list fields of a format (RewardBench 2's responses, TRL's and the arena's message lists)."""

from __future__ import annotations

import json
from typing import Any


def json_array(cell: Any) -> Any:
    """``cell`` as the list its JSON text holds when it is one (``[{"role": ...}]``), else unchanged."""
    if not isinstance(cell, str) or not cell.lstrip().startswith("["):
        return cell
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        return cell
    return value if isinstance(value, list) else cell
