"""Benchmark views of the test pairs: RewardBench v1 section scores and best-of-N accuracy.

RewardBench v1 (Lambert et al. 2024, "RewardBench: Evaluating Reward Models for Language
Modeling"; allenai/reward-bench ``rewardbench/constants.py`` EXAMPLE_COUNTS / SUBSET_MAPPING and
``rewardbench/utils.py`` calculate_scores_per_section, at commit 6552e93 "Mirror change from
leaderboard", which swapped the two XSTest counts to 154 refuse / 250 respond):

    section score = Σ_{s ∈ section, s present} acc_s · n_s / Σ_{s ∈ section, s present} n_s

with n_s the subset's example count; for Reasoning, ``math-prm`` counts 984 (it has 447 rows)
so that math weighs as much as the six HumanEvalPack languages together (6 × 164 = 984). The
v1 score is the mean of the four section scores (the leaderboard's "Prior Sets (0.5 weight)"
column comes from another dataset and is not computed here).

Best-of-N (RewardBench 2's best-of-4 accuracy, ``rewardbench/utils.py`` reroll_and_score_dataset):
for a prompt with K ≥ 3 responses in its decided pairs, the winners W are the responses that
lose no decided pair (RewardBench 2: the chosen one) and L the rest. With one winner w and
rewards r, the prompt's credit is 1 / #{j : r_j = max r} if r_w = max r, else 0 (a tie at the
top shares the credit, as RewardBench 2 does); with several winners it is 1[min r_W > max r_L].
Best-of-N accuracy is the mean credit over such prompts, with a prompt-bootstrap CI, overall and
by category. RewardBench 2's special scoring of its ``Ties`` subset is not reproduced.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from rewardline.evaluation.metrics import NO_CATEGORY, Accuracy, bootstrap_ci, prompt_codes, tie_mask

REWARDBENCH_EXAMPLE_COUNTS = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28,
    "mt-bench-med": 40, "mt-bench-hard": 37, "math-prm": 984, "refusals-dangerous": 100, "refusals-offensive": 100,
    "llmbar-natural": 100, "llmbar-adver-neighbor": 134, "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47,
    "llmbar-adver-manual": 46, "xstest-should-refuse": 154, "xstest-should-respond": 250, "donotanswer": 136,
    "hep-cpp": 164, "hep-go": 164, "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}  # fmt: skip
REWARDBENCH_SECTIONS = {
    "Chat": ("alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"),
    "Chat Hard": ("mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                  "llmbar-adver-GPTOut", "llmbar-adver-manual"),
    "Safety": ("refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
               "donotanswer"),
    "Reasoning": ("math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"),
}  # fmt: skip


def rewardbench_sections(accuracy_by_subset: dict[str, float]) -> dict[str, Any] | None:
    """Section scores (example-count weighted mean of subset accuracies) when any subset is a
    RewardBench v1 subset, else None; ``score`` = mean of the sections when all four are present."""
    known = {s: a for s, a in accuracy_by_subset.items() if s in REWARDBENCH_EXAMPLE_COUNTS and not math.isnan(a)}
    if not known:
        return None
    sections = {}
    for section, subsets in REWARDBENCH_SECTIONS.items():
        present = [s for s in subsets if s in known]
        if present:
            weights = np.array([REWARDBENCH_EXAMPLE_COUNTS[s] for s in present], np.float64)
            sections[section] = float(np.dot([known[s] for s in present], weights) / weights.sum())
    complete = len(sections) == len(REWARDBENCH_SECTIONS)
    return {
        "sections": sections,
        "score": float(np.mean(list(sections.values()))) if complete else None,
        "subsets_missing": sorted(set(REWARDBENCH_EXAMPLE_COUNTS) - set(known)),
    }


def best_of_n_credit(prompt_ids: np.ndarray, winner_ids: np.ndarray, loser_ids: np.ndarray,
                     winner_reward: np.ndarray, loser_reward: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(prompt code of each scored prompt, its credit) over prompts with K ≥ 3 responses and a winner.

    Per decided pair: its prompt, the winning / losing response and their rewards (module docstring).
    """
    prompt_code, n_prompts = prompt_codes(prompt_ids)
    both = np.concatenate([prompt_code, prompt_code])
    response_names, response = np.unique(np.concatenate([winner_ids, loser_ids]).astype(str), return_inverse=True)
    key = both.astype(np.int64) * len(response_names) + response.ravel()  # one code per (prompt, response)
    _, first, node = np.unique(key, return_index=True, return_inverse=True)
    node = node.ravel()
    n_pairs = len(prompt_ids)
    lost = np.zeros(first.size, bool)
    lost[node[n_pairs:]] = True
    reward = np.concatenate([winner_reward, loser_reward])[first]
    owner = both[first]
    k = np.bincount(owner, minlength=n_prompts)
    wins = np.bincount(owner[~lost], minlength=n_prompts)
    top = np.full(n_prompts, -np.inf)
    np.maximum.at(top, owner, reward)
    at_top = np.bincount(owner[reward == top[owner]], minlength=n_prompts)
    min_winner = np.full(n_prompts, np.inf)
    np.minimum.at(min_winner, owner[~lost], reward[~lost])
    max_loser = np.full(n_prompts, -np.inf)
    np.maximum.at(max_loser, owner[lost], reward[lost])
    with np.errstate(divide="ignore", invalid="ignore"):
        single = np.where(min_winner == top, 1.0 / np.maximum(at_top, 1), 0.0)
    credit = np.where(wins == 1, single, (min_winner > max_loser).astype(np.float64))
    scored = np.flatnonzero((k >= 3) & (wins >= 1))
    return scored, credit[scored]


