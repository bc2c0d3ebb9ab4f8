"""Ranking → comparison expansion, aggregation over annotators, and the split."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pyarrow as pa
import pytest

from rewardline.data import schema
from rewardline.errors import ConfigError
from rewardline.pairs.expand import PairsConfig, build_pairs, comparison_indices


def rankings_table(rankings: dict[tuple[str, str], dict[str, int]], scores: dict[str, float] | None = None):
    rows = []
    for (prompt, annotator), ranks in rankings.items():
        for rid, rank in ranks.items():
            rows.append({"ranking_id": f"{prompt}|{annotator}", "prompt_id": prompt, "annotator_id": annotator,
                         "response_id": rid, "rank": rank, "score": (scores or {}).get(rid)})
    return schema.conform(pa.Table.from_pylist(rows), schema.RANKINGS)


def prompts_table(*ids: str) -> pa.Table:
    return schema.conform(pa.Table.from_pylist([{"prompt_id": p, "prompt": p, "category": f"cat-{p}"}
                                                for p in ids]), schema.PROMPTS)


def as_dict(pairs: pa.Table) -> dict[tuple[str, str], tuple[float, int, float]]:
    return {(r["response_a_id"], r["response_b_id"]): (r["label"], r["n_votes"], r["margin"])
            for r in pairs.to_pylist()}


def test_comparison_indices_are_all_within_group_pairs():
    sizes = np.array([3, 2, 4, 1])
    i, j = comparison_indices(sizes)
    offsets = [0, 3, 5, 9]
    expected = {(o + a, o + b) for o, k in zip(offsets, sizes, strict=True) for a, b in combinations(range(k), 2)}
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == expected and len(i) == 3 + 1 + 6


def test_one_ranking_gives_c_k_2_comparisons_oriented_to_the_winner():
    table = rankings_table({("p", "a"): {"x": 2, "y": 1, "z": 3, "w": 4}})
    pairs, counts = build_pairs(table, prompts_table("p"), PairsConfig())
    got = as_dict(pairs)
    assert counts["comparisons"] == 6 and len(got) == 6
    assert set(got) == {("y", "x"), ("y", "z"), ("y", "w"), ("x", "z"), ("x", "w"), ("z", "w")}
    assert all(label == 1.0 and votes == 1 for label, votes, _ in got.values())
    assert pairs["category"].unique().to_pylist() == ["cat-p"]


def test_soft_labels_aggregate_votes_across_annotators_and_ties():
    table = rankings_table({
        ("p", "a1"): {"x": 1, "y": 2, "z": 3},
        ("p", "a2"): {"x": 1, "y": 2, "z": 3},
        ("p", "a3"): {"x": 2, "y": 1, "z": 2},  # y > x, x ~ z tie
    })
    skip = as_dict(build_pairs(table, prompts_table("p"), PairsConfig(ties="skip"))[0])
    assert skip[("x", "y")][:2] == (pytest.approx(2 / 3), 3)
    assert skip[("y", "z")][:2] == (1.0, 3)
    assert skip[("x", "z")][:2] == (1.0, 2)  # the tie vote is dropped
    half = as_dict(build_pairs(table, prompts_table("p"), PairsConfig(ties="half"))[0])
    assert half[("x", "z")][:2] == (pytest.approx(2.5 / 3), 3)


def test_margins_from_scores_and_rank_gaps():
    table = rankings_table({("p", "a"): {"x": 1, "y": 2, "z": 3}}, scores={"x": 0.9, "y": 0.5, "z": None})
    score = as_dict(build_pairs(table, prompts_table("p"), PairsConfig(margin="score", margin_scale=2.0))[0])
    assert score[("x", "y")][2] == pytest.approx(0.8)  # |0.9 - 0.5| * 2
    assert score[("x", "z")][2] == pytest.approx(2.0)  # no score for z: rank gap 2/(K-1) = 1, * 2
    gap = as_dict(build_pairs(table, prompts_table("p"), PairsConfig(margin="rank_gap"))[0])
    assert gap[("x", "y")][2] == pytest.approx(0.5) and gap[("x", "z")][2] == pytest.approx(1.0)


def anchor_responses(*anchors: str) -> pa.Table:
    return pa.table({"response_id": list(anchors), "is_anchor": [True] * len(anchors)})


def test_a_soft_judgement_against_the_anchor_is_the_pair_label():
    """K = 2 rankings (sample, anchor) whose sample carries the judge's P(sample beats anchor) as its score."""
    table = rankings_table({
        ("p", "j1|x"): {"x": 1, "ref": 2},  # x: 0.8, y: 0.3 (the anchor wins), z: 0.5 (indifferent)
        ("p", "j1|y"): {"y": 2, "ref": 1},
        ("p", "j1|z"): {"z": 1, "ref": 1},
        ("p", "j2|x"): {"x": 1, "ref": 2},  # a second judge on x: 0.6 -> mean 0.7 over 2 votes
        ("q", "j1|w"): {"w": 1, "ref-q": 2},  # w's score 3.0 is no probability: the ranks vote
        ("q", "j1|k3"): {"w": 1, "v": 2, "ref-q": 3},  # K = 3 with the anchor: the ranks vote
    }, scores={"x": 0.8, "y": 0.3, "z": 0.5, "w": 3.0, "v": 0.4, "ref": 0.5, "ref-q": 0.5})
    table = table.set_column(table.schema.get_field_index("score"), "score",
                             pa.array([0.6 if r["annotator_id"] == "j2|x" and r["response_id"] == "x"
                                       else r["score"] for r in table.to_pylist()], pa.float64()))
    responses = anchor_responses("ref", "ref-q")
    soft = as_dict(build_pairs(table, prompts_table("p", "q"), PairsConfig(), responses)[0])
    assert soft[("x", "ref")][:2] == (pytest.approx(0.7), 2)
    assert soft[("ref", "y")][:2] == (pytest.approx(0.7), 1)  # oriented to the majority: the anchor, 1 - 0.3
    assert soft[("ref", "z")][:2] == (0.5, 1) or soft[("z", "ref")][:2] == (0.5, 1)  # kept: not a tied rank
    assert soft[("w", "ref-q")][:2] == (1.0, 2) and soft[("v", "ref-q")][:2] == (1.0, 1)
    hard = as_dict(build_pairs(table, prompts_table("p", "q"), PairsConfig(anchor_labels="rank"), responses)[0])
    assert hard[("x", "ref")][:2] == (1.0, 2) and hard[("ref", "y")][:2] == (1.0, 1)
    assert not any("z" in pair for pair in hard)  # the tied ranks are skipped (ties: skip)
    without = as_dict(build_pairs(table, prompts_table("p", "q"), PairsConfig())[0])  # no anchors known
    assert without == hard


