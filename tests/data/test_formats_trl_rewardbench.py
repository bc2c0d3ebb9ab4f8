"""TRL's four preference shapes (+ margin) and RewardBench v1 / v2 rows: detection, zero quarantine,
texts, ranks, and the faults each adapter quarantines (fixtures: tests/fixtures/README.md)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.compute as pc
import pytest

from rewardline.data import schema as S
from rewardline.data.adapters import detect_format, read_file
from rewardline.data.adapters.trl import split_shared_prefix
from rewardline.data.canonical import canonicalize
from rewardline.data.ingest import IngestConfig, Source, run_ingest
from rewardline.pairs.expand import PairsConfig, build_pairs

FIXTURES = Path(__file__).parents[1] / "fixtures"
SHAPES = {  # file -> (detected format, records)
    "trl_standard_explicit.jsonl": ("trl", 10),
    "trl_standard_implicit.jsonl": ("trl", 10),
    "trl_conversational_explicit.jsonl": ("trl", 10),
    "trl_conversational_explicit.parquet": ("trl", 10),
    "trl_conversational_implicit.jsonl": ("trl", 10),
    "trl_margin.jsonl": ("trl", 10),
    "rewardbench_v1.jsonl": ("rewardbench", 24),
    "rewardbench2_bo4.jsonl": ("rewardbench", 12),
}


def source_records(name: str) -> list[dict]:
    return [orjson.loads(line) for line in (FIXTURES / name).read_bytes().splitlines() if line.strip()]


def check_accounting(result) -> None:
    kept = set(result.ranked["origin_line"].to_pylist())
    bad = result.quarantine["origin_line"].to_pylist()
    assert len(set(bad)) == len(bad) and not kept & set(bad)
    assert len(kept) + len(bad) == result.records_in
    assert result.ranked.schema.equals(S.RANKED_RESPONSES)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_shape_is_detected_and_read_with_zero_quarantine(name: str) -> None:
    fmt, n = SHAPES[name]
    data = (FIXTURES / name).read_bytes()
    assert detect_format(name, data) == fmt
    for given in ("auto", fmt):
        result = read_file(data, name, fmt=given)
        assert result.records_in == n and result.quarantine.num_rows == 0
        check_accounting(result)
        tables = canonicalize(result.ranked)
        assert tables.records_ok == n and tables.records_quarantined == 0


def test_ingest_stage_takes_all_shapes_with_zero_quarantine(tmp_path: Path) -> None:
    sources = [Source(path=str(FIXTURES / name)) for name in sorted(SHAPES)]
    metrics = run_ingest(IngestConfig(sources=sources, max_quarantine_share=0.0), tmp_path / "out")
    total = sum(n for _, n in SHAPES.values())
    assert (metrics["rows_in"], metrics["rows_ok"], metrics["rows_quarantined"]) == (total, total, 0)
    assert metrics["rows_in_by_format"] == {"trl": 60, "rewardbench": 36}
    assert metrics["gates_passed"] is True


@pytest.mark.parametrize("name", ["trl_standard_explicit.jsonl", "trl_margin.jsonl",
                                  "trl_conversational_explicit.jsonl", "trl_conversational_implicit.jsonl"])
def test_trl_responses_and_prompts_are_the_rows_texts(name: str) -> None:
    ranked = read_file((FIXTURES / name).read_bytes(), name).ranked.to_pylist()
    for i, record in enumerate(source_records(name)):
        chosen, rejected = ranked[2 * i], ranked[2 * i + 1]
        assert (chosen["rank"], rejected["rank"]) == (1, 2)
        assert chosen["prompt"] == rejected["prompt"] and chosen["annotator_id"] == f"trl:{name}:{i + 1}"
        if isinstance(record["chosen"], str):
            assert (chosen["response"], rejected["response"]) == (record["chosen"], record["rejected"])
            assert chosen["prompt"] == record["prompt"]
            turns = record["prompt"].count("\n\nHuman:") + record["prompt"].count("\n\nAssistant:") - 1
            assert (chosen["prompt_messages"] is None) == (turns == 1)
            continue
        assert (chosen["response"], rejected["response"]) == (record["chosen"][-1]["content"],
                                                             record["rejected"][-1]["content"])
        messages = record.get("prompt") or record["chosen"][:-1]
        if len(messages) == 1:
            assert chosen["prompt"] == messages[0]["content"] and chosen["prompt_messages"] is None
        else:
            assert chosen["prompt_messages"] == messages and chosen["prompt"].endswith("\n\nAssistant:")


def test_trl_implicit_standard_prompt_is_the_shared_prefix_cut_at_a_word() -> None:
    name = "trl_standard_implicit.jsonl"
    ranked = read_file((FIXTURES / name).read_bytes(), name).ranked.to_pylist()
    exact = 0
    for i, record in enumerate(source_records(name)):
        chosen, rejected = ranked[2 * i], ranked[2 * i + 1]
        assert chosen["prompt"] + chosen["response"] == record["chosen"]
        assert rejected["prompt"] + rejected["response"] == record["rejected"]
        assert chosen["prompt"].startswith("<|user|>\n") and chosen["prompt"][-1].isspace()
        exact += chosen["prompt"].endswith("<|assistant|>\n")
    assert exact == 8  # rows 3 and 8: both answers start with "I ", which TRL's rule puts in the prompt
    assert split_shared_prefix(["Q: x\nA: yes it is"], ["Q: x\nA: yet"]) == (["Q: x\nA: "], ["yes it is"], ["yet"])
    assert split_shared_prefix(["same"], ["same"]) == (["same"], [""], [""])


def test_trl_margin_becomes_the_pairs_margin() -> None:
    name = "trl_margin.jsonl"
    result = read_file((FIXTURES / name).read_bytes(), name)
    margins = [r["margin"] for r in source_records(name)]
    assert result.ranked["score"].to_pylist() == [v for m in margins for v in (m, 0.0)]
    tables = canonicalize(result.ranked)
    pairs, _ = build_pairs(tables.rankings, tables.prompts, PairsConfig(margin="score"))
    assert sorted(pairs["margin"].to_pylist()) == sorted(margins)
    assert pc.all(pc.equal(pairs["label"], 1.0)).as_py()


def test_rewardbench_v1_rows() -> None:
    name = "rewardbench_v1.jsonl"
    ranked = read_file((FIXTURES / name).read_bytes(), name).ranked.to_pylist()
    for i, record in enumerate(source_records(name)):
        chosen, rejected = ranked[2 * i], ranked[2 * i + 1]
        assert (chosen["response"], chosen["rank"], chosen["source"]) == (record["chosen"], 1, "hh-chosen")
        assert (rejected["response"], rejected["rank"], rejected["source"]) == (record["rejected"], 2, "hh-rejected")
        assert chosen["prompt_id"] == str(record["id"]) and chosen["category"] == record["subset"]
        assert chosen["annotator_id"] == "rewardbench"


def test_rewardbench2_best_of_4_is_one_chosen_over_three_tied_rejected() -> None:
    name = "rewardbench2_bo4.jsonl"
    result = read_file((FIXTURES / name).read_bytes(), name)
    ranked = result.ranked.to_pylist()
    assert len(ranked) == 48
    for i, record in enumerate(source_records(name)):
        rows = ranked[4 * i : 4 * i + 4]
        assert [r["rank"] for r in rows] == [1, 2, 2, 2]
        assert [r["response"] for r in rows] == record["chosen"] + record["rejected"]
        assert {r["prompt_id"] for r in rows} == {record["id"]} and rows[0]["category"] == record["subset"]
    tables = canonicalize(result.ranked)
    pairs, counts = build_pairs(tables.rankings, tables.prompts, PairsConfig())
    assert pairs.num_rows == 36 and counts["ties_dropped"] == 36  # chosen over each rejected; rejected tie


def test_trl_faults_are_quarantined_with_a_reason() -> None:
    def line(**row: object) -> bytes:
        return orjson.dumps(row)

    lines = [
        line(prompt="p", chosen="a", rejected="b"),
        line(prompt="p", chosen="a"),
        line(prompt="p", chosen="a", rejected="b", margin="wide"),
        b'{"prompt": "p", "chosen": "a", "rejected": "b", "margin": NaN}',
        line(prompt="p", chosen=5, rejected="b"),
    ]
    result = read_file(b"\n".join(lines), "t.jsonl", fmt="trl")
    check_accounting(result)
    reasons = {r["origin_line"]: (r["field"], r["reason"]) for r in result.quarantine.to_pylist()}
    assert sorted(reasons) == [2, 3, 4, 5]
    assert "missing required field 'rejected'" in reasons[2][1]
    assert reasons[3][0] == "margin" and reasons[4][0] == "margin"

    conv = [
        line(prompt=[{"role": "user", "content": "q"}], chosen=[{"role": "assistant", "content": "a"}],
             rejected=[{"role": "assistant", "content": "b"}]),
        line(prompt=[{"role": "user", "content": "q"}], chosen=[{"role": "assistant", "content": "a"}],
             rejected=[{"role": "user", "content": "b"}]),
        line(chosen=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
             rejected=[{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]),
        line(chosen=[{"role": "user", "content": "q"}], rejected=[{"role": "user", "content": "q"}]),
        line(chosen=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
             rejected=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]),
    ]
    result = read_file(b"\n".join(conv), "c.jsonl")
    check_accounting(result)
    reasons = {r["origin_line"]: r["reason"] for r in result.quarantine.to_pylist()}
    assert sorted(reasons) == [2, 3, 4]
    assert "expected one assistant message" in reasons[2]
    assert "do not share the messages" in reasons[3] and "no assistant turn" in reasons[4]
    assert set(result.ranked["origin_line"].to_pylist()) == {1, 5}


def test_trl_row_whose_chosen_is_its_rejected_is_quarantined_saying_so() -> None:
    """A TRL row has no response ids: it was quarantined by canonicalize as "response_id: duplicate: response
    'r-...' already ranked in ranking ..." (the implicit shape as "empty response text"), naming a field the row
    does not have."""
    msgs = lambda *turns: [{"role": r, "content": c} for r, c in turns]  # noqa: E731
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    good_conv = {"chosen": msgs(("user", "q"), ("assistant", "a")), "rejected": msgs(("user", "q"), ("assistant", "b"))}
    cases = [
        ({"prompt": "p", "chosen": "same", "rejected": "same"}, good),
        ({"chosen": "Q: why? Because.", "rejected": "Q: why? Because."}, good),
        ({"chosen": msgs(("user", "q"), ("assistant", "a")), "rejected": msgs(("user", "q"), ("assistant", "a"))},
         good_conv),
    ]
    for i, (row, ok) in enumerate(cases):
        result = read_file(b"\n".join(orjson.dumps(r) for r in [row, ok]), "t.jsonl", fmt="trl")
        check_accounting(result)
        faults = [(r["origin_line"], r["field"], r["reason"]) for r in result.quarantine.to_pylist()]
        assert faults == [(1, "rejected", "rejected: the same response as chosen; expected two different "
                                          "responses")], (i, faults)
        assert set(result.ranked["origin_line"].to_pylist()) == {2}


def test_trl_row_with_an_empty_side_names_that_side() -> None:
    """An empty chosen or rejected (or an implicit one that is all prompt) was quarantined by canonicalize under
    field ``response``, which a TRL row does not have, without saying which side."""
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    cases = [({"prompt": "p", "chosen": "", "rejected": "b"}, "chosen"),
             ({"prompt": "p", "chosen": "a", "rejected": "  "}, "rejected"),
             ({"chosen": "Question: why", "rejected": "Question: why not"}, "chosen")]  # chosen is all prompt
    for row, side in cases:
        result = read_file(b"\n".join(orjson.dumps(r) for r in [row, good]), "t.jsonl", fmt="trl")
        check_accounting(result)
        faults = [(r["origin_line"], r["field"], r["reason"]) for r in result.quarantine.to_pylist()]
        assert faults == [(1, side, f"{side}: empty response text; expected a non-empty string")], (row, faults)


def test_rewardbench_faults_are_quarantined_with_a_reason() -> None:
    rows = [
        {"id": "a", "prompt": "p", "chosen": ["x"], "rejected": ["y", "z"], "subset": "Math", "num_correct": 1},
        {"id": "b", "prompt": "p", "chosen": ["x"], "rejected": [], "subset": "Math"},
        {"id": "c", "prompt": "p", "chosen": ["x", "w"], "rejected": ["y"], "subset": "Math", "num_correct": 1},
        {"id": "d", "chosen": ["x"], "rejected": ["y"], "subset": "Math"},
        {"id": "e", "prompt": "p", "chosen": ["x"], "rejected": ["y", "y", "z"], "subset": "Math"},
    ]
    result = read_file(b"\n".join(orjson.dumps(r) for r in rows), "rb.jsonl")
    check_accounting(result)
    reasons = {r["origin_line"]: r["reason"] for r in result.quarantine.to_pylist()}
    assert sorted(reasons) == [2, 3, 4]
    assert "expected a non-empty list" in reasons[2] and "num_correct" in reasons[3]
    assert "missing required field 'prompt'" in reasons[4]
    kept = [r for r in result.ranked.to_pylist() if r["origin_line"] == 5]
    assert [(r["response"], r["rank"]) for r in kept] == [("x", 1), ("y", 2), ("z", 2)]  # repeated "y" kept once
