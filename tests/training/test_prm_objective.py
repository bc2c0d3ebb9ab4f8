"""The ``prm`` objective: BCE at step separators only, unknown labels ignored, a hand-computed loss,
the outcome term, real solutions labelled from their outcome, truncation by whole steps, and training +
reloading with an encoder and a decoder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import arithmetic_solutions, write_solutions
from transformers import AutoTokenizer
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.data.ingest import IngestConfig, Source, run_ingest
from rewardline.modeling.formatting import FormatConfig, Formatter
from rewardline.modeling.model import RewardModel
from rewardline.modeling.step_scores import score_steps
from rewardline.modeling.steps import StepFormatter, choose_separator
from rewardline.modeling.tiny import tiny_bert_path, tiny_qwen2_path
from rewardline.training.batching import collate
from rewardline.training.loop import TrainConfig, train
from rewardline.training.objectives import ProcessObjective, StepTargets, build_objective
from rewardline.training.step_data import load_step_groups, step_targets


def _targets(y, m, last=None, outcome=None, known=None) -> StepTargets:
    n = 1 if last is None else len(last)
    return StepTargets(torch.tensor(y, dtype=torch.float32), torch.tensor(m, dtype=torch.float32),
                       torch.tensor(last if last is not None else [-1]), torch.tensor(outcome or [0.0] * n),
                       torch.tensor(known or [0.0] * n))


def _bce(z: float, y: float) -> float:
    return -(y * math.log(1 / (1 + math.exp(-z))) + (1 - y) * math.log(1 / (1 + math.exp(z))))


def test_loss_equals_a_hand_computation_and_ignores_unknown_labels():
    objective = ProcessObjective()
    z = torch.tensor([2.0, -1.0, 0.5, 3.0])
    terms = objective.loss(z, _targets([1, 0, 1, 0], [1, 1, 1, 0]))
    expected = (_bce(2.0, 1) + _bce(-1.0, 0) + _bce(0.5, 1)) / 3
    assert terms.loss.item() == pytest.approx(expected, rel=1e-6)
    # an unknown label's value does not matter; a known one does
    assert objective.loss(z, _targets([1, 0, 1, 1], [1, 1, 1, 0])).loss.item() == pytest.approx(terms.loss.item())
    assert objective.loss(z, _targets([0, 0, 1, 0], [1, 1, 1, 0])).loss.item() != pytest.approx(terms.loss.item())
    sums = dict(zip(objective.sum_names, terms.sums.tolist(), strict=True))
    assert sums["weight"] == 3 and sums["counted"] == 3 and sums["correct"] == 3 and sums["solution_steps"] == 4


def test_outcome_term_is_read_at_each_solutions_last_step():
    objective = ProcessObjective(outcome_weight=0.5)
    z = torch.tensor([1.0, -2.0, 0.3])  # solution 0: steps 0, 1; solution 1: step 2
    t = _targets([1, 0, 1], [1, 1, 0], last=[1, 2], outcome=[0.0, 1.0], known=[1.0, 1.0])
    expected = (_bce(1.0, 1) + _bce(-2.0, 0) + 0.5 * (_bce(-2.0, 0) + _bce(0.3, 1))) / (2 + 0.5 * 2)
    assert objective.loss(z, t).loss.item() == pytest.approx(expected, rel=1e-6)


def test_neutral_and_unknown_labels_map_to_targets_and_masks():
    target, known = step_targets([1, -1, 0, None], "correct")
    assert target.tolist() == [1, 0, 1, 0] and known.tolist() == [1, 1, 1, 0]
    assert step_targets([0], "ignore")[1].tolist() == [0] and step_targets([0], "incorrect")[0].tolist() == [0]


@pytest.fixture(scope="module")
def solutions_dir(tmp_path_factory) -> Path:
    rows = arithmetic_solutions(30)
    rows[0]["step_labels"] = [1, None, 1]  # an unknown label
    return write_solutions(tmp_path_factory.mktemp("steps"), rows).parent


def hidden_state_grad_norm(backbone: str, cfg: TrainConfig, batch) -> torch.Tensor:
    """‖∂loss/∂h‖ per position ``[N, T]`` of the PRM loss of a fresh model on ``batch``."""
    model = RewardModel.from_backbone(backbone, format_config=cfg.format_config)
    captured = {}

    def keep(_module, _inputs, output):
        output.last_hidden_state.retain_grad()
        captured["h"] = output.last_hidden_state

    model.backbone.register_forward_hook(keep)
    objective = build_objective("prm", cfg)
    objective.loss(objective.forward(model, batch), objective.targets(batch)).loss.backward()
    return captured["h"].grad.norm(dim=-1)


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-qwen2"])
def test_gradient_reaches_hidden_states_only_at_separators(solutions_dir, backbone):
    cfg = TrainConfig(backbone=backbone, objective="prm", max_length=64)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path() if backbone == "tiny-bert" else tiny_qwen2_path())
    tok, groups, _, separator, _ = load_step_groups(solutions_dir, tokenizer, cfg)
    batch = collate(groups[:3], tok, tokenizer.pad_token_id)
    grad_norm = hidden_state_grad_norm(backbone, cfg, batch)
    at_sep = torch.zeros_like(grad_norm, dtype=torch.bool)
    at_sep[batch.step_row, batch.step_col] = True
    assert (grad_norm[~at_sep] == 0).all()
    labelled = torch.zeros_like(at_sep)
    known = batch.step_known.bool()
    labelled[batch.step_row[known], batch.step_col[known]] = True
    assert (grad_norm[labelled] > 0).all()
    assert (batch.input_ids[at_sep] == tokenizer.convert_tokens_to_ids(separator)).all()


def test_outcome_labels_train_a_wrong_solution_at_its_last_step_only(tmp_path):
    """Real solutions ingested with ``step_labels: outcome``: the correct one's separators and the wrong
    one's last separator get a gradient; the wrong one's earlier (unknown) separators none."""
    record = {"question": "Tom has 3 boxes of 4 pens. How many pens?", "solutions": [
        {"solver": "a", "solution": "Each box has 4 pens.\n3 * 4 = 12\nA: 12", "is_correct": True},
        {"solver": "b", "solution": "Each box has 3 pens.\n3 * 3 = 9\nA: 9", "is_correct": False}]}
    (tmp_path / "s.jsonl").write_text(json.dumps(record) + "\n")
    run_ingest(IngestConfig(sources=[Source(path=str(tmp_path / "s.jsonl"), format="solutions",
                                            step_labels="outcome")]), tmp_path / "ing")
    cfg = TrainConfig(backbone="tiny-bert", objective="prm", max_length=64, prm_train_fraction=1.0,
                      prm_val_fraction=0.0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path())
    tok, groups, _, _, _ = load_step_groups(tmp_path / "ing", tokenizer, cfg)
    batch = collate(groups, tok, tokenizer.pad_token_id)
    assert batch.step_target.tolist() == [1, 1, 1, 0, 0, 0] and batch.step_known.tolist() == [1, 1, 1, 0, 0, 1]
    at_sep = hidden_state_grad_norm("tiny-bert", cfg, batch)[batch.step_row, batch.step_col]  # [6]: 3 steps each
    assert (at_sep[[0, 1, 2, 5]] > 0).all()  # correct solution's steps, the wrong one's last step
    assert (at_sep[[3, 4]] == 0).all()  # the wrong solution's unknown steps


def test_tail_steps_are_dropped_whole_and_counted():
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_path())
    separator, added = choose_separator(tokenizer)
    assert (separator, added) == ("[unused0]", False)
    fmt = StepFormatter(tokenizer, Formatter(tokenizer, FormatConfig(max_length=16, min_prompt_tokens=4)), separator)
    enc = fmt.encode(["a long prompt of many words that does not fit here at all"],
                     [["one two three", "four five six", "seven eight nine ten"]])
    assert enc.prompt_truncated == [True] and enc.steps_dropped == [1] and len(enc.positions[0]) == 2
    assert len(enc.input_ids[0]) == 16  # the prompt takes back the room the kept steps leave
    ids = enc.input_ids[0]
    assert [ids[p] for p in enc.positions[0]] == [tokenizer.convert_tokens_to_ids(separator)] * 2


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-qwen2"])
def test_trains_saves_and_reloads_with_the_same_step_scores(solutions_dir, tmp_path, backbone):
    cfg = TrainConfig(backbone=backbone, objective="prm", max_length=64, batch_tokens=2048, epochs=2, lr=1e-3,
                      checkpoint_every=0, progress=False, prm_aggregate="prod", cache_dir=str(tmp_path / "cache"))
    metrics = train(solutions_dir, tmp_path / "model", cfg)
    assert metrics["train_solution_steps"] > 0 and math.isfinite(metrics["train_loss"])
    model, tokenizer = RewardModel.load(tmp_path / "model")
    assert model.config.step_separator == "[unused0]" and model.config.step_aggregate == "prod"
    prompts, steps = ["what is 2 plus 3?"], [["2 + 3 = 5", "The answer is 5"]]
    scores = score_steps(model, tokenizer, prompts, steps)[0]
    fmt = StepFormatter(tokenizer, Formatter(tokenizer, model.config.format_config), "[unused0]")
    enc = fmt.encode(prompts, steps)
    ids = torch.tensor(enc.input_ids)
    with torch.no_grad():
        logits = model(ids, torch.ones_like(ids), torch.tensor(enc.token_type_ids),
                       step_rows=torch.zeros(2, dtype=torch.long), step_cols=torch.tensor(enc.positions[0]))
    np.testing.assert_allclose(scores, torch.sigmoid(logits).numpy(), rtol=1e-5)


def _pair_targets(step_row, last, a, b, known=None) -> StepTargets:
    s = len(step_row)
    return StepTargets(torch.zeros(s), torch.tensor(known or [0.0] * s), torch.tensor(last), torch.zeros(len(last)),
                       torch.zeros(len(last)), torch.tensor(step_row), torch.tensor(a), torch.tensor(b),
                       torch.ones(len(a)))


@pytest.mark.parametrize("how", ["min", "last", "mean"])
def test_pair_term_is_log2_for_equal_scores(how):
    objective = ProcessObjective(pair_weight=2.0, pair_score=how)
    z = torch.tensor([0.3, 0.3, 0.3, 0.3])  # solutions 0 (steps 0, 1) and 1 (steps 2, 3): equal scores
    terms = objective.loss(z, _pair_targets([0, 0, 1, 1], [1, 3], [0], [1]))
    assert terms.loss.item() == pytest.approx(math.log(2), rel=1e-6)  # (2 · log 2) / (2 · 1)
    sums = dict(zip(objective.sum_names, terms.sums.tolist(), strict=True))
    assert sums["pairs"] == 1 and sums["pair_correct"] == 0  # a tie is not a right order


def test_pair_term_with_step_bce_equals_a_hand_computation():
    objective = ProcessObjective(pair_weight=0.5, pair_score="min")
    z = torch.tensor([2.0, -1.0, 0.5, 1.5])  # solution 0: steps 0, 1 (min −1); solution 1: steps 2, 3 (min 0.5)
    t = _pair_targets([0, 0, 1, 1], [1, 3], [0], [1], known=[1.0, 0.0, 0.0, 1.0])
    t.target = torch.tensor([1.0, 0.0, 0.0, 0.0])
    pair = math.log1p(math.exp(0.5 - (-1.0)))  # −log σ(s_a − s_b), s_a = −1, s_b = 0.5
    expected = (_bce(2.0, 1) + _bce(1.5, 0) + 0.5 * pair) / (2 + 0.5 * 1)
    assert objective.loss(z, t).loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("how", "touched"), [("min", [1, 2]), ("last", [1, 3]), ("mean", [0, 1, 2, 3])])
def test_pair_gradient_reaches_only_the_logits_of_the_paired_solutions_scores(how, touched):
    objective = ProcessObjective(pair_weight=1.0, pair_score=how)
    z = torch.tensor([0.9, 0.1, -0.2, 0.4, 0.7, 0.8], requires_grad=True)  # solution 2 (steps 4, 5): in no pair
    objective.loss(z, _pair_targets([0, 0, 1, 1, 2, 2], [1, 3, 5], [0], [1])).loss.backward()
    nonzero = torch.nonzero(z.grad).flatten().tolist()
    assert nonzero == touched
    assert (z.grad[[i for i in touched if i < 2]] < 0).all() and (z.grad[[i for i in touched if i >= 2]] > 0).all()
    # gradient descent raises the correct solution's score and lowers the wrong one's


def test_pairs_are_every_correct_against_every_wrong_solution_of_a_problem():
    from rewardline.training.step_data import outcome_pairs

    a, b = outcome_pairs(np.array([1.0, 0.0, 1.0, 0.0, 1.0]), np.array([1.0, 1.0, 1.0, 1.0, 0.0]))
    assert sorted(zip(a.tolist(), b.tolist(), strict=True)) == [(0, 1), (0, 3), (2, 1), (2, 3)]  # 4: unknown
    assert len(outcome_pairs(np.array([1.0, 1.0]), np.ones(2))[0]) == 0  # all correct: no pair


def test_pair_weight_enters_the_groups_normaliser(solutions_dir):
    tok = AutoTokenizer.from_pretrained(tiny_bert_path())
    cfg = TrainConfig(backbone=str(tiny_bert_path()), objective="prm", max_length=64, prm_pair_weight=3.0)
    _, train_groups, _, _, _ = load_step_groups(solutions_dir, tok, cfg)
    objective = build_objective("prm", cfg)
    for g in train_groups:
        assert len(g.a) == int((g.outcome_known * g.outcome).sum() * (g.outcome_known * (1 - g.outcome)).sum())
        assert objective.group_weight(g) == pytest.approx(float(g.step_known.sum()) + 3.0 * len(g.a))


def _unlabelled(n_problems: int) -> list[dict]:
    """Solutions whose step labels and outcome are all unknown (a `solutions` ingest with step_labels: unknown)."""
    return [{"prompt": f"Unlabelled {i}: what is {i} plus 1?", "steps": [f"{i} + 1 = {i + 1}", f"A: {i + 1}"],
             "step_labels": [None, None]} for i in range(n_problems)]


def test_problems_without_a_labelled_step_are_left_out_of_training(tmp_path):
    """Was: a global step holding only problems without a labelled step (solutions with unknown labels beside
    labelled ones) had weight 0 and `rewardline train --set objective=prm` died with 'internal error:
    ZeroDivisionError' (exit 3). They add no loss and no gradient: they are left out, and the run trains."""
    data = write_solutions(tmp_path / "mixed", arithmetic_solutions(3) + _unlabelled(6)).parent
    cfg = TrainConfig(backbone="tiny-bert", objective="prm", max_length=64, batch_tokens=64, epochs=1,
                      checkpoint_every=0, progress=False, prm_train_fraction=1.0, prm_val_fraction=0.0,
                      cache_dir=str(tmp_path / "cache"))
    metrics = train(data, tmp_path / "model", cfg)
    assert math.isfinite(metrics["train_loss"]) and metrics["steps"] == 3  # one step per labelled problem


