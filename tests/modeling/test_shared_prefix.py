"""Shared-prefix packing: the layout, and rewards equal to per-response encoding (tiny Qwen2, fp32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rewardline.errors import ConfigError
from rewardline.modeling.model import RewardModel
from rewardline.modeling.score import score_prompt_groups, score_texts
from rewardline.modeling.shared_prefix import (
    common_prefix_length,
    pack_groups,
    packed_length,
    prefix_cache_rewards,
    resolve_shared_prefix,
    split_groups,
)

#: fp32 on CPU: packed and per-response attention sum the same terms in a different order.
ATOL = 1e-5


@pytest.fixture(scope="module")
def decoder() -> RewardModel:
    torch.manual_seed(0)
    return RewardModel.from_backbone("tiny-qwen2").eval()


def random_groups(seed: int = 0) -> list[list[np.ndarray]]:
    """Groups of K = 2, 4, 1, 3 responses (prompts of 5-40 tokens, responses of 1-12: ragged, so padded)
    and one pair without a common prefix."""
    rng = np.random.default_rng(seed)
    groups = []
    for k, p in ((2, 40), (4, 17), (1, 9), (3, 5)):
        prompt = rng.integers(1000, 2000, p)
        groups.append([np.concatenate([prompt, rng.integers(1000, 2000, rng.integers(1, 13))]) for _ in range(k)])
    groups.append([rng.integers(1000, 2000, 8), rng.integers(1000, 2000, 6)])  # nothing in common (e.g. cut prompts)
    return groups


def per_response_rewards(model: RewardModel, seqs: list[np.ndarray]) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = torch.from_numpy(s), 1
    return model(ids, mask)


def test_the_prefix_is_the_common_token_prefix_leaving_each_response_its_last_token():
    a, b = np.array([1, 2, 3, 4, 5]), np.array([1, 2, 3, 9])
    assert common_prefix_length([a, b]) == 3
    assert common_prefix_length([a, a]) == 4  # identical sequences: each keeps its last token
    assert common_prefix_length([a]) == 4
    assert common_prefix_length([a, np.array([7, 2, 3])]) == 0  # different first token: nothing shared
    assert packed_length([a, b]) == 3 + 2 + 1


def test_the_mask_lets_a_response_see_the_prompt_and_itself_causally_never_another_response():
    packed = pack_groups([[np.array([5, 6, 7, 8]), np.array([5, 6, 9])]], pad_id=0)
    # layout [5 6 | 7 8 | 9] (prefix 2), then nothing to pad in a single row
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 2]]
    assert packed.read_index.tolist() == [[0, 3], [0, 4]]
    expected = [[1, 0, 0, 0, 0],
                [1, 1, 0, 0, 0],
                [1, 1, 1, 0, 0],
                [1, 1, 1, 1, 0],
                [1, 1, 0, 0, 1]]
    assert packed.attention_mask[0, 0].int().tolist() == expected
    two = pack_groups([[np.array([5, 6, 7])], [np.array([1, 2, 3, 4, 5])]], pad_id=0)
    assert two.input_ids[0].tolist() == [5, 6, 7, 0, 0] and two.n_tokens == 8
    assert two.attention_mask[0, 0, 3].tolist() == [False, False, False, True, False]  # a pad sees only itself


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rewards_equal_per_response_encoding(decoder, attention, monkeypatch):
    monkeypatch.setattr(decoder.backbone.config, "_attn_implementation", attention)
    groups = random_groups()
    expected = per_response_rewards(decoder, [s for g in groups for s in g])
    packed = pack_groups(groups, pad_id=0)
    got = decoder(packed.input_ids, packed.attention_mask, position_ids=packed.position_ids,
                  read_index=packed.read_index)
    assert packed.n_tokens < sum(len(s) for g in groups for s in g)  # each prompt encoded once
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_prompt_kv_reuse_rewards_equal_per_response_encoding(decoder, attention, monkeypatch):
    """Scoring's path: each prefix encoded once (right-padded to the batch's longest), the responses run against
    its keys and values; a group without a common first token cannot share and is refused."""
    monkeypatch.setattr(decoder.backbone.config, "_attn_implementation", attention)
    groups = random_groups()[:-1]
    expected = per_response_rewards(decoder, [s for g in groups for s in g])
    batch = split_groups(groups, pad_id=0)
    assert batch.prefix_ids.shape == (4, 40) and batch.branch_group.tolist() == [0, 0, 1, 1, 1, 1, 2, 3, 3, 3]
    assert batch.n_tokens == sum(len(s) for s in [g[0] for g in groups]) + sum(
        len(s) - common_prefix_length(g) for g in groups for s in g[1:])
    with torch.inference_mode():
        got = prefix_cache_rewards(decoder, batch)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="no prefix to share"):
        split_groups(random_groups()[-1:], pad_id=0)


def test_grouped_scoring_scores_lone_rows_and_groups_without_a_common_prefix_per_response(decoder):
    from rewardline.modeling.device import select_runtime
    from rewardline.modeling.score import shared_prefix_rewards

    groups = random_groups()  # a lone response (K = 1), and a last group with no common first token
    seqs = [s for g in groups for s in g]
    keys = [f"prompt-{i}" for i, g in enumerate(groups) for _ in g]
    expected = per_response_rewards(decoder, seqs).detach().numpy()
    with torch.inference_mode():
        got = shared_prefix_rewards(decoder, select_runtime("cpu", "auto"), [s.tolist() for s in seqs], keys, 0, 64)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_encoders_and_other_poolings_fall_back_to_per_response_encoding(decoder):
    encoder = RewardModel.from_backbone("tiny-bert")
    assert "encoder" in encoder.shared_prefix_unsupported()
    assert resolve_shared_prefix("auto", encoder) is False
    with pytest.raises(ConfigError, match="encoder"):
        resolve_shared_prefix(True, encoder)
    assert resolve_shared_prefix("auto", decoder) is True and resolve_shared_prefix(False, decoder) is False
    mean_pooled = RewardModel.from_backbone("tiny-qwen2", pooling="mean")
    assert "pooling" in mean_pooled.shared_prefix_unsupported()


def test_score_groups_rows_by_prompt_and_equals_per_response_scoring(decoder):
    from transformers import AutoTokenizer

    from rewardline.modeling.backbones import resolve_backbone

    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("tiny-qwen2"))
    prompts = ["tell me a long story about a cat that sat on a mat " * 3, "why is the sky blue?",
               [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"},
                {"role": "user", "content": "a poem please"}]]
    candidates = [["once upon a time", "no", "the cat sat and sat and sat"], ["rayleigh scattering"],
                  ["roses are red", "violets are blue", "sugar is sweet", "and so are you"]]
    flat_p = [p for p, c in zip(prompts, candidates, strict=True) for _ in c]
    flat_r = [r for c in candidates for r in c]
    kw = {"model": decoder, "tokenizer": tokenizer, "normalize": False, "batch_tokens": 64}  # several batches
    per_response = score_texts(None, flat_p, flat_r, shared_prefix=False, **kw)
    shared = score_texts(None, flat_p, flat_r, shared_prefix=True, **kw)
    np.testing.assert_allclose(shared, per_response, atol=ATOL, rtol=0)
    grouped = score_prompt_groups(None, prompts, candidates, **kw)
    assert [len(g) for g in grouped] == [3, 1, 4]
    np.testing.assert_allclose(np.concatenate(grouped), per_response, atol=ATOL, rtol=0)
