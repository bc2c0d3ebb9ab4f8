"""The objectives module: the grouped soft-label Bradley-Terry objective against hand-computed
values and its formula, comparison weights, and choosing objectives by name."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rewardline.errors import ConfigError
from rewardline.training.batching import MIN_TARGET_SE, Batch, comparison_weights, target_weights
from rewardline.training.loop import TrainConfig
from rewardline.training.objectives import (
    OBJECTIVES,
    BradleyTerryObjective,
    BradleyTerryThurstoneObjective,
    ComparisonTargets,
    Objective,
    ThurstoneObjective,
    build_objective,
    register_objective,
)

LOG1P_EXP_MINUS_1 = 0.31326168751822286  # log(1 + e^-1) = -log σ(1)
LOG1P_EXP_1 = 1.3132616875182228  # log(1 + e) = -log σ(-1)


def _targets(a, b, p, w=None, m=None) -> ComparisonTargets:
    a, b, p = torch.tensor(a), torch.tensor(b), torch.as_tensor(p, dtype=torch.float32)
    w = torch.ones(len(p)) if w is None else torch.as_tensor(w, dtype=torch.float32)
    return ComparisonTargets(a, b, p, w, None if m is None else torch.as_tensor(m, dtype=torch.float32))


def _sums(objective: Objective, terms) -> dict[str, float]:
    return dict(zip(objective.sum_names, terms.sums.tolist(), strict=True))


def test_bt_matches_a_hand_computed_example():
    # r = (1, 0, -1); comparison 1: 0 vs 1, p = 1, w = 1:   Δ = 1,  ℓ = -log σ(1)
    #                 comparison 2: 2 vs 1, p = 1/4, w = 1/2: Δ = -1, ℓ = -(¼ log σ(-1) + ¾ log σ(1))
    r = torch.tensor([1.0, 0.0, -1.0])
    targets = _targets([0, 2], [1, 1], [1.0, 0.25], [1.0, 0.5])
    l1, l2 = LOG1P_EXP_MINUS_1, 0.25 * LOG1P_EXP_1 + 0.75 * LOG1P_EXP_MINUS_1  # 0.31326, 0.56326
    objective = BradleyTerryObjective()
    terms = objective.loss(r, targets)
    assert terms.loss.item() == pytest.approx((1.0 * l1 + 0.5 * l2) / 1.5, rel=1e-6)  # 0.396595
    summary = objective.summarize(_sums(objective, terms))
    assert summary == {"loss": pytest.approx(0.3965951, rel=1e-6), "accuracy": 1.0, "comparisons": 2}
    # centering c = 0.1 adds c·(r_a + r_b)² = 0.1·1² to both comparisons, weighted: (1 + 0.5)·0.1 / 1.5
    centered = BradleyTerryObjective(center_coef=0.1).loss(r, targets)
    assert centered.loss.item() == pytest.approx(0.3965951 + 0.1, rel=1e-6)
    # margin m = 1 on comparison 1: ℓ = -log σ(1 - 1) = log 2
    margined = objective.loss(r, _targets([0], [1], [1.0], m=[1.0]))
    assert margined.loss.item() == pytest.approx(math.log(2), rel=1e-6)


def test_bt_matches_formula_with_soft_labels_margin_centering_and_weights():
    r = torch.tensor([0.3, -1.2, 2.0, 0.5])
    a, b = [0, 2, 2, 3], [1, 1, 0, 1]
    p, m, w, c = [1.0, 0.75, 0.6, 0.5], [0.0, 0.5, 0.2, 0.0], [1.0, 0.5, 0.5, 2.0], 0.1
    out = BradleyTerryObjective(center_coef=c).loss(r, _targets(a, b, p, w, m))
    expected = 0.0
    for i in range(4):
        ra, rb = r[a[i]].item(), r[b[i]].item()
        d = ra - rb
        li = p[i] * math.log1p(math.exp(-(d - m[i]))) + (1 - p[i]) * math.log1p(math.exp(d - m[i]))
        expected += w[i] * (li + c * (ra + rb) ** 2)
    assert out.loss.item() == pytest.approx(expected / sum(w), rel=1e-5)


def test_bt_hard_labels_reduce_to_minus_logsigmoid():
    r = torch.randn(10, requires_grad=True)
    a, b = torch.arange(0, 10, 2), torch.arange(1, 10, 2)
    out = BradleyTerryObjective().loss(r, ComparisonTargets(a, b, torch.ones(5), torch.ones(5), None))
    ref = -F.logsigmoid(r[a] - r[b]).mean()
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-6)
    out.loss.backward()
    assert r.grad is not None and torch.isfinite(r.grad).all()


def test_bt_half_label_at_equal_rewards_has_zero_gradient():
    r = torch.zeros(2, requires_grad=True)
    BradleyTerryObjective().loss(r, _targets([0], [1], [0.5])).loss.backward()
    assert torch.allclose(r.grad, torch.zeros(2))


def test_bt_centering_penalises_the_sum_only():
    r = torch.tensor([3.0, 3.0])
    base = BradleyTerryObjective().loss(r, _targets([0], [1], [1.0])).loss
    cen = BradleyTerryObjective(center_coef=0.01).loss(r, _targets([0], [1], [1.0])).loss
    assert (cen - base).item() == pytest.approx(0.01 * 36.0, rel=1e-5)


def test_bt_accuracy_excludes_ties_and_counts_sign_agreement():
    r = torch.tensor([1.0, 0.0, 2.0, 2.0])
    # right, wrong, equal rewards (wrong), tie (excluded)
    objective = BradleyTerryObjective()
    sums = _sums(objective, objective.loss(r, _targets([0, 1, 2, 0], [1, 0, 3, 2], [1.0, 0.9, 0.8, 0.5])))
    assert (sums["counted"], sums["correct"], sums["comparisons"]) == (3, 1, 4)
    assert objective.summarize(sums)["accuracy"] == pytest.approx(1 / 3)


def test_bt_micro_batches_with_global_normalizer_sum_to_the_full_batch_loss():
    torch.manual_seed(0)
    r = torch.randn(8)
    a, b = [0, 2, 4, 6, 0], [1, 3, 5, 7, 3]
    p, w = torch.rand(5), torch.rand(5) + 0.1
    objective = BradleyTerryObjective()
    full = objective.loss(r, _targets(a, b, p, w))
    norm = float(w.sum())
    parts = [objective.loss(r, _targets(a[s], b[s], p[s], w[s]), normalizer=norm) for s in (slice(0, 2), slice(2, 5))]
    assert (parts[0].loss + parts[1].loss).item() == pytest.approx(full.loss.item(), rel=1e-6)
    weighted_loss = sum(_sums(objective, t)["weighted_loss"] for t in parts)  # what the loop sums over micro-batches
    assert weighted_loss / norm == pytest.approx(full.loss.item(), rel=1e-6)


def test_bt_targets_take_margins_in_training_only():
    batch = Batch(input_ids=torch.zeros(3, 4, dtype=torch.long), attention_mask=torch.ones(3, 4, dtype=torch.long),
                  token_type_ids=torch.zeros(3, 4, dtype=torch.long), idx_a=torch.tensor([0, 2]),
                  idx_b=torch.tensor([1, 1]), label=torch.tensor([1.0, 0.25]), margin=torch.tensor([1.0, 2.0]),
                  weight=torch.tensor([1.0, 0.5]), n_tokens=12)
    objective = BradleyTerryObjective(margin_scale=0.5)
    assert torch.equal(objective.targets(batch).margin, torch.tensor([0.5, 1.0]))
    assert objective.targets(batch, training=False).margin is None
    assert BradleyTerryObjective().targets(batch).margin is None  # margin_scale 0: no margin
    assert torch.equal(objective.targets(batch).weight, batch.weight)


def test_bt_label_smoothing_moves_labels_toward_a_half_in_training_only():
    batch = Batch(input_ids=torch.zeros(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 4, dtype=torch.long),
                  token_type_ids=torch.zeros(2, 4, dtype=torch.long), idx_a=torch.tensor([0]),
                  idx_b=torch.tensor([1]), label=torch.tensor([1.0]), margin=torch.tensor([0.0]),
                  weight=torch.tensor([1.0]), n_tokens=8)
    objective = BradleyTerryObjective(label_smoothing=0.2)
    assert torch.allclose(objective.targets(batch).label, torch.tensor([0.9]))  # (1 - 0.2)·1 + 0.2/2
    assert torch.equal(objective.targets(batch, training=False).label, batch.label)
    # the smoothed hard label's loss is smallest at Δ = log((2 - ε)/ε) = log 9, not at Δ → ∞
    deltas = torch.tensor([math.log(9) - 0.1, math.log(9), math.log(9) + 0.1])
    losses = [objective.loss(torch.tensor([d.item(), 0.0]), objective.targets(batch)).loss.item() for d in deltas]
    assert losses[1] < losses[0] and losses[1] < losses[2]
    terms = objective.loss(torch.tensor([5.0, 0.0]), objective.targets(batch))
    assert _sums(objective, terms)["correct"] == 1  # accuracy still reads the side the label is on
    config = TrainConfig().replace(label_smoothing=0.2, objective="bt+thurstone")
    assert build_objective("bt+thurstone", config).pairwise.label_smoothing == 0.2
    assert build_objective("bt", config).label_smoothing == 0.2


def test_prompt_weighting_makes_each_prompt_count_once():
    w = comparison_weights(np.array([6, 1, 3]), "prompt")
    assert w.shape == (10,)
    assert np.allclose([w[:6].sum(), w[6:7].sum(), w[7:].sum()], 1.0)
    assert np.allclose(comparison_weights(np.array([6, 1]), "comparison"), 1.0)
    with pytest.raises(ValueError):
        comparison_weights(np.array([1]), "nope")


def test_objectives_are_built_by_name_from_the_train_config():
    objective = build_objective("bt", TrainConfig(margin_scale=0.5, center_coef=0.01))
    assert isinstance(objective, BradleyTerryObjective) and OBJECTIVES["bt"] is BradleyTerryObjective
    assert (objective.margin_scale, objective.center_coef) == (0.5, 0.01)
    assert TrainConfig().objective == "bt"
    with pytest.raises(ConfigError, match=r"unknown objective 'nope'.*\['bt', 'bt\+thurstone', 'prm', 'thurstone'\]"):
        build_objective("nope", TrainConfig())


def test_register_objective_refuses_a_second_class_under_a_taken_name(monkeypatch):
    monkeypatch.setattr("rewardline.training.objectives.OBJECTIVES", dict(OBJECTIVES))

    class Other(BradleyTerryObjective):
        name = "bt"

    assert register_objective(BradleyTerryObjective) is BradleyTerryObjective  # the same class again is fine
    with pytest.raises(ValueError, match="already registered"):
        register_objective(Other)


def _pointwise_batch(utility, target_weight, idx_a=(0,), idx_b=(1,), label=(1.0,)) -> Batch:
    n = len(utility)
    return Batch(input_ids=torch.zeros(n, 2, dtype=torch.long), attention_mask=torch.ones(n, 2, dtype=torch.long),
                 token_type_ids=torch.zeros(n, 2, dtype=torch.long), idx_a=torch.tensor(idx_a),
                 idx_b=torch.tensor(idx_b), label=torch.tensor(label), margin=torch.zeros(len(label)),
                 weight=torch.ones(len(label)), n_tokens=2 * n, target=torch.tensor(utility),
                 target_weight=torch.tensor(target_weight))


def test_thurstone_pointwise_loss_and_gradient_match_a_hand_computed_example():
    # r = (1, 0, -1), u = (0.5, 0, 1), w = (1, 2, 1):  ℓ = ½(r − u)² = (0.125, 0, 2)
    # Σ w·ℓ = 2.125, Σ w = 4  →  loss = 0.53125;  ∂loss/∂r_i = w_i (r_i − u_i) / Σ w = (0.125, 0, -0.5)
    objective = build_objective("thurstone", TrainConfig(objective="thurstone"))
    assert isinstance(objective, ThurstoneObjective) and objective.needs_targets
    r = torch.tensor([1.0, 0.0, -1.0], requires_grad=True)
    terms = objective.loss(r, objective.targets(_pointwise_batch([0.5, 0.0, 1.0], [1.0, 2.0, 1.0])))
    assert terms.loss.item() == pytest.approx(0.53125)
    terms.loss.backward()
    torch.testing.assert_close(r.grad, torch.tensor([0.125, 0.0, -0.5]))
    sums = _sums(objective, terms)
    assert sums == pytest.approx({"weighted_loss": 2.125, "weight": 4.0, "squared_error": 4.25, "responses": 3})
    summary = objective.summarize(sums)
    assert summary == pytest.approx({"loss": 0.53125, "rmse": math.sqrt(4.25 / 3), "responses": 3})
    # a given normaliser W replaces Σ w (gradient accumulation / DDP)
    assert objective.loss(r, objective.targets(_pointwise_batch([0.5, 0.0, 1.0], [1.0, 2.0, 1.0])),
                          normalizer=8.0).loss.item() == pytest.approx(2.125 / 8)


def test_bt_plus_thurstone_is_the_bt_loss_plus_lambda_times_the_pointwise_loss():
    # r = (1, 0), comparison 0 ≻ 1 with p = 1, w = 1: bt = −log σ(1); u = (0, 0), w = (0.5, 0.5):
    # pointwise = (0.5·½·1 + 0) / 1 = 0.25;  λ = 2  →  loss = log(1 + e⁻¹) + 0.5
    objective = build_objective("bt+thurstone", TrainConfig(objective="bt+thurstone", pointwise_weight=2.0))
    assert isinstance(objective, BradleyTerryThurstoneObjective)
    r = torch.tensor([1.0, 0.0], requires_grad=True)
    terms = objective.loss(r, objective.targets(_pointwise_batch([0.0, 0.0], [0.5, 0.5])))
    assert terms.loss.item() == pytest.approx(LOG1P_EXP_MINUS_1 + 0.5)
    terms.loss.backward()
    sigma_minus_1 = 1 / (1 + math.e)  # ∂bt/∂r_0 = −σ(−1);  ∂(λ·pointwise)/∂r_0 = 2·0.5·1 = 1
    torch.testing.assert_close(r.grad, torch.tensor([1 - sigma_minus_1, sigma_minus_1]))
    summary = objective.summarize(_sums(objective, terms))
    assert summary["bt_loss"] == pytest.approx(LOG1P_EXP_MINUS_1) and summary["pointwise_loss"] == pytest.approx(0.25)
    assert summary["loss"] == pytest.approx(LOG1P_EXP_MINUS_1 + 0.5) and summary["accuracy"] == 1.0


def test_a_pointwise_objective_without_targets_is_a_config_error():
    batch = _pointwise_batch([0.0, 0.0], [0.5, 0.5])
    batch.target = None
    with pytest.raises(ConfigError, match="targets/"):
        ThurstoneObjective().targets(batch)


def test_target_weights_share_the_group_weight_by_precision_with_a_floor():
    # se = (0.5, 1, 0.1) → s = (0.5, 1, MIN_TARGET_SE = 0.25) → precision (4, 1, 16) / 21
    np.testing.assert_allclose(target_weights(np.array([0.5, 1.0, 0.1]), 3.0), 3.0 * np.array([4, 1, 16]) / 21,
                               rtol=1e-6)
    assert MIN_TARGET_SE == 0.25


def test_an_anchor_weighs_as_a_typical_response_of_its_prompt():
    # se = (0.5, 1, 2, 0 [the anchor, u = 0 by definition]) → the anchor's s = median(0.5, 1, 2) = 1
    weights = target_weights(np.array([0.5, 1.0, 2.0, 0.0]), 1.0)
    np.testing.assert_allclose(weights, np.array([4, 1, 0.25, 1]) / 6.25, rtol=1e-6)
    # a prompt of anchors alone (nothing else to compare with) keeps the floor: equal weights
    np.testing.assert_allclose(target_weights(np.array([0.0, 0.0]), 2.0), [1.0, 1.0], rtol=1e-6)


def test_prompt_centred_targets_keep_only_the_within_prompt_part(tmp_path):
    """``train.target_centre: prompt``: u_i − mean u of its prompt; differences, se and link are unchanged."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rewardline.training.batching import read_targets

    table = pa.table({"prompt_id": ["p", "p", "p", "q", "q"], "response_id": ["a", "b", "c", "d", "e"],
                      "split": ["train"] * 5, "utility": [0.0, 1.0, -4.0, 0.0, 3.0],
                      "se": [0.0, 0.5, 0.7, 0.0, 1.0], "anchored": [True] * 5})
    pq.write_table(table.replace_schema_metadata({"link": "probit"}), tmp_path / "targets.parquet")  # older layout
    raw, centred = read_targets(tmp_path), read_targets(tmp_path, "prompt")
    assert raw.utility == {"a": 0.0, "b": 1.0, "c": -4.0, "d": 0.0, "e": 3.0} and raw.anchored
    assert centred.utility == pytest.approx({"a": 1.0, "b": 2.0, "c": -3.0, "d": -1.5, "e": 1.5})
    assert not centred.anchored and centred.se == raw.se and centred.link == "probit"
    with pytest.raises(ValueError, match="anchor or prompt"):
        read_targets(tmp_path, "mean")