def test_training_on_solutions_without_any_labelled_step_exits_2_saying_so(tmp_path):
    """Was: `rewardline train --data ING --set objective=prm` on an ingest of `--format solutions` (step labels
    unknown by default) died with 'internal error: ZeroDivisionError: float division by zero', exit 3. Now it
    exits 2 naming the file and what would train."""
    data = write_solutions(tmp_path / "ing", _unlabelled(4)).parent
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "model"),
                                      "--set", "objective=prm", "--set", "backbone=tiny-bert", "--set", "max_steps=2",
                                      "--set", "freeze_layers=0",
                                      "--set", f"checkpoint_dir={tmp_path / 'ck'}", "--set", "prm_train_fraction=1.0",
                                      "--set", "prm_val_fraction=0.0"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert f"{data / 'solutions.parquet'}: no labelled step in the train split" in " ".join(result.output.split())
    assert not (tmp_path / "model").exists()


def test_an_empty_train_split_says_how_the_problems_were_split(tmp_path):
    """Was: '.../solutions.parquet has no solutions in the train split', with no word of how many problems there are
    or which settings split them. Now it names the count and the split settings, and what would give a train split."""
    data = write_solutions(tmp_path / "ing", arithmetic_solutions(2)).parent
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "model"),
                                      "--set", "objective=prm", "--set", "backbone=tiny-bert", "--set", "max_steps=2",
                                      "--set", "freeze_layers=0", "--set", f"checkpoint_dir={tmp_path / 'ck'}",
                                      "--set", "prm_train_fraction=0.000001", "--set", "prm_val_fraction=0.0"])
    assert result.exit_code == 2, result.output
    assert f"{data / 'solutions.parquet'} has no solutions in the train split: its 2 problem(s) all fall in val or " \
           "test by train.prm_split_salt 'rewardline-v1', prm_train_fraction 1e-06, prm_val_fraction 0.0" in \
           " ".join(result.output.split())
