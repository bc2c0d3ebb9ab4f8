"""The canonical ranking data contract, as Arrow schemas.

See ``docs/data-contract.md`` for the prose version. Every adapter turns its
source format into a *ranked-responses* table (``RANKED_RESPONSES``, one row per
(ranking, response)); :mod:`rewardline.data.canonical` validates that table and splits
it into the three canonical tables written by the ingest stage:

* ``prompts``   – one row per prompt (``PROMPTS``);
* ``responses`` – one row per response, texts stored once (``RESPONSES``);
* ``rankings``  – one row per (ranking, response) with the response's rank,
  1 = best, tied responses share a rank (``RANKINGS``). A ranking is the group of
  rows sharing ``ranking_id`` = one (prompt, annotator) judgement, or one (prompt, annotator,
  ``ranking_key``) judgement when the adapter gives a key (a pairwise judgement: one ranking per pair).

Each is a partitioned Parquet table, ``{name}/part-NNN.parquet``, one part per prompt bucket
(:mod:`rewardline.data.tables`). The pairs stage writes the splits ``train`` / ``val`` / ``test`` with
schema ``PAIRS`` and copies ``prompts`` / ``responses`` next to them, so a pairs directory is
self-contained for training; pairs refer to responses by id only.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

#: What every adapter returns: one row per (ranking, response).
RANKED_RESPONSES = pa.schema(
    [
        ("prompt_id", pa.string()),  # null -> derived from the prompt text
        # Texts are large_string (64-bit offsets): the rows of all sources together may hold more than the
        # 2 GiB of text that one pa.string() array addresses (3M K = 4 rankings: 2.4 GB of responses).
        ("prompt", pa.large_string()),  # rendered text (multi-turn: the transcript)
        ("prompt_messages", pa.list_(MESSAGE)),  # null for single-turn prompts
        ("category", pa.string()),
        ("annotator_id", pa.string()),
        ("response_id", pa.string()),  # null -> derived from (prompt_id, text)
        ("response", pa.large_string()),
        ("source", pa.string()),  # policy / model that wrote the response
        ("rank", pa.int32()),  # 1 = best; ties share a rank
        ("score", pa.float64()),  # optional Likert score / judge probability
        ("batch_id", pa.string()),
        ("origin_file", pa.string()),
        ("origin_line", pa.int64()),  # 1-based line (JSONL; CSV: where the record starts), item or row in origin_file
        ("is_anchor", pa.bool_()),  # the prompt's anchor response (e.g. AlpacaEval's reference); null = no
        ("ranking_key", pa.string()),  # null -> one ranking per (prompt, annotator); else per (.., key)
    ]
)

#: Largest accepted |score|. Scores must be finite (no NaN/±Infinity, no JSON/CSV 1e400 that
#: parses to inf) and |score| <= 1e30, so that a pair's margin |score_a - score_b| <= 2e30,
#: times any margin_scale up to 1e8, stays finite in the float32 ``PAIRS.margin`` (max 3.4e38).
MAX_ABS_SCORE = 1e30


def bad_scores(scores: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Mask of non-null scores that are not finite numbers with |score| <= MAX_ABS_SCORE.

    ``|s| <= MAX_ABS_SCORE`` is false for NaN and ±inf, so one comparison covers all three.
    """
    within = pc.less_equal(pc.abs(scores), MAX_ABS_SCORE)
    return np.asarray(pc.fill_null(pc.invert(within), False), dtype=bool)


#: Reason tail for such scores (its category, before ", got", matches the JSON failure path's).
SCORE_EXPECTED = f"expected a finite number, got NaN, Infinity or |score| > {MAX_ABS_SCORE:g}"


