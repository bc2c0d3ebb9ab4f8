"""Anchors through ingest -> validate -> pairs, and sources with several judged pairs per (prompt, judge):
the upstream AlpacaEval layout (one file per sample index, the reference re-judged in each) and arena
battles. Fixtures: tests/fixtures/README.md (real records from the shared AlpacaEval annotations)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.data import schema
from rewardline.data.adapters import read_file
from rewardline.data.canonical import canonicalize
from rewardline.data.tables import TARGETS, read_split, read_table, table_path
from rewardline.evaluation.absolute import anchor_comparisons

FIXTURES = Path(__file__).parents[1] / "fixtures"
UPSTREAM = FIXTURES / "alpacaeval_upstream"
runner = CliRunner()


def invoke(*args: str) -> dict:
    result = runner.invoke(app, ["--json", *args, "--params", "absent.yaml"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


def test_upstream_alpaca_eval_layout_ingests_without_quarantine(tmp_path: Path) -> None:
    metrics = invoke("ingest", str(UPSTREAM), "--format", "alpaca-eval", "--out", str(tmp_path / "in"))
    assert metrics["rows_in"] == 15 and metrics["rows_quarantined"] == 0 and metrics["rows_ok"] == 15
    rankings = read_table(table_path(tmp_path / "in", "rankings"))
    responses = read_table(table_path(tmp_path / "in", "responses"))
    # one K = 2 ranking (sample, reference) per judgement: 5 prompts x 3 sample files
    sizes = rankings.group_by("ranking_id").aggregate([("response_id", "count")])
    assert sizes.num_rows == 15 and set(sizes["response_id_count"].to_pylist()) == {2}
    # the reference is stored once per prompt, flagged as the anchor; each sample once
    assert responses.num_rows == 5 * 4
    anchors = responses.filter(pc.field("is_anchor"))
    assert anchors.num_rows == 5 and set(anchors["source"].to_pylist()) == {"gpt-3.5-turbo-0613"}
    assert not any(responses.filter(pc.invert(pc.field("is_anchor")))["source"].to_pylist().count(s) != 5
                   for s in ("allenai/tulu-2-dpo-13b.0", "allenai/tulu-2-dpo-13b.1", "allenai/tulu-2-dpo-13b.2"))
    # id 106 in sample file 1: preference 1.93991 -> the sample (rank 1) beats the reference (rank 2)
    row = [r for r in rankings.to_pylist() if r["ranking_id"].endswith("|allenai/tulu-2-dpo-13b.1")
           and r["origin_line"] == 1]
    assert sorted((r["response_id"].split("/", 1)[1], r["rank"]) for r in row) == [
        ("allenai/tulu-2-dpo-13b.1", 1), ("gpt-3.5-turbo-0613", 2)]


def test_alpaca_eval_anchor_comparisons_do_not_depend_on_the_layout() -> None:
    """The same records in one file or in three give the same sample-vs-reference rankings; only the file
    holding several samples of an instruction adds their K-way ranking (the upstream files add none)."""
    records = [r for i in range(3) for r in json.loads((UPSTREAM / f"tulu-2-dpo-13b.{i}.json").read_text())]
    together = read_file(json.dumps(records).encode(), "all.json", "alpaca-eval").ranked
    apart = pa.concat_tables([read_file((UPSTREAM / f"tulu-2-dpo-13b.{i}.json").read_bytes(), f"{i}.json",
                                        "alpaca-eval").ranked for i in range(3)])
    k_way = pc.starts_with(together["ranking_key"], "samples@")
    assert not pc.any(pc.starts_with(apart["ranking_key"], "samples@")).as_py()  # K = 1 per file: no ranking
    key = ["prompt", "annotator_id", "ranking_key", "response_id", "rank", "score", "is_anchor"]
    anchored = together.filter(pc.invert(k_way))
    assert sorted(anchored.select(key).to_pylist(), key=str) == sorted(apart.select(key).to_pylist(), key=str)
    samples = together.filter(k_way)
    assert samples.num_rows == 5 * 3 and not pc.any(samples["is_anchor"]).as_py()
    # each sample's K-way row carries the record (origin_line) and score of its anchor comparison
    sample_rows = anchored.filter(pc.invert(anchored["is_anchor"]))
    assert sorted(zip(samples["origin_line"].to_pylist(), samples["score"].to_pylist(), strict=True)) == sorted(
        zip(sample_rows["origin_line"].to_pylist(), sample_rows["score"].to_pylist(), strict=True))
    tie = b'[{"instruction":"q","output_1":"ref","generator_1":"r","output_2":"a","generator_2":"g","preference":1.5,' \
          b'"annotator":"j"}]'
    assert read_file(tie, "t.json").ranked["rank"].to_pylist() == [1, 1]


def test_several_samples_per_instruction_in_one_file_give_both_rankings(tmp_path: Path) -> None:
    metrics = invoke("ingest", str(FIXTURES / "alpacaeval_20x3.json"), "--format", "alpaca-eval",
                     "--out", str(tmp_path / "in"))
    assert metrics["rows_in"] == 60 and metrics["rows_ok"] == 60 and metrics["rows_quarantined"] == 0
    rankings = read_table(table_path(tmp_path / "in", "rankings"))
    sizes = rankings.group_by("ranking_id").aggregate([("response_id", "count")])
    k_way = pc.ends_with(sizes["ranking_id"], "|samples@alpacaeval_20x3.json")
    # 60 sample-vs-reference comparisons + one K = 3 ranking of the samples per instruction
    assert pc.sum(k_way).as_py() == 20 and set(sizes.filter(k_way)["response_id_count"].to_pylist()) == {3}
    assert set(sizes.filter(pc.invert(k_way))["response_id_count"].to_pylist()) == {2}
    responses = read_table(table_path(tmp_path / "in", "responses"))
    assert responses.num_rows == 20 * 4 and pc.sum(responses["is_anchor"]).as_py() == 20  # each text once


def _record(text: str, generator: str, preference: float) -> dict:
    return {"instruction": "q", "output_1": "ref", "generator_1": "r", "output_2": text, "generator_2": generator,
            "preference": preference, "annotator": "j"}


def test_a_faulty_record_does_not_quarantine_the_valid_comparison_of_another() -> None:
    """Two samples, one with an empty text: its record is quarantined; the other record keeps its comparison
    with the reference (its K-way ranking, left with K = 1, is dropped) and is counted once, as ok."""
    two = read_file(json.dumps([_record("", "g.0", 1.2), _record("b", "g.1", 1.9)]).encode(), "two.json").ranked
    tables = canonicalize(two)
    assert (tables.records_ok, tables.records_quarantined) == (1, 1)
    assert tables.quarantine["origin_line"].to_pylist() == [1] and tables.quarantine["field"][0].as_py() == "response"
    assert tables.rankings["ranking_id"].unique().to_pylist() == [tables.prompts["prompt_id"][0].as_py() + "|j|g.1"]
    # with three samples the K-way ranking of the two valid ones is kept (g.0, preference 1.2, ranked 3rd, is gone)
    three = [_record("", "g.0", 1.2), _record("b", "g.1", 1.9), _record("c", "g.2", 1.4)]
    tables = canonicalize(read_file(json.dumps(three).encode(), "three.json").ranked)
    assert (tables.records_ok, tables.records_quarantined) == (2, 1)
    k_way = tables.rankings.filter(pc.ends_with(tables.rankings["ranking_id"], "|samples@three.json"))
    assert sorted((r.split("/")[-1], k) for r, k in zip(k_way["response_id"].to_pylist(), k_way["rank"].to_pylist(),
                                                       strict=True)) == [("g.1", 1), ("g.2", 2)]


def test_anchor_flows_through_validate_and_pairs_to_zero_utility(tmp_path: Path) -> None:
    invoke("ingest", str(UPSTREAM), "--format", "alpaca-eval", "--out", str(tmp_path / "in"))
    invoke("validate", str(tmp_path / "in"), "--out", str(tmp_path / "valid"))
    validated = read_table(table_path(tmp_path / "valid", "responses"))
    assert validated.schema.field("is_anchor").type == pa.bool_() and pc.sum(validated["is_anchor"]).as_py() == 5
    invoke("pairs", str(tmp_path / "valid"), "--out", str(tmp_path / "pairs"), "--set", "targets=thurstone")
    targets = read_table(tmp_path / "pairs" / TARGETS).to_pylist()
    anchor_ids = set(validated.filter(pc.field("is_anchor"))["response_id"].to_pylist())
    in_pairs = {t["response_id"] for t in targets} & anchor_ids
    assert in_pairs and all(t["anchored"] for t in targets)
    assert all(t["utility"] == 0.0 and t["se"] == 0.0 for t in targets if t["response_id"] in anchor_ids)
    # each prompt's pairs are sample-vs-reference only
    pairs = pa.concat_tables([read_split(tmp_path / "pairs", s) for s in schema.SPLITS])
    has_anchor = pc.or_(pc.is_in(pairs["response_a_id"], value_set=pa.array(sorted(anchor_ids))),
                        pc.is_in(pairs["response_b_id"], value_set=pa.array(sorted(anchor_ids))))
    assert pairs.num_rows == 15 and pc.all(has_anchor).as_py()
    # the label of each sample-vs-reference pair is the judge's probability, preference - 1 (pairs.anchor_labels:
    # score), and evaluate's absolute calibration scores win_prob against exactly that
    records = [r for i in range(3) for r in json.loads((UPSTREAM / f"tulu-2-dpo-13b.{i}.json").read_text())]
    judge = {(r["instruction"], r["generator_2"]): r["preference"] - 1.0 for r in records}
    prompt_text = dict(zip(*read_table(tmp_path / "pairs" / "prompts").select(["prompt_id", "prompt"])
                           .to_pydict().values(), strict=True))
    source = dict(zip(validated["response_id"].to_pylist(), validated["source"].to_pylist(), strict=True))
    comparisons = anchor_comparisons(pairs, np.zeros(15), np.zeros(15), pa.array(sorted(anchor_ids)))
    sample = np.where(pc.is_in(pairs["response_a_id"], value_set=pa.array(sorted(anchor_ids))).to_numpy(
        zero_copy_only=False), pairs["response_b_id"].to_numpy(zero_copy_only=False),
        pairs["response_a_id"].to_numpy(zero_copy_only=False))
    expected = [judge[(prompt_text[p], source[r])] for p, r in zip(pairs["prompt_id"].to_pylist(), sample,
                                                                    strict=True)]
    np.testing.assert_allclose(comparisons.label, expected, atol=1e-6)  # float32 labels
    assert len({round(x, 3) for x in expected}) > 2  # soft, not 0/1


def test_tables_without_anchor_or_key_columns_read_as_before() -> None:
    ranked = read_file((FIXTURES / "rankings_long.csv").read_bytes(), "rankings_long.csv").ranked
    old = ranked.drop_columns(["is_anchor", "ranking_key"])
    tables = canonicalize(old)
    assert tables.records_quarantined == 0
    assert tables.responses["is_anchor"].null_count == tables.responses.num_rows  # no anchors
    ids = tables.rankings["ranking_id"].to_pylist()
    assert all(i == f"{p}|{a}" for i, p, a in zip(ids, tables.rankings["prompt_id"].to_pylist(),
                                                 tables.rankings["annotator_id"].to_pylist(), strict=True))


def test_pairwise_several_pairs_per_judge_ingest_without_quarantine(tmp_path: Path) -> None:
    source = FIXTURES / "pairwise_several_pairs.jsonl"
    metrics = invoke("ingest", str(source), "--format", "pairwise", "--out", str(tmp_path / "in"))
    assert metrics["rows_in"] == 15 and metrics["rows_quarantined"] == 0
    rankings = read_table(table_path(tmp_path / "in", "rankings"))
    sizes = rankings.group_by("ranking_id").aggregate([("response_id", "count"), ("prompt_id", "count_distinct")])
    assert sizes.num_rows == 15 and set(sizes["response_id_count"].to_pylist()) == {2}
    # 3 battles per (question, judge), the reference answer in each: stored once per question
    responses = read_table(table_path(tmp_path / "in", "responses"))
    assert responses.num_rows == 5 * 4
    per_prompt = np.unique(rankings["prompt_id"].to_numpy(zero_copy_only=False), return_counts=True)[1]
    assert per_prompt.tolist() == [6] * 5


def test_pairwise_repeat_of_the_same_pair_by_the_same_judge_is_a_duplicate() -> None:
    line = (FIXTURES / "pairwise_several_pairs.jsonl").read_text().splitlines()[0]
    swapped = json.loads(line)
    swapped.update(model_a=swapped["model_b"], model_b=swapped["model_a"], response_a=swapped["response_b"],
                   response_b=swapped["response_a"], winner="model_b")  # same battle, sides swapped
    result = read_file(f"{line}\n{json.dumps(swapped)}\n".encode(), "dup.jsonl", "pairwise")
    tables = canonicalize(result.ranked)
    assert tables.records_ok == 1 and tables.records_quarantined == 1
    assert tables.quarantine["reason"][0].as_py().startswith("duplicate")


def test_a_preference_outside_one_to_two_is_quarantined_with_the_value_it_had() -> None:
    """Was: every out-of-range preference (2.5, 0, NaN, Infinity) got the one reason "preference: expected a
    number in [1, 2]", with no word of the value found; the metrics category still drops the value."""
    from rewardline.data.reasons import reason_category

    values = {1: "2.5", 2: "0", 3: "NaN", 4: "-Infinity", 5: "1.25"}
    text = "\n".join(json.dumps(_record(f"s{line}", f"g.{line}", 1.5))[:-1].replace('"preference": 1.5',
                                                                                  f'"preference": {v}') + "}"
                     for line, v in values.items())
    result = read_file(text.encode(), "prefs.jsonl", "alpaca-eval")
    reasons = {r["origin_line"]: (r["field"], r["reason"]) for r in result.quarantine.to_pylist()}
    assert reasons == {line: ("preference", f"preference: expected a number in [1, 2], got {shown}")
                       for line, shown in ((1, "2.5"), (2, "0.0"), (3, "NaN"), (4, "-Infinity"))}
    assert {reason_category(r) for _, r in reasons.values()} == {"preference: expected a number in [1, 2]"}
    assert set(result.ranked["origin_line"].to_pylist()) == {5}  # the valid record is kept
