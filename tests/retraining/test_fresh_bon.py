"""The retrain cycle's best-of-N of the champion on fresh samples that carry gold labels (issue 16)."""

from __future__ import annotations

import numpy as np

from rewardline.retraining.cycle import BatchResult, RetrainConfig, fresh_bon, summary_markdown


def _samples() -> tuple[list[dict], np.ndarray]:
    rng = np.random.default_rng(0)
    samples, rewards = [], []
    for p in range(6):
        for c in range(4):
            samples.append({"prompt": f"prompt {p}", "response": f"r{c}", "gold": float(rng.random())})
            rewards.append(rng.normal())
    return samples, np.asarray(rewards)


def test_fresh_bon_at_n_max_is_the_gold_of_the_highest_reward_per_prompt():
    samples, rewards = _samples()
    bon = fresh_bon(samples, rewards)
    gold = np.asarray([s["gold"] for s in samples]).reshape(6, 4)
    picked = gold[np.arange(6), rewards.reshape(6, 4).argmax(1)]  # N = 4 = all candidates: the argmax
    assert bon is not None and bon["n_max"] == 4 and bon["prompts"] == 6
    assert abs(bon["gold_by_n"]["4"] - picked.mean()) < 1e-12
    assert abs(bon["random_gold"]["4"] - gold.mean()) < 1e-12
    assert abs(bon["oracle_gold"]["4"] - gold.max(1).mean()) < 1e-12
    assert abs(bon["gain_n_max"] - (picked.mean() - gold.mean())) < 1e-12


def test_no_best_of_n_without_gold_on_every_sample_or_with_one_sample_per_prompt():
    samples, rewards = _samples()
    samples[3] = {k: v for k, v in samples[3].items() if k != "gold"}
    assert fresh_bon(samples, rewards) is None
    singles = [{"prompt": f"p{i}", "response": "r", "gold": 1.0} for i in range(3)]
    assert fresh_bon(singles, np.zeros(3)) is None


def test_the_cycle_report_shows_the_best_of_n_line():
    samples, rewards = _samples()
    result = BatchResult("b1", drift={"best_of_n": fresh_bon(samples, rewards)}, decision={"retrain": False})
    text = summary_markdown([result], RetrainConfig(), [], [], [])
    assert "Best-of-N of the champion on the samples' gold (6 prompts): N = 4" in text
