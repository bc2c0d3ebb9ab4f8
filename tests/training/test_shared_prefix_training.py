"""Shared-prefix training (tiny Qwen2, fp32): BT loss gradients and trained weights equal per-response encoding."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from rewardline.data.tables import read_split
from rewardline.modeling.backbones import resolve_backbone
from rewardline.modeling.formatting import FormatConfig
from rewardline.modeling.model import RewardModel
from rewardline.modeling.tokenize import tokenize_pairs_dir
from rewardline.pairs.expand import write_pairs_rows
from rewardline.training.batching import build_groups, collate, plan_batches
from rewardline.training.loop import TrainConfig, train
from rewardline.training.objectives import build_objective

ATOL = 1e-5  # fp32: the packed and per-response passes sum the same terms in a different order
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "it", "slept", "good", "bad"]


def write_long_prompt_pairs(path: Path, n_prompts: int = 12, seed: int = 0) -> Path:
    """hh-rlhf-shaped rankings: prompts of 10-20 words, K = 2, 3 or 4 responses of 2-6 words, all pairs
    (tiny-qwen2 tokenises into characters: about 70 prompt and 15 response tokens, none cut at max_length 128)."""
    rng = np.random.default_rng(seed)
    prompts, responses, pairs = [], [], []
    for p in range(n_prompts):
        pid = f"p{p}"
        prompts.append({"prompt_id": pid, "prompt": " ".join(rng.choice(WORDS, rng.integers(10, 21))),
                        "category": "syn"})
        k = 2 + p % 3
        for j in range(k):
            responses.append({"response_id": f"{pid}r{j}", "prompt_id": pid, "source": "syn",
                              "response": " ".join(rng.choice(WORDS, rng.integers(2, 7)))})
        for i, j in itertools.combinations(range(k), 2):
            pairs.append({"prompt_id": pid, "response_a_id": f"{pid}r{i}", "response_b_id": f"{pid}r{j}",
                          "label": float(rng.integers(0, 2)), "n_votes": 1, "margin": 1.0, "category": "syn",
                          "split": "val" if p % 4 == 3 else "train"})
    return write_pairs_rows(path, prompts, responses, pairs)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared_prefix")
    pairs = write_long_prompt_pairs(root / "pairs")
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("tiny-qwen2"))
    tok = tokenize_pairs_dir(pairs, tokenizer, FormatConfig(max_length=128), root / "cache")
    groups = build_groups(read_split(pairs, "train"), tok, "prompt")
    assert not tok.prompt_truncated.any() and not tok.response_truncated.any()
    return {"root": root, "pairs": pairs, "tok": tok, "groups": groups, "pad_id": tokenizer.pad_token_id}


def test_bt_loss_and_gradients_equal_per_response_encoding(data):
    torch.manual_seed(0)
    model = RewardModel.from_backbone("tiny-qwen2")
    objective = build_objective("bt", TrainConfig(margin_scale=0.5, center_coef=0.01))
    grads, losses = [], []
    for packed in (False, True):
        batch = collate(data["groups"], data["tok"], data["pad_id"], packed)
        model.zero_grad(set_to_none=True)
        rewards = model(**batch.model_inputs())
        terms = objective.loss(rewards, objective.targets(batch), normalizer=float(batch.weight.sum()))
        terms.loss.backward()
        losses.append(terms.loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        if packed:
            assert batch.input_ids.shape[0] == len(data["groups"]) and batch.attention_mask.dim() == 4
    torch.testing.assert_close(losses[1], losses[0], atol=ATOL, rtol=0)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, g in grads[0].items():  # relative to the gradient's size: they span orders of magnitude
        torch.testing.assert_close(grads[1][name], g, atol=ATOL * max(1.0, float(g.abs().max())), rtol=1e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_the_token_budget_counts_packed_tokens(data):
    groups = data["groups"]
    for g in groups:  # the prompt once: fewer tokens than its K sequences
        assert g.packed_len < sum(int(data["tok"].lengths[r]) for r in g.rows)
    batches = plan_batches(groups, 300, seed=0, epoch=0, packed=True)
    assert sorted(itertools.chain(*batches)) == list(range(len(groups)))
    for b in batches:
        assert len(b) * max(groups[g].packed_len for g in b) <= 300 or len(b) == 1
    assert len(batches) < len(plan_batches(groups, 300, seed=0, epoch=0))  # more groups fit per batch


def test_training_with_a_shared_prefix_ends_with_the_weights_of_per_response_training(data, tmp_path):
    base = dict(backbone="tiny-qwen2", max_length=128, batch_tokens=1 << 16, epochs=3, lr=1e-3, warmup_ratio=0.0,
                cache_dir=str(data["root"] / "cache"), progress=False, checkpoint_every=0, precision="fp32",
                device="cpu")  # one micro-batch of all groups per step in both modes: the same steps
    runs = {sp: train(data["pairs"], tmp_path / str(sp), TrainConfig(**base, shared_prefix=sp)) for sp in (False, True)}
    assert runs[True]["steps"] == runs[False]["steps"] == 3
    assert runs[True]["tokens_per_s"] * runs[True]["train_seconds"] < runs[False]["tokens_per_s"] * runs[False][
        "train_seconds"]  # fewer tokens encoded
    assert runs[True]["val_loss"] == pytest.approx(runs[False]["val_loss"], abs=1e-4)
    weights = [load_file(tmp_path / str(sp) / "model.safetensors") for sp in (False, True)]
    for name, w in weights[0].items():
        torch.testing.assert_close(weights[1][name], w, atol=1e-4, rtol=0, msg=lambda m, name=name: f"{name}: {m}")
