"""Absolute calibration of win_prob against the anchor (rewardline.evaluation.absolute) and its evaluate gate."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from scipy.special import expit, ndtr

from rewardline.data.schema import PAIRS, conform
from rewardline.evaluation.absolute import (
    AnchorComparisons,
    absolute_calibration,
    anchor_comparisons,
    calibration_of,
    threshold_table,
)
from rewardline.evaluation.evaluate import EvalConfig, evaluate_scores


def anchored_pairs(reward: np.ndarray, win: np.ndarray, split: str) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """One pair per prompt: response x_i vs the prompt's anchor (reward 0), oriented so label = 1 (winner is a)."""
    n = reward.size
    x, anchor = [f"{split}{i}x" for i in range(n)], [f"{split}{i}anchor" for i in range(n)]
    a = np.where(win, x, anchor)
    b = np.where(win, anchor, x)
    table = conform(pa.table({"prompt_id": [f"{split}{i}" for i in range(n)], "response_a_id": a, "response_b_id": b,
                              "label": np.ones(n, np.float32), "n_votes": np.ones(n, np.int32),
                              "margin": np.zeros(n, np.float32), "split": [split] * n}), PAIRS)
    ra = np.where(win, reward, 0.0)
    rb = np.where(win, 0.0, reward)
    return table, ra, rb


def anchors(*tables: pa.Table) -> pa.Array:
    ids = [r for t in tables for r in t["response_a_id"].to_pylist() + t["response_b_id"].to_pylist()]
    return pa.array(sorted({r for r in ids if r.endswith("anchor")}))


def probit_world(n: int, seed: int, scramble: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Rewards r ~ N(0, 1.5²) and judge outcomes y ~ Bernoulli(Φ(r)): Φ(r) is perfectly calibrated."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 1.5, n)
    y = rng.random(n) < ndtr(r)
    return (rng.permutation(r) if scramble else r), y


def test_anchor_comparisons_are_oriented_to_the_non_anchor_response():
    pairs = conform(pa.table({"prompt_id": ["p", "p", "q"], "response_a_id": ["p-x", "p-anchor", "q-x"],
                              "response_b_id": ["p-anchor", "p-y", "q-y"], "label": [0.75, 1.0, 1.0]}), PAIRS)
    comp = anchor_comparisons(pairs, np.array([1.0, 5.0, 9.0]), np.array([2.0, -3.0, 9.0]), pa.array(["p-anchor"]))
    assert comp.prompt_ids.tolist() == ["p", "p"]  # q has no anchor
    assert comp.reward.tolist() == [1.0, -3.0] and comp.label.tolist() == [0.75, 0.0]


def test_threshold_table_by_hand():
    q = np.array([0.95, 0.8, 0.6, 0.4, 0.2, 0.75, 0.5])
    y = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5])  # the last is a tie: left out
    rows = {r["threshold"]: r for r in threshold_table(q, y)}
    # decided: q = .95 .8 .6 .4 .2 .75 with judge-preferred 1 1 0 1 0 0 (3 preferred)
    assert rows[0.3] == {"threshold": 0.3, "acceptance_rate": 5 / 6, "precision": 3 / 5, "recall": 1.0, "accepted": 5}
    assert rows[0.5] == {"threshold": 0.5, "acceptance_rate": 4 / 6, "precision": 2 / 4, "recall": 2 / 3, "accepted": 4}
    assert rows[0.7] == {"threshold": 0.7, "acceptance_rate": 3 / 6, "precision": 2 / 3, "recall": 2 / 3, "accepted": 3}
    assert rows[0.9] == {"threshold": 0.9, "acceptance_rate": 1 / 6, "precision": 1.0, "recall": 1 / 3, "accepted": 1}
    none = {r["threshold"]: r for r in threshold_table(np.array([0.1]), np.array([0.0]))}
    assert none[0.5]["precision"] is None and none[0.5]["recall"] is None and none[0.5]["acceptance_rate"] == 0.0


def test_metrics_by_hand_on_a_tiny_sample():
    q, y = np.array([0.9, 0.9, 0.2, 0.2]), np.array([1.0, 0.0, 0.0, 0.0])
    details, _ = calibration_of(q, y, np.array(["a", "b", "c", "d"]), samples=50)
    assert details["brier"] == pytest.approx((0.01 + 0.81 + 0.04 + 0.04) / 4)
    assert details["log_loss"] == pytest.approx(-(np.log(0.9) + np.log(0.1) + 2 * np.log(0.8)) / 4)
    # bins: q = 0.9 (observed 0.5) and q = 0.2 (observed 0): ECE = ½·0.4 + ½·0.2
    assert details["ece"] == pytest.approx(0.3)
    assert details["base_rate"] == 0.25 and details["brier_base_rate"] == pytest.approx(0.1875)
    assert details["brier_skill"] == pytest.approx(1 - 0.225 / 0.1875)
    assert details["auroc"] == pytest.approx(5 / 6)  # the positive (0.9) beats 2 of 3 negatives, ties 1
    for key in ("ece", "brier", "log_loss"):
        low, high = details[f"{key}_ci"]
        assert low <= details[key] <= high


