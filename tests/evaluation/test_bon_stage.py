"""The bon pipeline stage: candidates with gold from the anchor comparisons of the test prompts only,
both gates able to fail, champion curve on the same prompts, skipped (passing) without anchors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES, register_tiny_bundle, save_tiny_reward_model

from rewardline.data import schema
from rewardline.data.tables import write_part, write_table
from rewardline.evaluation.bon import BonConfig
from rewardline.evaluation.bon_stage import anchored_test_candidates, run_bon_stage
from rewardline.modeling.score import score_texts

TEST_PROMPTS = 10  # of the fixture's 20 instructions; the other 10 are train


def build_tables(root: Path, anchors: bool = True) -> tuple[Path, Path, dict]:
    """validated/rankings + pairs/{prompts,responses,test,train} from alpacaeval_20x3.json, laid out as the
    alpaca-eval adapter and the pairs stage write them; returns the dirs and {(prompt, sample): preference − 1}."""
    records = json.loads((FIXTURES / "alpacaeval_20x3.json").read_text())
    prompt_ids = list(dict.fromkeys(r["instruction"] for r in records))
    pid = {p: f"p{i:02d}" for i, p in enumerate(prompt_ids)}
    prompts, responses, rankings, gold = {}, {}, [], {}
    for r in records:
        p = pid[r["instruction"]]
        prompts[p] = {"prompt_id": p, "prompt": r["instruction"], "prompt_messages": None, "category": r["dataset"]}
        ref, sample = f"{p}/{r['generator_1']}", f"{p}/{r['generator_2']}"
        responses[ref] = {"response_id": ref, "prompt_id": p, "response": r["output_1"], "source": r["generator_1"],
                          "is_anchor": anchors}
        responses[sample] = {"response_id": sample, "prompt_id": p, "response": r["output_2"],
                             "source": r["generator_2"], "is_anchor": False}
        score = r["preference"] - 1.0
        gold[(r["instruction"], r["output_2"])] = score
        base = {"prompt_id": p, "annotator_id": "judge", "batch_id": "b", "origin_file": "f", "origin_line": r["id"]}
        anchor_ranking = f"{p}|judge|{r['generator_2']}"
        rankings += [{**base, "ranking_id": anchor_ranking, "response_id": sample, "rank": 1 if score >= 0.5 else 2,
                      "score": score},
                     {**base, "ranking_id": anchor_ranking, "response_id": ref, "rank": 1 if score <= 0.5 else 2,
                      "score": 0.5},
                     {**base, "ranking_id": f"{p}|judge|samples@f", "response_id": sample, "rank": 1, "score": score}]
    validated, pairs = root / "validated", root / "pairs"
    write_table(pa.Table.from_pylist(rankings, schema.RANKINGS), validated / "rankings.parquet")
    write_table(pa.Table.from_pylist(list(prompts.values()), schema.PROMPTS), pairs / "prompts.parquet")
    write_table(pa.Table.from_pylist(list(responses.values()), schema.RESPONSES), pairs / "responses.parquet")
    for split, ids in (("test", list(pid.values())[:TEST_PROMPTS]), ("train", list(pid.values())[TEST_PROMPTS:])):
        rows = [{"prompt_id": p, "response_a_id": f"{p}/a", "response_b_id": f"{p}/b", "label": 1.0, "n_votes": 1,
                 "margin": 0.0, "category": "c", "split": split} for p in ids]
        write_part(pa.Table.from_pylist(rows, schema.PAIRS), pairs, split)
    return validated, pairs, gold


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_reward_model(tmp_path_factory.mktemp("bon-stage-model"), max_length=64)


def test_candidates_are_the_test_prompts_samples_with_the_judges_preference(tmp_path: Path):
    validated, pairs, gold = build_tables(tmp_path)
    c = anchored_test_candidates(validated, pairs)
    assert c is not None and c.n_prompts == TEST_PROMPTS and len(c.responses) == 3 * TEST_PROMPTS
    test_prompts = set(list(dict.fromkeys(p for p, _ in gold))[:TEST_PROMPTS])
    assert set(c.prompts) == test_prompts  # no train prompt, no anchor among the candidates
    np.testing.assert_allclose(c.gold, [gold[(p, r)] for p, r in zip(c.prompts, c.responses, strict=True)])
    assert np.bincount(c.prompt_index).tolist() == [3] * TEST_PROMPTS


def test_stage_runs_both_gates_can_fail_and_the_champion_curve_is_reported(tmp_path: Path, model_dir: Path):
    validated, pairs, _ = build_tables(tmp_path)
    ok = run_bon_stage(model_dir, validated, pairs, tmp_path / "ok", BonConfig(min_bon_gain=-1.0,
                       max_overoptimization=1.0, bootstrap_samples=200), champion_dir=model_dir)
    assert ok["status"] == "ran" and ok["gates_passed"] and ok["prompts"] == TEST_PROMPTS and ok["n_max"] == 3
    assert ok["champion_gold_by_n"] == ok["gold_by_n"]  # the same model as champion: the same curve
    assert "## Champion on the same prompts" in (tmp_path / "ok" / "report.md").read_text()
    assert json.loads((tmp_path / "ok" / "gates.json").read_text())["passed"] is True
    assert (tmp_path / "ok" / "bon.png").stat().st_size > 0 and (tmp_path / "ok" / "bon.csv").exists()
    strict = run_bon_stage(model_dir, validated, pairs, tmp_path / "strict",
                           BonConfig(min_bon_gain=1.0, max_overoptimization=1.0, bootstrap_samples=200))
    assert not strict["gates"]["min_bon_gain"]["passed"] and strict["gates"]["max_overoptimization"]["passed"]


def test_max_overoptimization_fails_when_the_proxys_pick_loses_gold(tmp_path: Path, model_dir: Path):
    """Gold rigged from the tiny model's own scores: the top-proxy candidate of each prompt is the worst,
    the second the best, so gold rises from N = 1 to 2 and falls at N = 3 (Goodhart)."""
    validated, pairs, _ = build_tables(tmp_path)
    c = anchored_test_candidates(validated, pairs)
    proxy = score_texts(model_dir, c.prompts, c.responses)
    rigged = {}
    for p in range(c.n_prompts):
        rows = np.flatnonzero(c.prompt_index == p)
        by_proxy = rows[np.argsort(-proxy[rows])]
        rigged.update({(c.prompts[by_proxy[0]], c.responses[by_proxy[0]]): 0.0,
                       (c.prompts[by_proxy[1]], c.responses[by_proxy[1]]): 1.0,
                       (c.prompts[by_proxy[2]], c.responses[by_proxy[2]]): 0.5})
    rankings = pq.read_table(validated / "rankings.parquet").to_pylist()
    texts = {r["response_id"]: r["response"] for r in pq.read_table(pairs / "responses.parquet").to_pylist()}
    prompt_text = {r["prompt_id"]: r["prompt"] for r in pq.read_table(pairs / "prompts.parquet").to_pylist()}
    for row in rankings:
        key = (prompt_text[row["prompt_id"]], texts[row["response_id"]])
        if key in rigged:
            row["score"] = rigged[key]
    write_table(pa.Table.from_pylist(rankings, schema.RANKINGS), validated / "rankings.parquet")
    config = BonConfig(min_bon_gain=-1.0, max_overoptimization=0.05, bootstrap_samples=200)
    metrics = run_bon_stage(model_dir, validated, pairs, tmp_path / "out", config)
    assert metrics["gold_by_n"]["2"] > metrics["gold_by_n"]["3"]
    assert metrics["overoptimization"] > 0.05 and not metrics["gates"]["max_overoptimization"]["passed"]
    assert not metrics["gates_passed"]


def test_without_anchored_candidates_the_stage_is_skipped_and_passes(tmp_path: Path, model_dir: Path):
    validated, pairs, _ = build_tables(tmp_path, anchors=False)
    assert anchored_test_candidates(validated, pairs) is None
    metrics = run_bon_stage(model_dir, validated, pairs, tmp_path / "out", BonConfig(min_bon_gain=1.0))
    assert metrics["status"] == "skipped" and metrics["gates_passed"] is True
    gates = json.loads((tmp_path / "out" / "gates.json").read_text())
    assert gates["passed"] and all(g["skipped"] for g in gates["gates"].values())
    assert "skipped: no test prompt has two or more candidates" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "bon.png").stat().st_size > 0  # the declared plots exist (dvc plots show)


def test_a_champion_name_close_to_a_registered_one_is_said_in_the_bon_report(tmp_path: Path, model_dir: Path,
                                                                                monkeypatch: pytest.MonkeyPatch):
    """``evaluate.champion_model: models:/reward-modle@champion`` (``reward-model`` registered): evaluate's gates.json
    and report.md said "did you mean 'reward-model'?", the bon stage only on stderr; its metrics.json and report.md
    now hold the same reason (resolved_champion's), with or without anchored candidates."""
    import runpy
    import shutil

    import yaml

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    register_tiny_bundle(tmp_path, seed=3)
    monkeypatch.chdir(tmp_path)
    build_tables(tmp_path / "data")
    shutil.copytree(model_dir, tmp_path / "models" / "reward-model")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {
        "champion_model": "models:/reward-modle@champion", "min_bon_gain": -1.0, "max_overoptimization": 1.0,
        "bootstrap_samples": 50}}))
    said = "no champion: evaluate.champion_model models:/reward-modle@champion: no registered model 'reward-modle'"
    for anchors in (True, False):
        build_tables(tmp_path / "data", anchors=anchors)
        runpy.run_path(str(Path(__file__).parents[2] / "stages" / "bon.py"), run_name="bon")["main"]()
        metrics = json.loads((tmp_path / "reports" / "bon" / "metrics.json").read_text())
        assert metrics["status"] == ("ran" if anchors else "skipped")
        assert metrics["champion_missing_reason"].startswith(said), metrics
        assert "did you mean 'reward-model'?" in metrics["champion_missing_reason"]
        assert f"## Champion\n\n{said}" in (tmp_path / "reports" / "bon" / "report.md").read_text()
