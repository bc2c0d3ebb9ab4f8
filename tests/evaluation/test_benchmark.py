"""RewardBench v1 section weighting and best-of-N credit on hand-made cases."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from rewardline.data import schema
from rewardline.evaluation.benchmark import best_of_n, best_of_n_credit, rewardbench_sections


def test_sections_weight_subsets_by_rewardbench_example_counts() -> None:
    out = rewardbench_sections({"math-prm": 1.0, "hep-go": 0.0, "hep-rust": 0.0, "donotanswer": 0.5, "other": 0.1})
    assert out["sections"] == pytest.approx({"Reasoning": 984 / (984 + 2 * 164), "Safety": 0.5})
    assert out["score"] is None and "alpacaeval-easy" in out["subsets_missing"]  # Chat, Chat Hard absent
    assert rewardbench_sections({"Factuality": 0.7}) is None


def test_best_of_n_credit_single_winner_ties_at_the_top_and_several_winners() -> None:
    # prompt p: w beats x, y, z (K=4); q: w2 beats x2 (K=2, not scored); t: u, v both beat s (K=3, two winners)
    prompts = np.array(["p", "p", "p", "q", "t", "t"], dtype=object)
    winners = np.array(["w", "w", "w", "w2", "u", "v"], dtype=object)
    losers = np.array(["x", "y", "z", "x2", "s", "s"], dtype=object)
    for rewards, expected in (
        ({"w": 3, "x": 1, "y": 2, "z": 0}, 1.0),
        ({"w": 2, "x": 1, "y": 2, "z": 0}, 0.5),  # a tie at the top shares the credit
        ({"w": 1, "x": 1, "y": 2, "z": 0}, 0.0),
    ):
        r = {**rewards, "w2": 0, "x2": 1, "u": 5, "v": 4, "s": 4.5}
        scored, credit = best_of_n_credit(prompts, winners, losers, np.array([r[w] for w in winners], float),
                                          np.array([r[x] for x in losers], float))
        assert len(scored) == 2 and credit.tolist() == [expected, 0.0]  # t: v (4) is not above s (4.5)


def test_best_of_n_over_a_pairs_table_by_category() -> None:
    pairs = pa.table({"prompt_id": ["p", "p", "p", "t", "t"], "response_a_id": ["w", "w", "y", "u", "u"],
                      "response_b_id": ["x", "y", "x", "v", "s"], "label": [1.0, 1.0, 0.5, 1.0, 1.0],
                      "n_votes": [1] * 5, "margin": [0.0] * 5, "category": ["A", "A", "A", "B", "B"],
                      "split": ["test"] * 5}, schema=schema.PAIRS)
    out = best_of_n(pairs, np.array([3.0, 3.0, 1.0, 1.0, 1.0]), np.array([1.0, 2.0, 1.0, 0.0, 2.0]), samples=50)
    assert out["accuracy"] == 0.5 and out["n_prompts"] == 2
    assert {c: v["accuracy"] for c, v in out["by_category"].items()} == {"A": 1.0, "B": 0.0}