def test_a_perfectly_calibrated_scorer_has_ece_near_zero_and_a_scrambled_one_does_not():
    r, y = probit_world(20000, seed=1)
    good = absolute_calibration(AnchorComparisons(np.arange(r.size).astype(str), r, y.astype(float)),
                                AnchorComparisons(np.array([]), np.array([]), np.array([])), "probit", samples=200)
    assert good.details["method"] == "link" and good.headline["n_anchor_comparisons"] == 20000
    assert good.headline["ece_absolute"] < 0.015 and good.details["ece_ci"][0] < 0.015
    assert good.headline["auroc_absolute"] > 0.8 and good.headline["brier_skill_absolute"] > 0.3
    r_bad, y_bad = probit_world(20000, seed=1, scramble=True)
    bad = absolute_calibration(AnchorComparisons(np.arange(r.size).astype(str), r_bad, y_bad.astype(float)),
                               AnchorComparisons(np.array([]), np.array([]), np.array([])), "probit", samples=200)
    assert bad.headline["ece_absolute"] > 0.2 and bad.details["ece_ci"][0] > 0.2
    assert bad.headline["auroc_absolute"] == pytest.approx(0.5, abs=0.02) and bad.headline["brier_skill_absolute"] < 0


def test_the_residual_sd_correction_calibrates_a_noisy_pointwise_fit_that_phi_of_r_overstates():
    """The model predicts r, the judge decides with Φ(u), u = r + e, e ~ N(0, s²) independent of r:
    P(win | r) = E[Φ(r + e)] = Φ(r/√(1+s²)). Served Φ(r) is overconfident; with ``residual_sd = s`` it is not."""
    rng = np.random.default_rng(11)
    n, s = 40000, 1.5
    r = rng.normal(0.0, 1.5, n)
    y = (rng.random(n) < ndtr(r + rng.normal(0.0, s, n))).astype(float)
    test, none = AnchorComparisons(np.arange(n).astype(str), r, y), AnchorComparisons(*(np.array([]),) * 3)
    raw = absolute_calibration(test, none, "probit", samples=100)
    fixed = absolute_calibration(test, none, "probit", samples=100, residual_sd=s)
    assert fixed.details["residual_sd"] == s and raw.details["residual_sd"] == 0.0
    assert raw.headline["ece_absolute"] > 0.08 and fixed.headline["ece_absolute"] < 0.015
    assert fixed.headline["brier_skill_absolute"] > raw.headline["brier_skill_absolute"]
    assert fixed.headline["auroc_absolute"] == pytest.approx(raw.headline["auroc_absolute"])  # a monotone map


def test_a_prompt_centred_model_is_judged_by_its_reward_difference_with_the_anchor():
    """``anchored`` False (``train.target_centre: prompt``): rewards r = u − ū_p carry a per-prompt offset the
    anchor shares, so P(win) = Φ(r − r_anchor) is calibrated while Φ(r) (the anchored reading) is not."""
    rng = np.random.default_rng(7)
    n = 20000
    level = rng.normal(0.0, 2.0, n)  # each comparison its own prompt, whose mean utility is −level
    u = rng.normal(0.0, 1.0, n)  # the response's utility against the anchor (u_anchor = 0)
    y = (rng.random(n) < ndtr(u)).astype(float)
    test = AnchorComparisons(np.arange(n).astype(str), u + level, y, anchor_reward=level)
    none = AnchorComparisons(*(np.array([]),) * 3)
    centred = absolute_calibration(test, none, "probit", samples=100, anchored=False)
    as_anchored = absolute_calibration(test, none, "probit", samples=100, anchored=True)
    assert centred.details["method"] == "difference" and as_anchored.details["method"] == "link"
    assert centred.headline["ece_absolute"] < 0.015 < 0.1 < as_anchored.headline["ece_absolute"]
    assert centred.headline["auroc_absolute"] > as_anchored.headline["auroc_absolute"] + 0.1
    noisy = absolute_calibration(test, none, "probit", samples=100, anchored=False, residual_sd=0.5)
    assert noisy.details["scale"] == 0.0 and noisy.headline == centred.headline  # errors cancel in Δ (docstring)


