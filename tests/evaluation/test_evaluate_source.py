"""``rewardline evaluate --data SRC`` on raw benchmark files: every row covered, and the accuracies equal
those computed by hand from ``rewardline score`` on the same rows (tiny seeded BERT reward model)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from conftest import save_tiny_reward_model
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.data.tables import read_split

FIXTURES = Path(__file__).parents[1] / "fixtures"
RELAXED = ["--params", "absent.yaml", "--set", "min_accuracy=0", "--set", "max_ece_calibrated=1",
           "--set", "max_length_bias=1", "--set", "bootstrap_samples=200"]  # fmt: skip
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_reward_model(tmp_path_factory.mktemp("source-model"), max_length=64)


def evaluate(model: Path, data: Path, out: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["evaluate", "--model", str(model), "--data", str(data), "--out", str(out),
                                 *extra, *RELAXED])
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())


def scored_rows(model: Path, records: list[dict], tmp_path: Path) -> list[dict]:
    """Every record's chosen and rejected responses scored by ``rewardline score``: [{chosen: [r], rejected: [r]}]."""
    side = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
    rows = [{"prompt": r["prompt"], "response": text, "record": i, "side": name}
            for i, r in enumerate(records) for name in ("chosen", "rejected") for text in side(r[name])]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["score", "--model", str(model), "--input", str(tmp_path / "in.jsonl"),
                                 "--out", str(tmp_path / "scored.jsonl")])
    assert result.exit_code == 0, result.output
    out = [{"chosen": [], "rejected": []} for _ in records]
    for row in map(json.loads, (tmp_path / "scored.jsonl").read_text().splitlines()):
        out[row["record"]][row["side"]].append(row["reward"])
    return out


def records(name: str) -> list[dict]:
    return [orjson.loads(line) for line in (FIXTURES / name).read_bytes().splitlines() if line.strip()]


def test_rewardbench_v1_file_every_row_and_accuracies_match_score_outputs(tiny_model: Path, tmp_path: Path) -> None:
    rows = records("rewardbench_v1.jsonl")
    metrics = evaluate(tiny_model, FIXTURES / "rewardbench_v1.jsonl", tmp_path / "eval")
    assert metrics["data"]["rows_in"] == metrics["data"]["rows_evaluated"] == len(rows) == 24
    assert metrics["data"]["rows_quarantined"] == 0 and metrics["data"]["formats"] == {"rewardbench": 24}
    assert metrics["n_pairs"] == 24 and metrics["n_prompts"] == 24 and metrics["ties_excluded"] == 0

    scores = scored_rows(tiny_model, rows, tmp_path)
    credit = np.array([0.5 * (1 + np.sign(s["chosen"][0] - s["rejected"][0])) for s in scores])
    assert metrics["accuracy"] == pytest.approx(credit.mean())
    by_subset = defaultdict(list)
    for r, c in zip(rows, credit, strict=True):
        by_subset[r["subset"]].append(c)
    assert {k: v["accuracy"] for k, v in metrics["accuracy_by_category"].items()} == pytest.approx(
        {k: float(np.mean(v)) for k, v in by_subset.items()})
    for v in metrics["accuracy_by_category"].values():
        assert v["ci_low"] <= v["accuracy"] <= v["ci_high"] and v["n_pairs"] == 3

    acc = {k: float(np.mean(v)) for k, v in by_subset.items()}  # RewardBench v1 weights of the 8 subsets present
    sections = {
        "Chat": (acc["alpacaeval-easy"] * 100 + acc["mt-bench-med"] * 40) / 140,
        "Chat Hard": (acc["llmbar-natural"] * 100 + acc["mt-bench-hard"] * 37) / 137,
        "Safety": (acc["refusals-dangerous"] * 100 + acc["xstest-should-respond"] * 250) / 350,
        "Reasoning": (acc["math-prm"] * 984 + acc["hep-python"] * 164) / 1148,
    }
    assert metrics["rewardbench"]["sections"] == pytest.approx(sections)
    assert metrics["rewardbench"]["score"] == pytest.approx(np.mean(list(sections.values())))
    assert "best_of_n" not in metrics  # K = 2 everywhere