def test_split_is_by_prompt_deterministic_and_stable_when_data_grows():
    prompts = [f"prompt-{i}" for i in range(600)]
    table = rankings_table({(p, "a"): {f"{p}-r1": 1, f"{p}-r2": 2} for p in prompts})
    pairs, _ = build_pairs(table, prompts_table(*prompts), PairsConfig())
    split_of = dict(zip(pairs["prompt_id"].to_pylist(), pairs["split"].to_pylist(), strict=True))
    shares = {s: list(split_of.values()).count(s) / len(prompts) for s in schema.SPLITS}
    assert abs(shares["train"] - 0.8) < 0.06 and abs(shares["val"] - 0.1) < 0.04
    # More data arrives (new prompts and a second annotator): no prompt changes split.
    more = {(p, "a"): {f"{p}-r1": 1, f"{p}-r2": 2} for p in [*prompts, *[f"new-{i}" for i in range(50)]]}
    more.update({(p, "b"): {f"{p}-r1": 2, f"{p}-r2": 1} for p in prompts[:100]})
    grown, _ = build_pairs(rankings_table(more), prompts_table(*prompts, *[f"new-{i}" for i in range(50)]),
                           PairsConfig())
    for prompt, split in zip(grown["prompt_id"].to_pylist(), grown["split"].to_pylist(), strict=True):
        assert split_of.get(prompt, split) == split


def test_bad_params_name_the_key():
    with pytest.raises(ConfigError, match="pairs.ties"):
        PairsConfig(ties="maybe").check()


def reference_hash64(text: str) -> int:
    """Plain-Python transcription of the documented hash64, one string at a time."""
    mask = (1 << 64) - 1
    data = text.encode()
    h = 0x9E3779B97F4A7C15
    for i in range(0, len(data), 8):
        word = int.from_bytes(data[i : i + 8].ljust(8, b"\0"), "little")
        x = ((h ^ word) * 0xFF51AFD7ED558CCD) & mask
        h = x ^ (x >> 32)
    h ^= len(data)
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & mask
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & mask
    return h ^ (h >> 33)


