"""Model selection during training: val curve, best checkpoint, early stopping, resume of the best-so-far state."""

from __future__ import annotations

import math

import pytest
import torch

from rewardline.modeling.device import select_runtime
from rewardline.modeling.model import RewardModel
from rewardline.tracking import JsonlTracker
from rewardline.training.loop import load_training_data, train
from rewardline.training.objectives import BradleyTerryObjective
from rewardline.training.selection import ModelSelection, evaluate, selection_score
from tests.training.test_train import setup, tiny_config  # noqa: F401  (the module fixture)


def _val(accuracy: float) -> dict[str, float]:
    return {"loss": 1 - accuracy, "accuracy": accuracy, "comparisons": 10, "reward_mean": 0.0, "reward_std": 1.0}


def test_selection_keeps_the_first_best_stops_after_patience_and_restores_its_weights():
    model = torch.nn.Linear(2, 1)
    sel = ModelSelection(eval_every=1, patience=2)
    weights = {}
    for step, acc in enumerate([0.5, 0.7, 0.7, 0.6], start=1):
        with torch.no_grad():
            model.weight.fill_(float(step))
        weights[step] = model.weight.clone()
        stop = sel.update(step, _val(acc), model, last=False)
        assert stop == (step == 4)
    assert (sel.best_step, sel.best_score, sel.since_best, sel.stopped_early) == (2, 0.7, 2, True)  # 0.7 = 0.7: no
    sel.restore_best(model)
    assert torch.equal(model.weight, weights[2])
    # the checkpointed state restores the same decisions
    again = ModelSelection(1, 2)
    again.load_state(sel.state(), sel.best_weights)
    assert again.state() == sel.state() and torch.equal(again.best_weights["weight"], weights[2])
    assert again.metrics(4) == {"best_step": 2, "stopped_early": False, "evaluations": 4,
                                "selection_metric": "val_accuracy"}


def test_the_last_evaluation_needs_no_copy_and_a_loss_only_objective_selects_on_minus_loss():
    model = torch.nn.Linear(2, 1)
    sel = ModelSelection()  # today's behaviour: one evaluation after the last step
    assert not sel.due(3, 10) and sel.due(10, 10)
    assert sel.update(10, _val(0.6), model, last=True) is False
    assert sel.best_weights is None and sel.best_step == 10
    assert selection_score({"loss": 0.25}) == ("loss", -0.25)
    assert selection_score({"loss": 0.1, "accuracy": float("nan")}) == ("accuracy", -math.inf)


def test_training_logs_the_val_curve_stops_early_and_saves_the_best_model(setup, tmp_path):  # noqa: F811
    tracker = JsonlTracker(tmp_path / "track.jsonl")
    cfg = tiny_config(setup, epochs=20, eval_every=1, patience=1)
    m = train(setup["pairs"], tmp_path / "model", cfg, tracker)
    points = {r["step"]: r["metrics"] for r in tracker.read()
              if r["kind"] == "metrics" and "val/accuracy" in r["metrics"]}
    assert m["stopped_early"] and m["steps"] < m["planned_steps"] and sorted(points) == list(range(1, m["steps"] + 1))
    accuracies = [points[s]["val/accuracy"] for s in sorted(points)]
    assert m["best_step"] == 1 + accuracies.index(max(accuracies)) < m["steps"]  # patience 1: the last was worse
    assert m["val_accuracy"] == max(accuracies) and m["evaluations"] == m["steps"]
    assert m["val_loss"] == pytest.approx(points[m["best_step"]]["val/loss"])
    # the saved model is the best one: re-evaluated, it gives the best step's val metrics, not the last step's
    model, _ = RewardModel.load(tmp_path / "model")
    rt = select_runtime("cpu", "fp32")
    data = load_training_data(setup["pairs"], cfg, rt)
    again = evaluate(model, data.val_groups, data.tok, data.pad_id, cfg.eval_batch_tokens, rt, BradleyTerryObjective())
    assert again["accuracy"] == pytest.approx(m["val_accuracy"]) and again["loss"] == pytest.approx(m["val_loss"])
    assert model.config.reward_mean == pytest.approx(points[m["best_step"]]["val/reward_mean"])


def test_a_loss_only_objective_names_its_selection_metric_val_loss_a_metric_that_exists():
    """train/metrics.json said ``selection_metric: "val_-loss"`` for pointwise objectives: no metric has that name."""
    sel = ModelSelection()
    sel.update(4, {"loss": 0.25, "comparisons": 10}, torch.nn.Linear(2, 1), last=True)
    assert sel.metrics(4)["selection_metric"] == "val_loss"
    assert sel.best_score == -0.25  # still maximised as −loss