def test_rewardbench2_best_of_4_share_matches_score_outputs(tiny_model: Path, tmp_path: Path) -> None:
    rows = records("rewardbench2_bo4.jsonl")
    metrics = evaluate(tiny_model, FIXTURES / "rewardbench2_bo4.jsonl", tmp_path / "eval", "--format", "rewardbench")
    assert metrics["data"]["rows_in"] == metrics["data"]["rows_evaluated"] == 12
    assert metrics["n_pairs"] == 36 and metrics["data"]["tied_comparisons_skipped"] == 36
    scores = scored_rows(tiny_model, rows, tmp_path)
    best = np.array([float(s["chosen"][0] > max(s["rejected"])) for s in scores])
    pairwise = np.array([float(s["chosen"][0] > r) for s in scores for r in s["rejected"]])
    assert metrics["best_of_n"]["accuracy"] == pytest.approx(best.mean())
    assert metrics["best_of_n"]["n_prompts"] == 12 and metrics["accuracy"] == pytest.approx(pairwise.mean())
    by_subset = defaultdict(list)
    for r, b in zip(rows, best, strict=True):
        by_subset[r["subset"]].append(b)
    assert {k: v["accuracy"] for k, v in metrics["best_of_n"]["by_category"].items()} == pytest.approx(
        {k: float(np.mean(v)) for k, v in by_subset.items()})
    assert "rewardbench" not in metrics  # RewardBench 2 subsets are not v1's


def test_raw_trl_folder_counts_quarantined_rows_and_pairs_dirs_still_work(tiny_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    lines = (FIXTURES / "trl_standard_explicit.jsonl").read_bytes().splitlines()
    (src / "a.jsonl").write_bytes(b"\n".join([*lines, b'{"prompt": "p", "chosen": "only one side"}']))
    (src / "b.jsonl").write_bytes((FIXTURES / "trl_conversational_implicit.jsonl").read_bytes())
    metrics = evaluate(tiny_model, src, tmp_path / "eval")
    data = metrics["data"]
    assert (data["rows_in"], data["rows_evaluated"], data["rows_quarantined"]) == (21, 20, 1)
    assert metrics["n_pairs"] == 20
    assert pq.read_table(tmp_path / "eval" / "quarantine.parquet")["origin_line"].to_pylist() == [11]

    # a pairs directory: its val and test splits, as the evaluate stage does
    runner.invoke(app, ["ingest", str(FIXTURES / "hh_rlhf_30.jsonl"), "--out", str(tmp_path / "ing")])
    runner.invoke(app, ["pairs", str(tmp_path / "ing"), "--out", str(tmp_path / "pairs")])
    pairs_metrics = evaluate(tiny_model, tmp_path / "pairs", tmp_path / "eval2")
    assert "data" not in pairs_metrics
    assert pairs_metrics["n_pairs"] == read_split(tmp_path / "pairs", "test").num_rows
    bad = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--data", str(tmp_path / "pairs"),
                              "--out", str(tmp_path / "eval3"), "--format", "trl", *RELAXED])
    assert bad.exit_code == 2 and "pairs directory" in bad.output


def test_a_pairs_dir_has_each_response_of_val_and_test_scored_once(tiny_model: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Val fits the temperature (and the reward mean / std), test gives the metrics: one ``score_texts`` call scores
    both splits, each unique response once, and the champion only the test responses."""
    import itertools

    import rewardline.modeling.score as score
    from rewardline.pairs.expand import write_pairs_rows

    prompts, responses, pairs = [], [], []
    for p in range(8):
        prompts.append({"prompt_id": f"p{p}", "prompt": f"question {p}", "category": "syn"})
        responses += [{"response_id": f"p{p}r{j}", "prompt_id": f"p{p}", "response": "good " * j + "answer",
                       "source": "syn"} for j in range(3)]
        pairs += [{"prompt_id": f"p{p}", "response_a_id": f"p{p}r{b}", "response_b_id": f"p{p}r{a}", "label": 1.0,
                   "n_votes": 1, "margin": 0.0, "category": "syn", "split": "val" if p < 4 else "test"}
                  for a, b in itertools.combinations(range(3), 2)]
    data = write_pairs_rows(tmp_path / "pairs", prompts, responses, pairs)
    calls: list[list[str]] = []
    real = score.score_texts

    def counted(model_dir, prompt_inputs, texts, *args, **kwargs):
        calls.append(list(texts))
        return real(model_dir, prompt_inputs, texts, *args, **kwargs)

    monkeypatch.setattr(score, "score_texts", counted)
    evaluate(tiny_model, data, tmp_path / "out", "--champion", str(tiny_model))
    assert [len(texts) for texts in calls] == [24, 12]  # model: 4 val + 4 test prompts x 3; champion: test only