def blank(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Null, empty or whitespace-only text (a regex match: no copy of the texts): not a prompt or response."""
    found = pc.match_substring_regex(column, r"^\s*$")
    return pc.fill_null(found, True).to_numpy(zero_copy_only=False)


PROMPTS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("prompt_messages", pa.list_(MESSAGE)),
        ("category", pa.string()),
    ]
)

RESPONSES = pa.schema(
    [
        ("response_id", pa.string()),
        ("prompt_id", pa.string()),
        ("response", pa.string()),
        ("source", pa.string()),
        ("is_anchor", pa.bool_()),  # optional; null or absent (older tables) = not an anchor
        # hash64 of the text (as int64): two responses of a prompt with one text (e.g. two policy samples that came out
        # the same) compare as one in pairs; optional: null or absent (older tables) = every response its own text
        ("text_hash", pa.int64()),
    ]
)

RANKINGS = pa.schema(
    [
        ("ranking_id", pa.string()),  # "<prompt_id>|<annotator_id>" (+ "|<ranking_key>" when given)
        ("prompt_id", pa.string()),
        ("annotator_id", pa.string()),
        ("response_id", pa.string()),
        ("rank", pa.int32()),
        ("score", pa.float64()),
        ("batch_id", pa.string()),
        ("origin_file", pa.string()),
        ("origin_line", pa.int64()),
    ]
)

QUARANTINE = pa.schema(
    [
        ("origin_file", pa.string()),
        ("origin_line", pa.int64()),
        ("field", pa.string()),  # the offending field, or null for whole-record faults
        ("reason", pa.string()),
        ("raw", pa.string()),  # the record as read, truncated to 2,000 characters
    ]
)

#: One row per unordered response pair of a prompt, aggregated over annotators.
#: Oriented so that ``label >= 0.5``: ``response_a`` is the majority's choice.
PAIRS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("response_a_id", pa.string()),
        ("response_b_id", pa.string()),
        ("label", pa.float32()),  # p = share of votes preferring a (ties 1/2, soft anchor votes s)
        ("n_votes", pa.int32()),
        ("margin", pa.float32()),  # >= 0; score difference or mean rank gap
        ("category", pa.string()),
        ("split", pa.string()),
    ]
)

#: One row per response of the pairs (``pairs.targets`` ≠ none): its fitted utility on the
#: paired-comparison model's scale (schema metadata ``link``: probit | logit), standard error,
#: and whether its prompt has an anchor (u_anchor = 0) or was centred (mean 0).
TARGETS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("response_id", pa.string()),
        ("split", pa.string()),
        ("utility", pa.float64()),
        ("se", pa.float64()),
        ("anchored", pa.bool_()),
    ]
)

SPLITS = ("train", "val", "test")
#: The ranking tables of an ingest or validate directory, each partitioned by prompt bucket
#: (``{name}/part-NNN.parquet``, :func:`rewardline.data.tables.table_path`); a pairs directory holds the first two.
RANKING_TABLES = ("prompts", "responses", "rankings")
SOLUTIONS_FILE = "solutions.parquet"  # the step-level table (rewardline.data.steps.SOLUTIONS): one file
QUARANTINE_FILE = "quarantine.parquet"  # ingest's rows that failed a check, with the reason: one file


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table of ``schema``."""
    return schema.empty_table()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast ``table``'s columns to ``schema``; absent columns become null."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(cast_column(table.column(field.name), field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


#: Most text bytes per chunk when large_string is cast down to string (32-bit offsets: < 2 GiB).
STRING_CHUNK_BYTES = 1 << 30


def cast_column(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """``column`` cast to ``target``; large_string → string is cast chunk by chunk, each chunk split so that
    it holds at most :data:`STRING_CHUNK_BYTES` of text (the cast of a whole > 2 GiB array would overflow)."""
    if not (pa.types.is_large_string(column.type) and pa.types.is_string(target)):
        return column.cast(target)
    pieces = []
    for chunk in column.chunks:
        ends = np.cumsum(np.asarray(pc.fill_null(pc.binary_length(chunk), 0), dtype=np.int64))
        lo = 0
        while lo < len(chunk) or not pieces:  # greedy: the most rows whose text fits (at least one)
            base = int(ends[lo - 1]) if lo else 0
            hi = max(lo + 1, int(np.searchsorted(ends, base + STRING_CHUNK_BYTES, side="right")))
            pieces.append(chunk.slice(lo, min(hi, len(chunk)) - lo).cast(target))
            lo = hi
    return pa.chunked_array(pieces, type=target)