def test_vectorised_hash_equals_its_definition_for_every_length_and_alignment():
    from rewardline.data.hashing import hash64, hex_ids

    rng = np.random.default_rng(0)
    texts = ["", "a", "héllo wörld", "prompt-1", "prompt-2"] + [
        "".join(rng.choice(list("abcdefgh é€"), size=n)) for n in rng.integers(0, 70, size=300)
    ]
    assert hash64(texts).tolist() == [reference_hash64(t) for t in texts]
    assert hash64(pa.chunked_array([texts[:100], texts[100:]])).tolist() == hash64(texts).tolist()
    assert hex_ids(["a"], "p-").to_pylist() == [f"p-{reference_hash64('a'):016x}"]


def test_params_numbers_that_yaml_reads_as_strings_are_converted():
    import yaml

    from rewardline.config import build

    config = build(PairsConfig, yaml.safe_load("margin_scale: 1e-1\nval_fraction: 0"), name="pairs")
    assert config.margin_scale == pytest.approx(0.1) and isinstance(config.val_fraction, float)
    with pytest.raises(ConfigError, match="pairs.margin_scale: 'lots' is not a number"):
        build(PairsConfig, {"margin_scale": "lots"}, name="pairs")


def test_pairs_on_an_ingest_output_or_a_failed_validate_output_warns_and_still_builds(tmp_path, caplog):
    """The pairs stage reads a validate output; an ingest output or a validate output whose gate failed is used
    (same tables) with a warning naming what was skipped or failed, and a passed validate output gives none."""
    from pathlib import Path

    from rewardline.data.ingest import IngestConfig, Source, run_ingest
    from rewardline.pairs.expand import run_pairs
    from rewardline.validation.validate import ValidateConfig, run_validate

    fixture = Path(__file__).parents[1] / "fixtures" / "trl_standard_explicit.jsonl"
    run_ingest(IngestConfig(sources=[Source(path=str(fixture), format="trl")]), tmp_path / "ing")
    run_validate(tmp_path / "ing", tmp_path / "passed", ValidateConfig())
    failed = run_validate(tmp_path / "ing", tmp_path / "failed", ValidateConfig(require_overlap=True))
    assert not failed["gates_passed"]  # no prompt is ranked by two annotators
    warnings = {}
    for name in ("ing", "failed", "passed"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="rewardline.pairs.expand"):
            metrics = run_pairs(tmp_path / name, tmp_path / f"pairs-{name}", PairsConfig())
        assert sum(metrics[f"pairs_{split}"] for split in schema.SPLITS) == 10
        warnings[name] = caplog.text
    assert "is an ingest output, not validated" in warnings["ing"]
    assert "its validate gate failed (min_alpha" in warnings["failed"] and "report.md" in warnings["failed"]
    assert warnings["passed"] == ""


def test_responses_with_one_text_compare_as_one():
    """Two samples of a prompt that came out identical (x, x2; AlpacaEval has such): ingest gives them one
    ``text_hash``; a judge's preference between them is dropped (it teaches nothing, and a reward model scores
    them equal by construction), and their comparisons with y aggregate into one pair of texts. Without
    ``text_hash`` (older tables) the ids are compared, as before."""
    from rewardline.data.canonical import canonicalize

    ranked = schema.conform(pa.Table.from_pylist([
        {"prompt": "p", "annotator_id": annotator, "response_id": rid, "response": text, "rank": rank,
         "origin_file": "f", "origin_line": line}
        for line, annotator, ranks in ((1, "a1", {"x": 1, "x2": 2, "y": 3}), (2, "a2", {"y": 1, "x2": 2}))
        for rid, rank in ranks.items()
        for text in [{"x": "same words", "x2": "same words", "y": "other words"}[rid]]]), schema.RANKED_RESPONSES)
    tables = canonicalize(ranked)
    text_hash = dict(zip(tables.responses["response_id"].to_pylist(), tables.responses["text_hash"].to_pylist(),
                         strict=True))
    x, x2, y = (f"{tables.prompts['prompt_id'][0]}/{rid}" for rid in ("x", "x2", "y"))
    assert text_hash[x] == text_hash[x2] != text_hash[y]

    pairs, counts = build_pairs(tables.rankings, tables.prompts, PairsConfig(), tables.responses)
    assert counts["comparisons"] == 4 and counts["identical_texts_dropped"] == 1
    # a1: x > y and x2 > y; a2: y > x2 -> one pair of the two texts, 2 of its 3 votes for "same words"
    [(pair, value)] = as_dict(pairs).items()
    assert pair in ((x, y), (x2, y)) and value[:2] == (pytest.approx(2 / 3), 3)
    by_id = build_pairs(tables.rankings, tables.prompts, PairsConfig(), tables.responses.drop_columns(["text_hash"]))
    assert len(by_id[0]) == 3 and by_id[1]["identical_texts_dropped"] == 0
