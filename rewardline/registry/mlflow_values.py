"""Keys and values within MLflow's limits, and batched logging.

MLflow accepts keys of letters, digits and ``_ - . / space`` up to 250 characters, params up to
6000 characters, tags up to 8000, and at most 1000 metrics / 100 params or tags per batch call.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

MAX_KEY, MAX_PARAM, MAX_TAG, MAX_DESCRIPTION = 250, 6000, 8000, 5000
BATCH_METRICS, BATCH_PARAMS = 1000, 100

MetricRow = tuple[str, float, int, int]  # (key, value, timestamp_ms, step)


def sanitize_key(key: str) -> str:
    """A valid MLflow metric / param / tag key: characters other than letters, digits,
    ``_ - . / space`` become ``_``; no empty, ``.`` or ``..`` path parts; at most 250 characters."""
    key = re.sub(r"[^/\w.\- ]", "_", str(key))
    parts = [p if p not in (".", "..") else p.replace(".", "_") for p in key.split("/") if p]
    return ("/".join(parts) or "_")[:MAX_KEY]


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts → one level with ``a.b`` keys; other values (lists too) are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def metric_values(obj: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a (nested) metrics dict under sanitised ``a.b`` keys; booleans become 0/1,
    everything else (strings, lists, None) is skipped."""
    return {sanitize_key(k): float(v) for k, v in flatten(obj).items() if isinstance(v, bool | int | float)}


def param_values(obj: Mapping[str, Any]) -> dict[str, str]:
    """A (nested) params section as MLflow params: ``a.b`` keys, lists as JSON, values cut at 6000."""
    return {sanitize_key(k): (v if isinstance(v, str) else json.dumps(v, default=str))[:MAX_PARAM]
            for k, v in flatten(obj).items()}


def tag_value(value: Any) -> str:
    """A tag's string: booleans ``true``/``false``, None and NaN ``none``, else ``str`` cut at 8000."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    return str(value)[:MAX_TAG]


def tag_values(tags: Mapping[str, Any]) -> dict[str, str]:
    """``tags`` with sanitised keys and :func:`tag_value` values."""
    return {sanitize_key(k): tag_value(v) for k, v in tags.items()}


def log_batch(client: MlflowClient, run_id: str, params: Mapping[str, str] | None = None,
              metrics: list[MetricRow] | None = None, tags: Mapping[str, Any] | None = None) -> None:
    """``client.log_batch`` in chunks within MLflow's limits; metrics are ``(key, value, timestamp_ms, step)``."""
    from mlflow.entities import Metric, Param, RunTag

    param_items, tag_items = list((params or {}).items()), list(tag_values(tags or {}).items())
    metric_rows = metrics or []
    for i in range(0, len(param_items), BATCH_PARAMS):
        client.log_batch(run_id, params=[Param(k, v) for k, v in param_items[i : i + BATCH_PARAMS]])
    for i in range(0, len(tag_items), BATCH_PARAMS):
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tag_items[i : i + BATCH_PARAMS]])
    for i in range(0, len(metric_rows), BATCH_METRICS):
        client.log_batch(run_id, metrics=[Metric(k, v, ts, s) for k, v, ts, s in metric_rows[i : i + BATCH_METRICS]])
