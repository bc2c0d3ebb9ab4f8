"""Batched, length-sorted scoring of a saved reward model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import save_tiny_reward_model
from hypothesis import given
from hypothesis import strategies as st

from rewardline.modeling.batching import length_batches
from rewardline.modeling.formatting import Formatter
from rewardline.modeling.model import RewardModel
from rewardline.modeling.score import score_jsonl, score_texts, win_probability


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_reward_model(tmp_path_factory.mktemp("score"), max_length=40, reward_mean=0.5)


def _direct(model_dir, prompts, responses):
    model, tok = RewardModel.load(model_dir)
    enc = Formatter(tok, model.config.format_config).encode(prompts, responses)
    with torch.inference_mode():
        return np.array([
            model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), torch.tensor([ty])).item()
            for ids, ty in zip(enc["input_ids"], enc["token_type_ids"], strict=True)
        ])


def test_batched_scores_equal_one_by_one_scores_in_input_order(model_dir):
    rng = np.random.default_rng(0)
    prompts = [" ".join(["why is the sky blue"] * int(rng.integers(1, 6))) for _ in range(23)]
    responses = [" ".join(["because of light"] * int(rng.integers(1, 9))) for _ in range(23)]
    raw = score_texts(model_dir, prompts, responses, batch_tokens=100, normalize=False)
    np.testing.assert_allclose(raw, _direct(model_dir, prompts, responses), rtol=1e-4, atol=1e-5)
    norm = score_texts(model_dir, prompts, responses, batch_tokens=100000)
    np.testing.assert_allclose(norm, raw - 0.5, rtol=1e-4, atol=1e-5)  # a shift: differences unchanged
    assert score_texts(model_dir, [], []).shape == (0,)


def test_jsonl_rows_get_a_reward_and_keep_their_fields(model_dir, tmp_path):
    rows = [
        {"id": 1, "prompt": "what is a cat", "response": "a small animal"},
        {"id": 2, "prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                             {"role": "user", "content": "how are you"}], "response": "fine thanks"},
    ]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert score_jsonl(model_dir, src, dst) == 2
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [o["id"] for o in out] == [1, 2] and all(isinstance(o["reward"], float) for o in out)
    assert out[1]["prompt"] == rows[1]["prompt"]
    expected = score_texts(model_dir, ["what is a cat"], ["a small animal"])[0]
    assert out[0]["reward"] == pytest.approx(float(expected), abs=1e-5)


def test_an_absolute_scale_model_is_not_shifted_and_gets_win_probabilities(model_dir, tmp_path):
    model, tok = RewardModel.load(model_dir)
    model.config.objective, model.config.link, model.config.anchored = "thurstone", "logit", True
    model.save(tmp_path / "absolute", tok)
    prompts, responses = ["what is a cat", "what is a dog"], ["a small animal", "a loyal animal"]
    raw = score_texts(model_dir, prompts, responses, normalize=False)
    np.testing.assert_allclose(score_texts(tmp_path / "absolute", prompts, responses), raw, rtol=1e-5)  # no shift
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in zip(prompts, responses,
                                                                                           strict=True)))
    score_jsonl(tmp_path / "absolute", src, tmp_path / "out.jsonl")
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([o["win_prob"] for o in out], 1 / (1 + np.exp(-raw)), rtol=1e-5)
    score_jsonl(model_dir, src, tmp_path / "pairwise.jsonl")  # a pairwise (bt) model: no win_prob
    assert all("win_prob" not in json.loads(line) for line in (tmp_path / "pairwise.jsonl").read_text().splitlines())
    assert win_probability(np.array([0.0]), "probit")[0] == 0.5
    with pytest.raises(ValueError, match="link"):
        win_probability(np.array([0.0]), "identity")
    model.config.residual_sd = 0.8  # the val residual sd s: win_prob = σ(r/√(1 + π s²/8)), less sure than σ(r)
    model.save(tmp_path / "absolute_sd", tok)
    score_jsonl(tmp_path / "absolute_sd", src, tmp_path / "out_sd.jsonl")
    out_sd = [json.loads(line)["win_prob"] for line in (tmp_path / "out_sd.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(out_sd, 1 / (1 + np.exp(-raw / np.sqrt(1 + np.pi * 0.64 / 8))), rtol=1e-5)


def test_win_probability_with_a_residual_sd_is_the_expected_win_rate_over_the_residual():
    """u = r + e, e ~ N(0, s²): E[Φ(u)] = Φ(r/√(1+s²)) exactly (probit); E[σ(u)] ≈ σ(r/√(1+πs²/8)) (logit)."""
    from scipy.special import expit, ndtr

    r, s = np.linspace(-3, 3, 13), 1.3
    e = np.random.default_rng(0).normal(0.0, s, 400_000)
    np.testing.assert_allclose(win_probability(r, "probit", s), [ndtr(x + e).mean() for x in r], atol=2e-3)
    np.testing.assert_allclose(win_probability(r, "logit", s), [expit(x + e).mean() for x in r], atol=0.02)
    np.testing.assert_array_equal(win_probability(r, "probit", 0.0), ndtr(r))
    assert np.all(np.abs(win_probability(r, "probit", s) - 0.5) <= np.abs(ndtr(r) - 0.5))  # towards 1/2
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="residual_sd"):
            win_probability(r, "probit", bad)


@given(st.lists(st.integers(0, 300), max_size=60), st.integers(1, 1000))
def test_length_batches_cover_every_row_once_longest_first_within_the_budget(lengths, batch_tokens):
    lengths = np.array(lengths, np.int64)
    batches = list(length_batches(lengths, batch_tokens))
    order = np.concatenate(batches) if batches else np.array([], np.int64)
    assert sorted(order.tolist()) == list(range(len(lengths)))  # every row exactly once
    assert (np.diff(lengths[order]) <= 0).all()  # longest first, across batches too
    for rows in batches:  # the first row sets the padded width; a row longer than the budget goes alone
        assert len(rows) * max(int(lengths[rows[0]]), 1) <= batch_tokens or len(rows) == 1


def test_a_prompt_of_messages_is_scored_on_the_text_ingest_trains_on(model_dir):
    """Train = serve: ``score`` rendered messages as "User: hi\n\nAssistant: hello ..." while ingest stores
    "hi" (a lone user message) or "\n\nHuman: hi\n\nAssistant: hello ...\n\nAssistant:", so an encoder model
    scored another text than it was trained on."""
    import pyarrow as pa

    from rewardline.data import schema as S
    from rewardline.data.adapters.native import prompt_columns

    conversations = [[{"role": "user", "content": "what is a cat"}],
                     [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                      {"role": "user", "content": "what is a cat"}]]
    stored, _ = prompt_columns(pa.nulls(2, pa.string()), pa.array(conversations, pa.list_(S.MESSAGE)))
    responses = ["a small animal", "a small animal"]
    np.testing.assert_allclose(score_texts(model_dir, conversations, responses),
                               score_texts(model_dir, stored.to_pylist(), responses), rtol=1e-6, atol=1e-6)
