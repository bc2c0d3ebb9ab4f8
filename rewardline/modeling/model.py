"""Reward model: a transformers backbone, a pooled hidden state and a scalar linear head.

``r(x) = w · h_pool(x) + b`` where ``h_pool`` is the last hidden state at

* ``first`` – position 0 (``[CLS]``; the default for encoders),
* ``last``  – the last non-pad token, found from the attention mask, so right or left
  padding both work (the default for decoders),
* ``mean``  – the mask-weighted mean over all non-pad tokens.

A saved model directory holds only non-pickle files:
``config.json`` + ``model.safetensors`` (the backbone, ``save_pretrained``),
``reward_head.safetensors``, the tokenizer files and ``reward_config.json``
(pooling, formatting template, max length, reward normalisation).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from rewardline.modeling.backbones import DEFAULT_BACKBONE, resolve_backbone  # also importable from here
from rewardline.modeling.formatting import FormatConfig

POOLINGS = ("auto", "first", "last", "mean")
REWARD_CONFIG = "reward_config.json"
HEAD_FILE = "reward_head.safetensors"


def is_encoder(config: Any) -> bool:
    """Masked-LM architectures (BERT, RoBERTa, DeBERTa, ModernBERT ...) are encoders."""
    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)


def resolve_pooling(config: Any, pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling != "auto":
        return pooling
    return "first" if is_encoder(config) else "last"


@dataclass
class RewardConfig:
    """What, besides weights and tokenizer, a saved reward model needs (``reward_config.json``).

    ``reward_mean`` / ``reward_std``: statistics of the raw reward on held-out responses.
    Normalised rewards are ``r - reward_mean``: a shift only, so reward differences, and
    with them the Bradley-Terry probabilities ``σ(r_a - r_b)``, are unchanged.
    """

    pooling: str = "first"
    format: dict = field(default_factory=lambda: FormatConfig().to_dict())
    backbone: str = DEFAULT_BACKBONE
    reward_mean: float = 0.0
    reward_std: float = 1.0
    uses_token_type_ids: bool = False
    objective: str = "bt"
    link: str | None = None  # probit | logit: absolute-scale rewards (trained on utility targets)
    anchored: bool | None = None  # their utilities were measured against an anchor response (u = 0)

    @property
    def absolute_scale(self) -> bool:
        """Rewards are utilities on the link's fixed scale (not only their differences matter)."""
        return self.link is not None

    @property
    def format_config(self) -> FormatConfig:
        return FormatConfig(**self.format)


class RewardModel(nn.Module):
    """Backbone + pooling + ``nn.Linear(hidden, 1)``; ``forward`` returns fp32 rewards ``[N]``."""

    def __init__(self, backbone: PreTrainedModel, config: RewardConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        hidden = backbone.config.get_text_config().hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)
        params = inspect.signature(backbone.forward).parameters
        self.config.uses_token_type_ids = "token_type_ids" in params and getattr(
            backbone.config, "type_vocab_size", 0
        ) > 1
        self._takes_position_ids = "position_ids" in params

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str = DEFAULT_BACKBONE,
        pooling: str = "auto",
        format_config: FormatConfig | None = None,
        dropout: bool = False,
    ) -> RewardModel:
        """Load a pretrained backbone (``AutoModel.from_pretrained``) and add a fresh head.

        ``dropout=False`` sets every dropout probability to 0 (as TRL's ``disable_dropout``).
        """
        backbone = AutoModel.from_pretrained(resolve_backbone(name_or_path), dtype=torch.float32)
        config = RewardConfig(
            pooling=resolve_pooling(backbone.config, pooling),
            format=(format_config or FormatConfig()).to_dict(),
            backbone=name_or_path,
        )
        model = cls(backbone, config)
        if not dropout:
            model.disable_dropout()
        return model

    def disable_dropout(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "dropout"):
            if isinstance(getattr(self.backbone.config, key, None), float):
                setattr(self.backbone.config, key, 0.0)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self.config.uses_token_type_ids:
            kwargs["token_type_ids"] = token_type_ids
        if self._takes_position_ids:  # positions count real tokens only: left padding is harmless
            kwargs["position_ids"] = (attention_mask.long().cumsum(1) - 1).clamp_min(0)
        hidden = self.backbone(**kwargs).last_hidden_state  # [N, T, H]
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if self.config.pooling == "first":  # first non-pad token (0 with right padding)
            pooled = hidden[rows, attention_mask.argmax(dim=1)]
        elif self.config.pooling == "last":  # last non-pad token, for right and left padding
            positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
            pooled = hidden[rows, (attention_mask * positions).argmax(dim=1)]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1).float()

    def freeze_unused(self) -> list[str]:
        """Freeze parameters that get no gradient (e.g. BERT's pooler), so DDP needs no
        ``find_unused_parameters``. Returns their names."""
        ids = torch.tensor([[1, 2, 3]])
        mask = torch.ones_like(ids)
        types = torch.zeros_like(ids)
        device = self.head.weight.device
        self.zero_grad(set_to_none=True)
        self(ids.to(device), mask.to(device), types.to(device)).sum().backward()
        unused = [n for n, p in self.named_parameters() if p.requires_grad and p.grad is None]
        for name, p in self.named_parameters():
            if name in unused:
                p.requires_grad_(False)
        self.zero_grad(set_to_none=True)
        return unused

    # -- persistence -------------------------------------------------------------------
    def save(self, out_dir: Path, tokenizer: Any) -> None:
        """Write backbone (safetensors), head, tokenizer and ``reward_config.json``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(out_dir, safe_serialization=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, out_dir / HEAD_FILE)
        tokenizer.save_pretrained(out_dir)
        (out_dir / REWARD_CONFIG).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: Path | str, device: str | torch.device = "cpu") -> tuple[RewardModel, Any]:
        """Load a saved model directory (no pickle): ``(model in eval mode, tokenizer)``."""
        model_dir = Path(model_dir)
        config = RewardConfig(**json.loads((model_dir / REWARD_CONFIG).read_text()))
        backbone = AutoModel.from_pretrained(model_dir, dtype=torch.float32)
        model = cls(backbone, config)
        model.head.load_state_dict(load_file(model_dir / HEAD_FILE))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        return model.to(device).eval(), tokenizer