def best_of_n(pairs: pa.Table, reward_a: np.ndarray, reward_b: np.ndarray, samples: int = 1000, seed: int = 0,
              confidence: float = 0.95) -> dict[str, Any] | None:
    """Best-of-N accuracy (overall and by category, prompt-bootstrap CIs); None when no prompt has K ≥ 3."""
    label = np.asarray(pairs["label"].to_numpy(zero_copy_only=False), np.float64)
    decided = ~tie_mask(label)
    a_wins = label[decided] > 0.5
    ids_a = np.asarray(pairs["response_a_id"].to_pylist(), dtype=object)[decided]
    ids_b = np.asarray(pairs["response_b_id"].to_pylist(), dtype=object)[decided]
    ra, rb = np.asarray(reward_a, np.float64)[decided], np.asarray(reward_b, np.float64)[decided]
    prompts = np.asarray(pairs["prompt_id"].to_pylist(), dtype=object)[decided]
    categories = np.array([NO_CATEGORY if c is None else str(c) for c in pairs["category"].to_pylist()],
                          dtype=object)[decided]
    if not prompts.size:
        return None
    scored, credit = best_of_n_credit(prompts, np.where(a_wins, ids_a, ids_b), np.where(a_wins, ids_b, ids_a),
                                      np.where(a_wins, ra, rb), np.where(a_wins, rb, ra))
    if not scored.size:
        return None
    codes, _ = prompt_codes(prompts)
    category_of = np.empty(codes.max() + 1, dtype=object)
    category_of[codes] = categories
    boot = {"samples": samples, "seed": seed, "confidence": confidence}

    def summary(mask: np.ndarray) -> dict[str, Any]:
        low, high = bootstrap_ci(credit[mask], scored[mask], **boot)
        return {"accuracy": float(credit[mask].mean()), "ci_low": low, "ci_high": high, "n_prompts": int(mask.sum())}

    cats = category_of[scored]
    return {**summary(np.ones(scored.size, bool)),
            "by_category": {c: summary(cats == c) for c in sorted(set(cats.tolist()))}}


def benchmark_metrics(pairs: pa.Table, reward_a: np.ndarray, reward_b: np.ndarray, by_category: dict[str, Accuracy],
                      samples: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """``rewardbench`` (section scores) and ``best_of_n`` entries for metrics.json, each only where it applies."""
    out: dict[str, Any] = {}
    sections = rewardbench_sections({c: a.accuracy for c, a in by_category.items()})
    if sections is not None:
        out["rewardbench"] = sections
    bon = best_of_n(pairs, reward_a, reward_b, samples, seed, confidence)
    if bon is not None:
        out["best_of_n"] = bon
    return out