def test_a_bt_model_is_calibrated_by_a_logistic_map_fitted_on_val():
    rng = np.random.default_rng(3)
    def world(n):
        r = rng.normal(0, 1, n)
        return r, (rng.random(n) < expit(2.0 * r - 0.5)).astype(float)
    (rv, yv), (rt, yt) = world(20000), world(20000)
    out = absolute_calibration(AnchorComparisons(np.arange(rt.size).astype(str), rt, yt),
                               AnchorComparisons(np.arange(rv.size).astype(str), rv, yv), None, samples=100)
    assert out.details["method"] == "logistic" and out.details["fitted_on"] == "val"
    assert out.details["slope"] == pytest.approx(2.0, abs=0.1)
    assert out.details["intercept"] == pytest.approx(-0.5, abs=0.1)
    assert out.headline["ece_absolute"] < 0.02
    no_val = absolute_calibration(AnchorComparisons(np.array(["p"]), np.array([1.0]), np.array([1.0])),
                                  AnchorComparisons(np.array([]), np.array([]), np.array([])), None)
    assert no_val.headline["ece_absolute"] is None and "val" in no_val.details["skipped"]


def _evaluate(tmp_path, scramble: bool, with_anchors: bool = True):
    r, y = probit_world(3000, seed=5, scramble=scramble)
    test, ra, rb = anchored_pairs(r, y, "test")
    rv, yv = probit_world(500, seed=6)
    val, vra, vrb = anchored_pairs(rv, yv, "val")
    lengths = np.random.default_rng(7).integers(10, 100, (2, test.num_rows))  # unrelated to the outcome
    config = EvalConfig(bootstrap_samples=100, min_accuracy=0.0, max_length_bias=1.0, max_ece_calibrated=1.0,
                        max_ece_absolute=0.05)
    return evaluate_scores(test, ra, rb, val, vra, vrb, lengths[0], lengths[1], config, out_dir=tmp_path,
                           anchor_ids=anchors(test, val) if with_anchors else None, link="probit")


def test_evaluate_gate_passes_calibrated_and_fails_scrambled_win_prob(tmp_path):
    good = _evaluate(tmp_path / "good", scramble=False)
    assert good["gates"]["max_ece_absolute"]["passed"] and not good["gates"]["max_ece_absolute"]["skipped"]
    assert good["n_anchor_comparisons"] == 3000
    assert [name for name, g in good["gates"].items() if not g["passed"]] == []
    details = json.loads((tmp_path / "good" / "absolute_calibration.json").read_text())
    assert details["method"] == "link" and details["link"] == "probit" and len(details["thresholds"]) == 4
    assert details["ece"] == good["ece_absolute"]
    plots = tmp_path / "good" / "plots"
    assert (plots / "absolute_reliability.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((plots / "absolute_reliability.json").read_text())
    assert rows and rows[0].keys() == {"bin", "confidence", "observed", "count"}
    assert sum(r["count"] for r in rows) == 3000
    bad = _evaluate(tmp_path / "bad", scramble=True)
    assert [name for name, g in bad["gates"].items() if not g["passed"]] == ["max_ece_absolute"]
    assert bad["accuracy"] == pytest.approx(bad["accuracy"])  # pairwise accuracy is still reported


def test_evaluate_gate_is_skipped_without_anchor_comparisons(tmp_path):
    m = _evaluate(tmp_path, scramble=True, with_anchors=False)
    gate = m["gates"]["max_ece_absolute"]
    assert gate["skipped"] and gate["passed"] and "no anchor comparisons" in gate["reason"]
    assert m["ece_absolute"] is None and m["n_anchor_comparisons"] == 0
    details = json.loads((tmp_path / "absolute_calibration.json").read_text())
    assert details["skipped"].startswith("no anchor comparisons")
    assert json.loads((tmp_path / "plots" / "absolute_reliability.json").read_text()) == []


def test_a_skipped_absolute_gate_names_the_reason_that_applies(tmp_path):
    """Was: a BT model whose val split had no anchor comparisons (its test split 3000) got the gate reason
    "no anchor comparisons in the test split (or none in val to fit a BT model's logistic map)": it named the
    test split, which had them; the gate now gives absolute_calibration.json's own reason."""
    r, y = probit_world(3000, seed=5)
    test, ra, rb = anchored_pairs(r, y, "test")
    rv, yv = probit_world(500, seed=6)
    val, vra, vrb = anchored_pairs(rv, yv, "val")
    lengths = np.random.default_rng(7).integers(10, 100, (2, test.num_rows))
    config = EvalConfig(bootstrap_samples=100, min_accuracy=0.0, max_length_bias=1.0, max_ece_calibrated=1.0)
    m = evaluate_scores(test, ra, rb, val, vra, vrb, lengths[0], lengths[1], config, out_dir=tmp_path,
                        anchor_ids=anchors(test), link=None)  # the val pairs' anchors are not anchors
    gate = m["gates"]["max_ece_absolute"]
    details = json.loads((tmp_path / "absolute_calibration.json").read_text())
    assert m["n_anchor_comparisons"] == 3000 and details["skipped"].startswith("BT model: no val anchor comparisons")
    assert gate["skipped"] and gate["reason"] == details["skipped"]
    assert "test split" not in gate["reason"]
