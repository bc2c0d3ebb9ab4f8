"""Quarantine reasons -> a bounded set of categories for ``metrics.json``.

A quarantine reason carries detail (line and column numbers, the offending value, ids,
``file:line`` of an earlier occurrence): right for ``quarantine.parquet``, wrong as a
metrics key, where one repeated fault made 4,166 keys. :func:`reason_category` keeps
the kind of fault and drops the detail; :func:`reason_counts` counts the categories and
folds all but the ``limit - 1`` most frequent into ``"other"``, so at most ``limit`` keys.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

MAX_REASON_KEYS = 50
OTHER = "other"

# Reasons whose wording embeds values before any ":" -> their fixed category (first match wins).
_FIXED_TEXTS = [
    (r"^record too large: .* (ingest\.max_record_bytes)=", r"record too large (over \1)"),
    (r"^(\w+): too long: .* (ingest\.max_\w+)=", r"\1: too long (over \2)"),
    (r"^invalid JSON\b", "invalid JSON"),
    (r"^invalid UTF-8\b", "invalid UTF-8"),
    (r"^unreadable record\b", "unreadable record"),
    (r"^record is not a JSON object\b", "record is not a JSON object"),
    (r"^expected \d+ fields \(as in the header\)", "CSV row with another number of fields than the header"),
    (r"^duplicate\b", "duplicate response in a ranking"),
    (r"^(\w+) .* reused with a different (\w+) text\b", r"\1 reused with a different \2 text"),
    (r"^rank .* is not an integer in 1\.\.K\b", "rank is not an integer in 1..K"),
    (r"^ranking has K=\d+ valid response", "ranking has fewer than 2 valid responses"),
    # the step-level adapters and content checks (rewardline.data.steps, adapters/prm800k.py, math_shepherd.py)
    (r"^step \d+ of \d+ is empty\b", "a step is empty"),
    (r"^\d+ step labels for \d+ steps\b", "another number of step labels than steps"),
    (r"^step label .* is not one of -1, 0, 1 or null\b", "step label is not one of -1, 0, 1 or null"),
    (r"^outcome .* is not one of 0, 1 or null\b", "outcome is not one of 0, 1 or null"),
    (r"^label: \d+ characters where the input has \d+", "label: does not line up with the input"),
    (r"^label: .* at a step tag is not \+ or -", "label: a mark at a step tag is not + or -"),
    (r"^label\.steps\[\d+\]\.chosen_completion: .* is not an index\b",
     "label.steps.chosen_completion: not an index of a completion"),
    (r"^label\.finish_reason: .* is not a finish reason\b", "label.finish_reason: not a finish reason"),
    (r"^input: text after the last step tag\b", "input: text after the last step tag"),
]
_FIXED = [(re.compile(pattern), category) for pattern, category in _FIXED_TEXTS]
_INDEX = re.compile(r"\[\d+\]")  # responses[3].rank -> responses.rank
_VALUE = re.compile(r",? got .*$")  # "...: expected an integer, got float 1.5" -> drop the value
_FIELD_PREFIX = re.compile(r"^[\w.]+: ")  # "field.path: expected ..." keeps its "expected ..."


def reason_category(reason: str | None) -> str:
    """The kind of fault a quarantine reason names, without values, positions or ids.

    ``"responses[2].rank: expected an integer, got float 1.5"`` -> ``"responses.rank: expected an integer"``;
    ``"invalid JSON: unexpected character: line 1 column 7 (char 6)"`` -> ``"invalid JSON"``;
    ``"rank 7 is not an integer in 1..K=3 (1 = best, ...)"`` -> ``"rank is not an integer in 1..K"``.
    Otherwise: the text before the first ``;``, and for a ``field: ...`` reason the field and
    what was expected, else the text before the first ``:``.
    """
    if not reason:
        return "(no reason)"
    for pattern, category in _FIXED:
        match = pattern.match(reason)
        if match:
            return match.expand(category)
    head = _INDEX.sub("", reason.split(";", 1)[0]).strip()
    if _FIELD_PREFIX.match(head):
        return _VALUE.sub("", head)
    return head.split(":", 1)[0].strip()


def reason_counts(reasons: pa.Array | pa.ChunkedArray, limit: int = MAX_REASON_KEYS) -> dict[str, int]:
    """{category: count}, most frequent first, at most ``limit`` keys (the rest summed as ``"other"``).

    Distinct reasons are counted in Arrow first, so Python touches each distinct text once.
    """
    counted = pc.value_counts(reasons.combine_chunks() if isinstance(reasons, pa.ChunkedArray) else reasons)
    totals: dict[str, int] = {}
    for text, count in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True):
        key = reason_category(text)
        totals[key] = totals.get(key, 0) + count
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    if len(ranked) <= limit:
        return dict(ranked)
    kept = dict(ranked[: limit - 1])
    kept[OTHER] = kept.get(OTHER, 0) + sum(count for _, count in ranked[limit - 1 :])
    return kept
