"""benchmarks/bench_seed_average.py: the weight average is the tensor-wise mean and scores like a saved model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import load_benchmark
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from rewardline.modeling.formatting import FormatConfig
from rewardline.modeling.model import RewardModel
from rewardline.modeling.score import score_texts
from rewardline.modeling.tiny import build_tiny_bert

avg = load_benchmark("bench_seed_average")


def _reward_model(tmp_path: Path, seed: int) -> Path:
    backbone = build_tiny_bert(tmp_path / f"backbone{seed}", seed=seed)
    torch.manual_seed(seed)  # the head's initialisation
    model = RewardModel.from_backbone(str(backbone), format_config=FormatConfig(max_length=64)).eval()
    model.save(tmp_path / f"rm{seed}", AutoTokenizer.from_pretrained(backbone))
    return tmp_path / f"rm{seed}"


def test_weight_average_is_the_mean_of_every_tensor_and_loads_as_a_reward_model(tmp_path):
    models = [_reward_model(tmp_path, s) for s in (0, 1)]
    soup = avg.weight_average(models, tmp_path / "soup")
    states = [load_file(m / avg.WEIGHTS) for m in models]
    averaged = load_file(soup / avg.WEIGHTS)
    assert averaged.keys() == states[0].keys()
    for name, tensor in averaged.items():
        if tensor.is_floating_point():
            assert torch.allclose(tensor, (states[0][name] + states[1][name]) / 2, atol=1e-7), name
        assert not torch.equal(states[0][name], states[1][name]) or torch.equal(tensor, states[0][name])
    rewards = score_texts(soup, ["what is two plus two?"] * 2, ["four", "five, I think"], normalize=False)
    assert rewards.shape == (2,) and rewards[0] != rewards[1]


def test_weight_average_refuses_models_of_different_architectures(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    save_file({"w": torch.zeros(2)}, str(other / avg.WEIGHTS))
    with pytest.raises(ValueError, match="architecture"):
        avg.weight_average([_reward_model(tmp_path, 0), other], tmp_path / "soup")


def test_members_of_a_soup_share_torchs_seed_and_the_seed_is_restored_after():
    quality = load_benchmark("bench_quality")
    torch.manual_seed(0)
    reference = torch.randn(4)
    with quality.torch_seed_fixed_at(0):
        torch.manual_seed(7)  # what training does with train.seed = 7
        inside = torch.randn(4)
    torch.manual_seed(7)
    after = torch.randn(4)
    assert torch.equal(inside, reference)
    assert not torch.equal(after, reference)  # restored: seed 7 is seed 7 again
    with quality.torch_seed_fixed_at(None):
        torch.manual_seed(7)
        assert torch.equal(torch.randn(4), after)
