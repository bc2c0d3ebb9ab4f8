"""Content validation of ranked responses and the split into canonical tables.

Adapters (:mod:`rewardline.data.adapters`) catch *format* faults (bad JSON, missing
fields, wrong types). This module catches *content* faults and turns the
ranked-responses rows into the three canonical tables of the data contract.

Accounting unit: the input **record** (``origin_file``, ``origin_line``). A record feeds one
ranking, or several (an AlpacaEval record: its sample-vs-reference comparison and the K-way ranking
of its file's samples); its rows are accounted once, as one record. A record is quarantined, with
the first fault found, when

* one of its rows has an empty prompt or response text, a prompt or response longer than
  ``limits.max_prompt_chars`` / ``limits.max_response_chars`` (:mod:`rewardline.data.limits`), no
  annotator, a score that is
  not a finite number with |score| <= ``schema.MAX_ABS_SCORE``, or a rank that is not an
  integer in 1..K (K = responses in its ranking);
* one of its rows repeats a (ranking, response) already seen in an earlier record
  (a duplicated ranking or a response id used twice in one ranking);
* one of its rows reuses a response id whose text, or a prompt id whose text, was
  already seen different (first occurrence wins);
* every ranking it feeds is left with fewer than two responses (K < 2). A ranking left that small
  is dropped; a record that still feeds another ranking stays accepted (only its rows in the
  dropped ranking go), so one faulty record cannot quarantine another's valid comparison.

Everything else is accepted. ``records_ok + records_quarantined == records_in`` holds
by construction and is asserted. All checks are whole-column Arrow/NumPy operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data import schema
from rewardline.data.hashing import combine, hash64, hex_from_hashes
from rewardline.data.keys import key_codes, record_codes
from rewardline.data.limits import Limits


@dataclass
class CanonicalTables:
    prompts: pa.Table
    responses: pa.Table
    rankings: pa.Table
    quarantine: pa.Table
    records_ok: int
    records_quarantined: int


def _first_seen(codes: np.ndarray) -> np.ndarray:
    """Index of the first row (in table order) that carries each row's code."""
    _, first_index, inverse = np.unique(codes, return_index=True, return_inverse=True)
    return first_index[inverse]


