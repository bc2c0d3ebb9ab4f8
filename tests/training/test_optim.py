"""The optimizer's parameter groups: the reward head's learning-rate scale and layer-wise lr decay."""

from __future__ import annotations

import pytest
import torch

from rewardline.modeling.model import RewardModel
from rewardline.modeling.tiny import TINY_BERT
from rewardline.training.loop import TrainConfig
from rewardline.training.optim import lr_scales, make_optimizer, set_lr


@pytest.fixture(scope="module")
def model() -> RewardModel:
    return RewardModel.from_backbone(TINY_BERT)


def _group_lrs(opt: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}


def test_default_is_one_lr_for_every_parameter_in_two_groups(model):
    opt = make_optimizer(model, TrainConfig(), torch.device("cpu"))
    assert [g["weight_decay"] for g in opt.param_groups] == [TrainConfig().weight_decay, 0.0]
    set_lr(opt, 0.01)
    assert set(_group_lrs(opt).values()) == {0.01}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_head_scale_and_layer_decay_give_each_parameter_its_lr(model):
    cfg = TrainConfig().replace(head_lr_scale=10.0, layer_lr_decay=0.5)
    scales = lr_scales(model, cfg)
    n_blocks = model.backbone.config.num_hidden_layers
    assert scales["head.weight"] == scales["head.bias"] == 10.0
    assert scales["backbone.embeddings.word_embeddings.weight"] == 0.5**n_blocks
    for i in range(n_blocks):
        assert scales[f"backbone.encoder.layer.{i}.attention.self.query.weight"] == 0.5 ** (n_blocks - 1 - i)
    assert scales["backbone.pooler.dense.weight"] == 1.0  # after the last block
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    set_lr(opt, 0.01)
    lrs, params = _group_lrs(opt), dict(model.named_parameters())
    for name, scale in scales.items():
        assert lrs[id(params[name])] == pytest.approx(0.01 * scale), name
    decays = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays[id(params["head.weight"])] == cfg.weight_decay and decays[id(params["head.bias"])] == 0.0


def test_frozen_parameters_are_left_out(model):
    frozen = RewardModel.from_backbone(TINY_BERT)
    names = frozen.freeze_bottom(embeddings=True, layers=1)
    assert names and all(".layer.0." in n or "embeddings" in n for n in names)
    opt = make_optimizer(frozen, TrainConfig().replace(layer_lr_decay=0.8), torch.device("cpu"))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in frozen.parameters() if p.requires_grad}


def test_ranges_are_checked():
    from rewardline.errors import ConfigError

    for bad in ("layer_lr_decay=0", "layer_lr_decay=1.5", "head_lr_scale=0", "label_smoothing=1"):
        with pytest.raises(ConfigError):
            TrainConfig().override([bad])
