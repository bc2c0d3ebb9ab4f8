"""Content validation and quarantine accounting of the canonical step."""

from __future__ import annotations

import pyarrow as pa

from rewardline.data import schema
from rewardline.data.canonical import canonicalize


def rows(*records: tuple) -> pa.Table:
    """records: (line, prompt, annotator, response_id, response, rank[, score])."""
    out = []
    for rec in records:
        line, prompt, annotator, rid, text, rank, *score = rec
        out.append({
            "prompt": prompt, "annotator_id": annotator, "response_id": rid, "response": text,
            "rank": rank, "score": score[0] if score else None, "batch_id": "b1",
            "origin_file": "f.jsonl", "origin_line": line,
        })
    return schema.conform(pa.Table.from_pylist(out), schema.RANKED_RESPONSES)


def test_valid_rankings_split_into_three_tables_with_texts_stored_once():
    table = rows(
        (1, "Q1", "ann1", "r1", "A", 1), (1, "Q1", "ann1", "r2", "B", 2), (1, "Q1", "ann1", "r3", "C", 2),
        (2, "Q1", "ann2", "r1", "A", 2), (2, "Q1", "ann2", "r2", "B", 1), (2, "Q1", "ann2", "r3", "C", 3),
    )
    out = canonicalize(table)
    assert out.records_ok == 2 and out.records_quarantined == 0
    assert out.prompts.num_rows == 1 and out.responses.num_rows == 3
    assert out.rankings.num_rows == 6
    assert set(out.rankings["ranking_id"].to_pylist()) == {
        f"{out.prompts['prompt_id'][0]}|ann1", f"{out.prompts['prompt_id'][0]}|ann2"}
    assert out.prompts["prompt_id"][0].as_py().startswith("p-")  # derived from the text


def test_each_fault_quarantines_its_record_with_field_and_reason():
    table = rows(
        (1, "Q1", "a", "r1", "A", 1), (1, "Q1", "a", "r2", "B", 2),          # ok
        (2, "Q2", "a", "r3", "   ", 1), (2, "Q2", "a", "r4", "D", 2),        # empty response
        (3, "Q3", "a", "r5", "E", 1),                                          # K = 1
        (4, "Q4", "a", "r6", "F", 1), (4, "Q4", "a", "r7", "G", 5),          # rank > K
        (5, "Q1", "a", "r1", "A", 1), (5, "Q1", "a", "r2", "B", 2),          # duplicate ranking
        (6, "Q1", "b", "r1", "changed", 1), (6, "Q1", "b", "r8", "H", 2),    # r1 reused, other text
        (7, "", "a", "r9", "I", 1), (7, "", "a", "r10", "J", 2),             # empty prompt
    )
    out = canonicalize(table)
    q = {r["origin_line"]: r for r in out.quarantine.to_pylist()}
    assert out.records_ok == 1 and out.records_quarantined == 6
    assert out.records_ok + out.records_quarantined == 7
    assert q[2]["field"] == "response" and "empty response" in q[2]["reason"]
    assert q[3]["field"] == "responses" and "K=1" in q[3]["reason"]
    assert q[4]["field"] == "rank" and "1..K=2" in q[4]["reason"]
    assert q[5]["field"] == "response_id" and "duplicate" in q[5]["reason"] and "f.jsonl:1" in q[5]["reason"]
    assert q[6]["field"] == "response_id" and "different response text" in q[6]["reason"]
    assert q[7]["field"] == "prompt"
    assert out.rankings["origin_line"].unique().to_pylist() == [1]


def test_a_ranking_that_loses_records_below_two_responses_is_quarantined_whole():
    # Long format: one record per response; record 2 is faulty, leaving K = 1 for the ranking.
    table = rows((1, "Q", "a", "r1", "A", 1), (2, "Q", "a", "r2", "", 2))
    out = canonicalize(table)
    assert out.records_ok == 0 and out.records_quarantined == 2
    reasons = {r["origin_line"]: r["reason"] for r in out.quarantine.to_pylist()}
    assert "empty response" in reasons[2] and "K=1" in reasons[1]


def test_ids_are_stable_and_response_ids_derive_from_prompt_and_text():
    table = rows((1, "Q", "a", None, "A", 1), (1, "Q", "a", None, "B", 2))
    first, second = canonicalize(table), canonicalize(table)
    assert first.responses["response_id"].to_pylist() == second.responses["response_id"].to_pylist()
    assert len(set(first.responses["response_id"].to_pylist())) == 2


def test_key_codes_agree_across_chunks_and_column_combinations():
    from rewardline.data.keys import key_codes

    chunked = pa.chunked_array([["a", "b"], ["b", "c", "a"]])
    assert key_codes(chunked).tolist() == [0, 1, 1, 2, 0]
    # ("a","b") and ("ab","") must not collide when columns are combined
    assert len(set(key_codes(pa.array(["a", "ab"]), pa.array(["b", ""])).tolist())) == 2


def test_non_finite_and_overflowing_scores_quarantine_their_record():
    """Adapters reject these with the source text; canonicalize is the catch-all for any producer."""
    big = schema.MAX_ABS_SCORE * 10
    table = rows(
        (1, "Q1", "a", "r1", "A", 1, 0.9), (1, "Q1", "a", "r2", "B", 2, -schema.MAX_ABS_SCORE),  # ok
        (2, "Q2", "a", "r3", "C", 1, float("nan")), (2, "Q2", "a", "r4", "D", 2, 0.1),
        (3, "Q3", "a", "r5", "E", 1, float("inf")), (3, "Q3", "a", "r6", "F", 2),
        (4, "Q4", "a", "r7", "G", 1, 0.5), (4, "Q4", "a", "r8", "H", 2, big),
    )
    out = canonicalize(table)
    q = {r["origin_line"]: r for r in out.quarantine.to_pylist()}
    assert sorted(q) == [2, 3, 4] and out.records_ok == 1
    assert all(r["field"] == "score" and "expected a finite number" in r["reason"] for r in q.values())
    assert out.rankings["score"].to_pylist() == [0.9, -schema.MAX_ABS_SCORE]