def _fill_ids(ranked: pa.Table) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Derive missing ids and qualify response ids by their prompt.

    prompt id: as given, else ``p-<hash64(prompt text)>``. response id:
    ``<prompt_id>/<given id>`` (sources often number responses per prompt: "A", "B", or a
    model name), else ``r-<combine(hash64(prompt_id), hash64(text))>``; either way unique
    across prompts. Also returns the texts' hashes (prompt, response) for the conflict checks.
    """
    prompt_hash = hash64(ranked["prompt"])
    prompt_ids = filled_prompt_ids(ranked, prompt_hash)
    ranked = ranked.set_column(ranked.schema.get_field_index("prompt_id"), "prompt_id", prompt_ids)
    response_hash = hash64(ranked["response"])
    derived = hex_from_hashes(combine(hash64(prompt_ids), response_hash), "r-")
    response_ids = pc.if_else(
        pc.is_null(ranked["response_id"]), derived, pc.binary_join_element_wise(prompt_ids, ranked["response_id"], "/")
    )
    ranked = ranked.set_column(ranked.schema.get_field_index("response_id"), "response_id", response_ids)
    return ranked, prompt_hash, response_hash


def filled_prompt_ids(ranked: pa.Table, prompt_hash: np.ndarray | None = None) -> pa.ChunkedArray:
    """The prompt id of each ranked row: as given, else ``p-<hash64(prompt text)>`` (the derivation
    :func:`_fill_ids` applies; the out-of-core ingest routes rows by it before canonicalising)."""
    if ranked["prompt_id"].null_count == 0:  # every id given: no text to hash
        return ranked["prompt_id"]
    prompt_hash = hash64(ranked["prompt"]) if prompt_hash is None else prompt_hash
    return pc.if_else(pc.is_null(ranked["prompt_id"]), hex_from_hashes(prompt_hash, "p-"), ranked["prompt_id"])


def _ranking_ids(ranked: pa.Table) -> pa.ChunkedArray:
    """``<prompt_id>|<annotator_id>``, plus ``|<ranking_key>`` on rows whose adapter gives a key: a
    source of pairwise judgements (arena battles, AlpacaEval sample-vs-reference) makes each judged
    pair its own ranking, so several pairs of one (prompt, annotator) are not duplicates of each other."""
    base = pc.binary_join_element_wise(ranked["prompt_id"], pc.fill_null(ranked["annotator_id"], ""), "|")
    keyed = pc.binary_join_element_wise(base, ranked["ranking_key"], "|")  # null where no key
    return pc.coalesce(keyed, base)


def _with_anchors(responses: pa.Table, ranked: pa.Table, row_ok: np.ndarray) -> pa.Table:
    """``is_anchor`` = true when any accepted row marks the response as its prompt's anchor, false
    otherwise; left as given (null when no adapter says) when no accepted row marks an anchor."""
    marked = np.asarray(pc.fill_null(ranked["is_anchor"], False), bool) & row_ok
    if not marked.any() or responses.num_rows == 0:
        return responses
    anchor_ids = ranked["response_id"].filter(pa.array(marked)).unique()
    is_anchor = pc.is_in(responses["response_id"], value_set=anchor_ids)
    return responses.set_column(responses.schema.get_field_index("is_anchor"), "is_anchor", is_anchor)


def _origin(table: pa.Table, rows: np.ndarray) -> list[str]:
    """``file:line`` of the given rows (only ever called on the few faulty ones)."""
    taken = table.select(["origin_file", "origin_line"]).take(pa.array(rows, pa.int64()))
    return [f"{f}:{line}" for f, line in zip(taken["origin_file"].to_pylist(), taken["origin_line"].to_pylist(),
                                            strict=True)]


#: One fault kind found on rows: (field, mask over rows, reason per row).
Fault = tuple[str, np.ndarray, np.ndarray]


def canonicalize(ranked: pa.Table, limits: Limits | None = None) -> CanonicalTables:
    """Validate ranked-responses rows and split them into prompts, responses, rankings, quarantine.

    A pure function of ``ranked``: no wall-clock column, so re-ingesting the same files writes the same bytes.
    Row faults (:func:`_row_faults`) quarantine their whole record; a ranking left with fewer than 2
    valid responses is dropped, and a record left feeding no ranking is quarantined
    (:func:`_drop_small_rankings`). Every record ends ok or quarantined."""
    ranked, prompt_hash, response_hash = _fill_ids(schema.conform(ranked, schema.RANKED_RESPONSES))
    n = ranked.num_rows
    record = record_codes(ranked["origin_file"], ranked["origin_line"])
    n_records = int(record.max()) + 1 if n else 0
    ranking_ids = _ranking_ids(ranked)
    ranking = key_codes(ranking_ids)

    faults, dup = _row_faults(ranked, ranking_ids, ranking, prompt_hash, response_hash, limits or Limits())
    record_bad, record_field, record_reason = _record_faults(faults, record, n_records)
    row_ok = _drop_small_rankings(ranking, dup, record, record_bad, record_field, record_reason)

    quarantine = _quarantine_rows(ranked, record, record_bad, record_field, record_reason)
    prompts = _first_rows(ranked, row_ok, "prompt_id", schema.PROMPTS)
    ranked = ranked.append_column("text_hash", pa.array(response_hash.view(np.int64)))
    responses = _with_anchors(_first_rows(ranked, row_ok, "response_id", schema.RESPONSES), ranked, row_ok)
    # The texts are in prompts / responses now: the rankings table is built from the id columns alone, after the
    # texts of the ranked rows are let go (their copies and the rankings table are never held together).
    ranked = ranked.select([c for c in ranked.column_names if c not in ("prompt", "prompt_messages", "response")])
    good_rows = pa.array(np.flatnonzero(row_ok))
    rankings = schema.conform(ranked.take(good_rows).append_column("ranking_id", ranking_ids.take(good_rows)),
                              schema.RANKINGS)
    records_ok = int(np.unique(record[row_ok]).size)
    records_bad = int(record_bad.sum())
    assert records_ok + records_bad == n_records, "record accounting broke: a record is neither ok nor quarantined"
    return CanonicalTables(prompts, responses, rankings, quarantine, records_ok, records_bad)


def _row_faults(ranked: pa.Table, ranking_ids: pa.Array, ranking: np.ndarray, prompt_hash: np.ndarray,
                response_hash: np.ndarray, limits: Limits) -> tuple[list[Fault], np.ndarray]:
    """The faults of single rows, in priority order (the first one names a record's reason): blank
    texts, texts over the limits, missing annotator, non-finite score, a response ranked twice in one ranking (every
    occurrence after the first; also returned as ``dup``), an id reused with another text (first
    occurrence wins, compared by text hash), a rank outside 1..K."""
    n = ranked.num_rows
    faults: list[Fault] = []

    def add(field: str, mask: np.ndarray, reason: np.ndarray | str) -> None:
        faults.append((field, mask, np.broadcast_to(np.asarray(reason, dtype=object), mask.shape)))

    def reasons_at(mask: np.ndarray, texts: list[str]) -> np.ndarray:
        reason = np.full(n, "", dtype=object)
        reason[np.flatnonzero(mask)] = texts
        return reason

    add("prompt", schema.blank(ranked["prompt"]), "empty prompt text; expected a non-empty string")
    add("response", schema.blank(ranked["response"]), "empty response text; expected a non-empty string")
    for field, limit in (("prompt", limits.max_prompt_chars), ("response", limits.max_response_chars)):
        chars = limits.text_lengths(ranked[field])
        over = chars > limit
        if over.any():
            add(field, over, reasons_at(over, [limits.text_reason(field, int(c)) for c in chars[over]]))
    add(
        "annotator_id",
        pc.is_null(ranked["annotator_id"]).to_numpy(zero_copy_only=False),
        "missing annotator_id; every ranking needs the annotator who made it",
    )
    # Adapters reject such scores with the source text; this keeps any other producer honest.
    add("score", schema.bad_scores(ranked["score"]), f"score: {schema.SCORE_EXPECTED}")

    first = _first_seen(key_codes(ranking_ids, ranked["response_id"]))
    dup = first != np.arange(n)
    if dup.any():
        idx = pa.array(np.flatnonzero(dup))
        add("response_id", dup, reasons_at(dup, [
            f"duplicate: response {rid!r} already ranked in ranking {rk!r} at {where}"
            for rid, rk, where in zip(ranked["response_id"].take(idx).to_pylist(), ranking_ids.take(idx).to_pylist(),
                                      _origin(ranked, first[dup]), strict=True)
        ]))

    for id_col, text_col, text_hash in (("response_id", "response", response_hash),
                                        ("prompt_id", "prompt", prompt_hash)):
        first_id = _first_seen(key_codes(ranked[id_col]))
        conflict = text_hash[first_id] != text_hash
        if conflict.any():
            ids = ranked[id_col].take(pa.array(np.flatnonzero(conflict))).to_pylist()
            add(id_col, conflict, reasons_at(conflict, [
                f"{id_col} {i!r} reused with a different {text_col} text than at {where}"
                for i, where in zip(ids, _origin(ranked, first_id[conflict]), strict=True)
            ]))

    # Ranks must be integers in 1..K, K counted over the ranking's distinct responses.
    rank = pc.fill_null(ranked["rank"], 0).to_numpy(zero_copy_only=False).astype(np.int64)
    k_per_ranking = np.bincount(ranking[~dup], minlength=int(ranking.max()) + 1 if n else 0)
    k = k_per_ranking[ranking] if n else np.zeros(0, np.int64)
    bad_rank = (rank < 1) | (rank > k)
    if bad_rank.any():
        raw_ranks = ranked["rank"].take(pa.array(np.flatnonzero(bad_rank))).to_pylist()
        add("rank", bad_rank, reasons_at(bad_rank, [
            f"rank {r} is not an integer in 1..K={kk} (1 = best, ties share a rank)"
            for r, kk in zip(raw_ranks, k[bad_rank], strict=True)
        ]))
    return faults, dup


def _drop_small_rankings(ranking: np.ndarray, dup: np.ndarray, record: np.ndarray, record_bad: np.ndarray,
                         record_field: np.ndarray, record_reason: np.ndarray) -> np.ndarray:
    """The accepted rows: those of records without a fault, less the rows of rankings left with fewer than
    2 valid responses once the faulty records are gone. A record left with no accepted row (every ranking
    it feeds is that small) is quarantined (in place); one already quarantined keeps its first reason.

    Dropping a small ranking's rows leaves every other ranking as it was, and a record quarantined here
    had rows in small rankings only, so one pass reaches the fixed point."""
    n = ranking.size
    row_ok = ~record_bad[record]
    k_ok = np.bincount(ranking[row_ok & ~dup], minlength=int(ranking.max()) + 1 if n else 0)
    small = row_ok & (k_ok[ranking] < 2) if n else np.zeros(0, bool)
    if not small.any():
        return row_ok
    kept = row_ok & ~small
    feeds_kept = np.zeros(record_bad.size, bool)
    feeds_kept[record[kept]] = True
    orphan = small & ~feeds_kept[record]  # rows of records that feed no kept ranking
    reason = np.array([f"ranking has K={kk} valid response(s); at least 2 are needed" for kk in k_ok[ranking[orphan]]],
                      dtype=object)
    small_bad, small_field, small_reason = _record_faults([("responses", orphan, _spread(orphan, reason))],
                                                          record, record_bad.size)
    new = small_bad & ~record_bad
    record_bad |= small_bad
    record_field[new], record_reason[new] = small_field[new], small_reason[new]
    return kept


def _spread(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.full(mask.shape, "", dtype=object)
    out[mask] = values
    return out


def _record_faults(
    faults: list[tuple[str, np.ndarray, np.ndarray]], record: np.ndarray, n_records: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per record: faulty?, field and reason of its first fault (by fault priority, then row order)."""
    bad = np.zeros(n_records, dtype=bool)
    field = np.full(n_records, None, dtype=object)
    reason = np.full(n_records, None, dtype=object)
    for name, mask, reasons in faults:
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            continue
        recs, first = np.unique(record[rows], return_index=True)
        new = ~bad[recs]
        field[recs[new]] = name
        reason[recs[new]] = reasons[rows[first[new]]]
        bad[recs] = True
    return bad, field, reason


def _first_rows(table: pa.Table, row_ok: np.ndarray, key: str, target: pa.Schema) -> pa.Table:
    """One row per distinct ``key`` among the accepted rows: its first occurrence, columns of ``target``."""
    accepted = np.flatnonzero(row_ok)
    if accepted.size == 0:
        return schema.empty(target)
    codes = key_codes(table[key])[accepted]
    _, first = np.unique(codes, return_index=True)
    return schema.conform(table.select(target.names).take(pa.array(accepted[np.sort(first)])), target)


def _quarantine_rows(
    ranked: pa.Table, record: np.ndarray, record_bad: np.ndarray, field: np.ndarray, reason: np.ndarray
) -> pa.Table:
    """One quarantine row per faulty record, with the record's origin and a compact rendering."""
    bad_records = np.flatnonzero(record_bad)
    if bad_records.size == 0:
        return schema.empty(schema.QUARANTINE)
    _, first_row = np.unique(record, return_index=True)
    rows = pa.array(first_row[bad_records])
    sample = ranked.take(rows)
    raw = pc.binary_join_element_wise(
        "prompt_id=", pc.fill_null(sample["prompt_id"], ""),
        " annotator_id=", pc.fill_null(sample["annotator_id"], ""),
        " response_id=", pc.fill_null(sample["response_id"], ""),
        " response=", pc.utf8_slice_codeunits(pc.fill_null(sample["response"], ""), 0, 300).cast(pa.string()),
        "",
    )
    return pa.table(
        {
            "origin_file": sample["origin_file"],
            "origin_line": sample["origin_line"],
            "field": pa.array(field[bad_records].tolist(), pa.string()),
            "reason": pa.array(reason[bad_records].tolist(), pa.string()),
            "raw": raw,
        },
        schema=schema.QUARANTINE,
    )
