"""benchmarks/bench_recipe_grid.py and bench_distill.py: nested splits, paired differences, soft labels."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_benchmark

from rewardline.data.tables import read_table, table_path

ROOT = Path(__file__).resolve().parents[2]
HH = ROOT / "tests" / "fixtures" / "hh_rlhf_30.jsonl"
grid = load_benchmark("bench_recipe_grid")
quality = load_benchmark("bench_quality")


def test_inner_split_never_holds_an_outer_test_prompt(tmp_path):
    outer_train, outer_test = grid.split_files(HH, tmp_path, "bench-quality", "outer", 0.25)
    inner_train, inner_test = grid.split_files(HH, tmp_path, "bench-quality", "inner", 0.25)
    prompts = {name: {r["prompt"] for r in quality.read_hh(path)}
               for name, path in (("outer_train", outer_train), ("outer_test", outer_test),
                                  ("inner_train", inner_train), ("inner_test", inner_test))}
    assert prompts["inner_train"] | prompts["inner_test"] == prompts["outer_train"]
    assert not (prompts["inner_train"] | prompts["inner_test"]) & prompts["outer_test"]
    assert not prompts["inner_train"] & prompts["inner_test"]


def test_differences_are_paired_by_split_and_seed():
    runs = [{"candidate": c, "salt": s, "seed": seed, "accuracy": acc, "train_seconds": 1.0}
            for c, s, seed, acc in [("recipe", "a", 0, 0.60), ("recipe", "a", 1, 0.70), ("recipe", "b", 0, 0.50),
                                    ("x", "b", 0, 0.52), ("x", "a", 1, 0.72), ("x", "a", 0, 0.62)]]
    rows = {r["candidate"]: r for r in grid.summarize(runs, "recipe")}
    assert rows["x"]["diff"] == pytest.approx(0.02) and rows["x"]["diff_sd"] == pytest.approx(0.0, abs=1e-12)
    assert rows["x"]["mean a"] == pytest.approx(0.67) and rows["x"]["mean b"] == pytest.approx(0.52)
    assert "diff" not in rows["recipe"] and rows["recipe"]["runs"] == 3


def test_soft_labels_reach_the_pairs_directory(tmp_path):
    rows = quality.read_hh(HH)
    train, test = rows[:24], rows[24:]
    labels = [0.5 + i / 100 for i in range(len(train))]
    pairs = read_table(table_path(quality.pairs_dir(train, test, tmp_path / "p", 0.0, labels), "train"))
    assert sorted(pairs.column("label").to_pylist()) == pytest.approx(labels)
    plain = read_table(table_path(quality.pairs_dir(train, test, tmp_path / "q", 0.0), "train"))
    assert set(plain.column("label").to_pylist()) == {1.0}
