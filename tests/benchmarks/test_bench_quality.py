"""benchmarks/bench_quality.py: rewardline trains on the same pairs as TRL unless its recipe selects on val."""

from __future__ import annotations

from pathlib import Path

from conftest import load_benchmark

from rewardline.data.tables import read_table, table_path
from rewardline.modeling.tiny import build_tiny_bert

ROOT = Path(__file__).resolve().parents[2]
quality = load_benchmark("bench_quality")


def test_val_split_only_when_the_recipe_selects_on_val():
    assert quality.default_val_fraction(quality.default_recipe([])) == 0.0  # params.yaml: eval_every 0, patience 0
    assert quality.default_val_fraction(quality.default_recipe(["eval_every=10"])) == 0.1
    assert quality.default_val_fraction(quality.default_recipe(["patience=2"])) == 0.1


def test_without_a_val_split_rewardline_trains_on_every_training_pair_and_scores_the_test(tmp_path):
    rows = quality.read_hh(ROOT / "tests" / "fixtures" / "hh_rlhf_30.jsonl")
    train, test = rows[:24], rows[24:]
    backbone = build_tiny_bert(tmp_path / "backbone", seed=0)
    overrides = [f"backbone={backbone}", "max_length=64", "batch_tokens=512", "freeze_layers=1"]
    res = quality.run_rewardline(train, test, tmp_path / "run", 0, overrides, None)
    assert res["val_fraction"] == 0.0 and res["val_accuracy"] is None  # no val split: no val metrics (strict JSON)
    assert res["n_pairs"] == len(test) and 0.0 <= res["accuracy"] <= 1.0
    pairs = read_table(table_path(tmp_path / "run" / "pairs", "train"))
    assert pairs.num_rows == len(train)


def test_split_by_prompt_is_a_partition_and_the_salt_draws_another_one(tmp_path):
    source = ROOT / "tests" / "fixtures" / "hh_rlhf_30.jsonl"
    splits = {salt: quality.split_hh(source, tmp_path / salt, 0.3, salt) for salt in ("bench-quality", "other")}
    tests = {}
    for salt, (train_file, test_file) in splits.items():
        train, test = quality.read_hh(train_file), quality.read_hh(test_file)
        assert len(train) + len(test) == 30 and test  # every row on one side
        assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}  # no prompt on both sides
        tests[salt] = {r["prompt"] for r in test}
    assert tests["bench-quality"] != tests["other"]
