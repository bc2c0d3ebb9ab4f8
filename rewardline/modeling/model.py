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

:meth:`RewardModel.load` (``score``, ``evaluate``, the registry's pyfunc model) checks the directory
before trusting it and raises :class:`~rewardline.errors.ModelLoadError` (exit 2) naming the file:
safetensors weights only (a directory with only ``pytorch_model.bin`` is refused: unpickling runs
code), every backbone weight present with its shape, tokenizer files present, and
``V_tok ≤ V_emb ≤ V_tok + max(1024, V_emb / 8)`` for the tokenizer's size ``V_tok`` and the
embedding rows ``V_emb`` (ids past the embedding cannot be looked up; embedding tables are padded
to a multiple of 64-128 rows and sometimes more, never to many times the vocabulary).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES
from transformers.utils import logging as hf_logging

from rewardline.errors import ModelLoadError, json_type, one_line
from rewardline.modeling.backbones import DEFAULT_BACKBONE, resolve_backbone  # also importable from here
from rewardline.modeling.formatting import FormatConfig

POOLINGS = ("auto", "first", "last", "mean")
REWARD_CONFIG = "reward_config.json"
HEAD_FILE = "reward_head.safetensors"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
_UNREADABLE = (SafetensorError, OSError, ValueError, RuntimeError, TypeError)  # what a broken file raises


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
        """Load a saved model directory (no pickle): ``(model in eval mode, tokenizer)``.

        Raises :class:`ModelLoadError` naming the file when the directory is not a complete,
        consistent reward model (see the module docstring)."""
        model_dir = Path(model_dir)
        check_model_dir(model_dir)
        config = read_reward_config(model_dir)
        head = _require(model_dir / HEAD_FILE, "the reward head (safetensors)")
        backbone = load_pretrained(AutoModel, model_dir)
        model = cls(backbone, config)
        try:
            model.head.load_state_dict(load_file(head))
        except _UNREADABLE as err:
            raise ModelLoadError(head, detail=f"unreadable ({one_line(str(err))}); expected the reward head's "
                                              "weight and bias in safetensors") from None
        tokenizer = load_tokenizer(model_dir, backbone)
        return model.to(device).eval(), tokenizer


# -- checks of a model directory before it is trusted (each raises ModelLoadError naming the file) ----
def _require(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise ModelLoadError(path, detail=f"missing; expected {expected}")
    return path


def check_model_dir(model_dir: Path) -> None:
    """A directory with ``config.json``, safetensors weights (pickle-only weights are refused: unpickling
    runs code) and tokenizer files (without them transformers builds a tokenizer of a few special
    tokens that maps every word to ``[UNK]``). Cheap: file names only, before anything is loaded."""
    if not model_dir.is_dir():
        raise ModelLoadError(model_dir, detail="not a directory; expected a model directory of `rewardline train`")
    _require(model_dir / "config.json", "the model's config.json")
    if not any((model_dir / name).is_file() for name in WEIGHT_FILES):
        pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
        found = f"only pickle weights ({', '.join(pickles)}), which are never loaded" if pickles else "no weights"
        raise ModelLoadError(model_dir / WEIGHT_FILES[0], detail=f"missing ({found}); expected safetensors weights")
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(model_dir, detail=f"no tokenizer files; expected one of {', '.join(TOKENIZER_FILES)}")


def read_reward_config(model_dir: Path) -> RewardConfig:
    """``reward_config.json`` as a :class:`RewardConfig`; :class:`ModelLoadError` naming what is wrong."""
    path = _require(model_dir / REWARD_CONFIG, "the reward config written by `rewardline train`")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        line = getattr(err, "lineno", None)
        raise ModelLoadError(path, line=line, detail=f"not valid JSON ({getattr(err, 'msg', err)})") from None
    if not isinstance(values, dict):
        raise ModelLoadError(path, expected="a JSON object", got=json_type(values))
    known = {f.name for f in fields(RewardConfig)}
    for key in values:
        if key not in known:
            raise ModelLoadError(path, field=key, detail=f"unknown key; expected one of {sorted(known)}")
    if values.get("pooling", "first") not in POOLINGS[1:]:
        raise ModelLoadError(path, field="pooling", expected=f"one of {list(POOLINGS[1:])}",
                             got=repr(values["pooling"]))
    if not isinstance(values.get("format", {}), dict):
        raise ModelLoadError(path, field="format", expected="an object", got=json_type(values["format"]))
    try:
        config = RewardConfig(**values)
        config.format_config  # noqa: B018 - unknown format keys raise here
    except TypeError as err:
        raise ModelLoadError(path, field="format", detail=one_line(str(err))) from None
    return config


def load_pretrained(auto_class: Any, model_dir: Path) -> PreTrainedModel:
    """``auto_class.from_pretrained`` from safetensors only, every weight present with its shape (a
    weight missing from the file would be initialised at random, silently)."""
    weights = next(model_dir / n for n in WEIGHT_FILES if (model_dir / n).is_file())
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # stderr carries errors only (one line each)
    try:
        loaded, info = auto_class.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True,
                                                  output_loading_info=True)
    except _UNREADABLE as err:
        raise ModelLoadError(weights, detail=f"unreadable ({one_line(str(err))}); "
                                             "expected complete safetensors weights of config.json's model") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    broken = sorted(info.get("missing_keys", ())) + [str(k[0]) for k in info.get("mismatched_keys", ())]
    if broken:
        raise ModelLoadError(weights, detail=f"{len(broken)} weights missing or of the wrong shape "
                                             f"({', '.join(broken[:3])}); expected every weight of config.json's model")
    return loaded


def load_tokenizer(model_dir: Path, model: PreTrainedModel) -> Any:
    """The saved tokenizer (files checked by :func:`check_model_dir`), refused unless its size ``V_tok``
    fits the embedding's ``V_emb`` rows: ``V_tok ≤ V_emb ≤ V_tok + max(1024, V_emb / 8)``."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except _UNREADABLE as err:
        raise ModelLoadError(model_dir, field="tokenizer", detail=f"unreadable ({one_line(str(err))})") from None
    rows, size = model.get_input_embeddings().num_embeddings, len(tokenizer)
    if not size <= rows <= size + max(1024, rows // 8):
        raise ModelLoadError(model_dir, field="tokenizer", got=f"{size} tokens",
                             expected=f"the vocabulary of the model's {rows}-row embedding (config.json)")
    return tokenizer
