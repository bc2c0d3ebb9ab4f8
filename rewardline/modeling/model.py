"""Reward model: a transformers backbone, a pooled hidden state and a scalar linear head.

``r(x) = w · h_pool(x) + b`` where ``h_pool`` is the last hidden state at

* ``first`` – position 0 (``[CLS]``; the default for encoders),
* ``last``  – the last non-pad token, found from the attention mask, so right or left
  padding both work (the default for decoders),
* ``mean``  – the mask-weighted mean over all non-pad tokens.

A saved model directory is a standard transformers model (:mod:`rewardline.modeling.hf_format`):
``config.json`` + ``model.safetensors`` of a ``*ForSequenceClassification`` with ``num_labels=1``
whose logit is the reward (less a stored offset), so ``AutoModelForSequenceClassification``,
RewardBench, TRL and vLLM load it; plus the tokenizer files and ``reward_config.json`` (pooling,
formatting template, max length, reward normalisation). Only non-pickle files.

:meth:`RewardModel.load` also reads directories of the older layout (a ``BertModel``-style backbone
+ ``reward_head.safetensors``) and any ``*ForSequenceClassification`` reward model with
``num_labels=1`` trained elsewhere (a folder or an HF id), which runs with pooling ``model``: the
model's own pooling and head, ``r = logits[:, 0]``. It checks a directory before trusting it
(:mod:`rewardline.modeling.model_files`): safetensors only, every weight present, the tokenizer's
files and size; a bad ``reward_config.json`` is refused naming the key (exit 2).
"""

from __future__ import annotations

import functools
import inspect
import json
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from rewardline.errors import ModelLoadError, json_type, one_line
from rewardline.modeling.backbones import DEFAULT_BACKBONE, block_depths, check_max_length, load_backbone
from rewardline.modeling.formatting import FormatConfig, Formatter
from rewardline.modeling.hf_format import (
    RL_KEY,
    TOKEN_LAYOUT,
    UnsupportedExport,
    head_from_sequence_classification,
    head_from_token_classification,
    read_rewardline_section,
    to_sequence_classification,
    to_token_classification,
    write_rewardline_section,
)
from rewardline.modeling.model_files import UNREADABLE, check_model_dir, load_pretrained, load_tokenizer, require
from rewardline.modeling.shared_prefix import MASK_ATTENTION, additive_mask

POOLINGS = ("auto", "first", "last", "mean")
MODEL_POOLING = "model"  # a foreign *ForSequenceClassification: its own pooling and head
REWARD_CONFIG = "reward_config.json"
HEAD_FILE = "reward_head.safetensors"
# A padded batch runs as chunks of rows of similar length: a row joins the chunk of the longer rows
# before it while its length is >= this share of the chunk's longest, so padding is < 10 % of a chunk.
CHUNK_LENGTH_RATIO = 0.9


def length_chunks(lengths: torch.Tensor, ratio: float = CHUNK_LENGTH_RATIO) -> list[torch.Tensor]:
    """Row indices of ``lengths`` (real tokens per row) cut into chunks, longest rows first: a new
    chunk starts at the first row shorter than ``ratio ·`` the current chunk's longest row."""
    order = torch.argsort(lengths, descending=True, stable=True)
    ordered = lengths[order].tolist()
    starts, head = [0], ordered[0] if ordered else 0
    for i, n in enumerate(ordered):
        if n < ratio * head:
            starts.append(i)
            head = n
    bounds = [*starts, len(ordered)]
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


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
    residual_sd: float = 0.0  # s: val rmse of r − u (pointwise fit); win_prob = Φ(r/√(1+s²)) (score.win_probability)
    step_separator: str | None = None  # a process reward model (objective prm): the token closing each step
    step_aggregate: str = "min"  # PRM: how step scores make the solution's reward (min | prod | last | mean)

    @property
    def is_process(self) -> bool:
        """A process reward model: one logit per step, read at each step separator."""
        return self.step_separator is not None

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
        self.chunk_by_length = True  # length-chunked forward of padded batches (train.chunk_by_length)

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
        backbone = load_backbone(functools.partial(AutoModel.from_pretrained, dtype=torch.float32), name_or_path)
        check_max_length(backbone, (format_config or FormatConfig()).max_length, name_or_path)
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
        step_rows: torch.Tensor | None = None,
        step_cols: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        read_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rewards ``[N]`` of ``N`` padded sequences (a 2-D ``attention_mask``, pooled); with ``step_rows`` /
        ``step_cols`` (PRM) the head's logits ``[S]`` at those positions instead:
        ``w · h[step_rows[s], step_cols[s]] + b``; or the rewards of the responses of shared-prefix packed
        groups (:mod:`rewardline.modeling.shared_prefix`): a boolean 4-D ``attention_mask`` ``[G, 1, T, T]``,
        its ``position_ids`` and ``read_index`` ``[N, 2]``, the (row, column) of each response's last token.

        A padded batch of rows of unequal length runs as :func:`length_chunks`, each cut to its own width:
        the same rewards and gradients (each row's computation ignores padding) for fewer padded tokens
        (19 % of the default recipe's tokens at ``max_length`` 512 were padding)."""
        if attention_mask.dim() == 4:
            return self._forward_packed(input_ids, attention_mask, position_ids, read_index)
        if step_rows is not None and step_cols is not None:
            return self._forward_padded(input_ids, attention_mask, token_type_ids, step_rows, step_cols)
        chunks = length_chunks(attention_mask.sum(1)) if self.chunk_by_length else []
        if len(chunks) <= 1:
            return self._forward_padded(input_ids, attention_mask, token_type_ids)
        rewards = []
        for rows in chunks:  # each chunk cut to the columns its rows use (right or left padding)
            used = attention_mask[rows].any(0).nonzero()
            cols = slice(int(used[0]), int(used[-1]) + 1)
            types = token_type_ids[rows, cols] if token_type_ids is not None else None
            rewards.append(self._forward_padded(input_ids[rows, cols], attention_mask[rows, cols], types))
        return torch.cat(rewards)[torch.argsort(torch.cat(chunks))]

    def _forward_padded(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        step_rows: torch.Tensor | None = None,
        step_cols: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One backbone pass over a padded batch: pooled rewards ``[N]``, or the head at the PRM's step
        positions."""
        kwargs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self.config.uses_token_type_ids:
            kwargs["token_type_ids"] = token_type_ids
        if self.config.pooling == MODEL_POOLING:  # exactly what AutoModelForSequenceClassification returns
            return self.backbone(**kwargs).logits[:, 0].float()
        if self._takes_position_ids:  # positions count real tokens only: left padding is harmless
            kwargs["position_ids"] = (attention_mask.long().cumsum(1) - 1).clamp_min(0)
        hidden = self.backbone(**kwargs).last_hidden_state  # [N, T, H]
        if step_rows is not None and step_cols is not None:  # through forward, so DDP syncs the gradients
            return self.head(hidden[step_rows, step_cols].to(self.head.weight.dtype)).squeeze(-1).float()
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

    def _forward_packed(self, input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor | None,
                        read_index: torch.Tensor | None) -> torch.Tensor:
        """``r_i = w · h[read_index_i] + b`` over packed groups (the mask, additive in the weights' dtype,
        is passed to the backbone as-is)."""
        if position_ids is None or read_index is None or self.config.pooling != "last":
            raise ValueError("packed groups need position_ids, read_index and pooling 'last'")
        dtype = next(self.backbone.parameters()).dtype
        hidden = self.backbone(input_ids=input_ids, attention_mask=additive_mask(mask, dtype),
                               position_ids=position_ids).last_hidden_state
        pooled = hidden[read_index[:, 0], read_index[:, 1]]
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1).float()

    def shared_prefix_unsupported(self) -> str | None:
        """None when this model can run shared-prefix packed groups, else why not: an encoder (bidirectional
        attention: the prompt sees the response), a pooling other than ``last``, no ``position_ids``, or an
        attention implementation without custom 4-D masks."""
        config = self.backbone.config
        if is_encoder(config):
            return f"{config.model_type} is an encoder (bidirectional attention: the prompt sees the response)"
        if self.config.pooling != "last":
            return f"pooling is {self.config.pooling!r}; a shared prefix needs the reward at the last token (last)"
        if not self._takes_position_ids:
            return f"{type(self.backbone).__name__} takes no position_ids"
        attn = getattr(config, "_attn_implementation", None)
        if attn not in MASK_ATTENTION:
            return f"attention implementation {attn!r} takes no custom 4-D mask (needs one of {MASK_ATTENTION})"
        return None

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

    def freeze_bottom(self, embeddings: bool, layers: int) -> list[str]:
        """Freeze the backbone's embeddings (the parameters before its first block) and its first ``layers``
        transformer blocks (:func:`block_depths`); returns their names. Nothing below the lowest trained block
        then needs a backward pass."""
        if not embeddings and layers == 0:
            return []
        depths, n_blocks = block_depths(self.backbone)
        if layers > n_blocks:
            raise ValueError(f"train.freeze_layers={layers}: {type(self.backbone).__name__} has "
                             f"{n_blocks} transformer blocks")
        frozen = [name for name, d in depths.items() if d is not None and ((embeddings and d < 0) or 0 <= d < layers)]
        params = dict(self.named_parameters())
        for name in frozen:
            params[name].requires_grad_(False)
        return frozen

    # -- persistence -------------------------------------------------------------------
    def save(self, out_dir: Path, tokenizer: Any, temperature: float | None = None,
             require_standard: bool = False) -> None:
        """Write the standard ``*ForSequenceClassification`` directory (a PRM: ``*ForTokenClassification``,
        :mod:`rewardline.modeling.hf_format`) (safetensors), the tokenizer,
        ``reward_config.json`` and the ``rewardline`` object of ``config.json`` (module docstring).

        A pooling without such a form (``mean``, ...) raises :class:`UnsupportedExport` when
        ``require_standard`` (``rewardline export``), else warns and writes the rewardline-only layout
        (backbone + ``reward_head.safetensors``), so a training run never fails at its last step."""
        out_dir = Path(out_dir)
        try:
            last = self.config.pooling == "last" and not self.config.is_process
            pad_id = _last_token_pad_id(tokenizer, self.config.format_config) if last else None
            if self.config.is_process:  # no sequence reward: the step logits, as a token classifier
                seqcls, info = to_token_classification(self.backbone, self.head)
            elif self.config.pooling == MODEL_POOLING:
                seqcls, info = self.backbone, {"layout": MODEL_POOLING, "logit_offset": 0.0}
            else:
                seqcls, info = to_sequence_classification(self.backbone, self.head, self.config.pooling, pad_id)
        except UnsupportedExport as err:
            if require_standard:
                raise
            warnings.warn(f"{err}; saving the rewardline-only layout (backbone + {HEAD_FILE})", stacklevel=2)
            self._save_old_layout(out_dir, tokenizer)
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        seqcls.save_pretrained(out_dir)
        (out_dir / HEAD_FILE).unlink(missing_ok=True)  # a stale old-layout head would shadow the new one
        tokenizer.save_pretrained(out_dir)
        if pad_id is not None and pad_id != tokenizer.pad_token_id:  # pad with the token config.json names
            saved = AutoTokenizer.from_pretrained(out_dir)
            saved.pad_token = saved.convert_ids_to_tokens(pad_id)
            saved.save_pretrained(out_dir)
        (out_dir / REWARD_CONFIG).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        write_rewardline_section(out_dir, rewardline_section(self.config, info, temperature))

    @classmethod
    def load(cls, model_dir: Path | str, device: str | torch.device = "cpu") -> tuple[RewardModel, Any]:
        """Load a reward model (no pickle): ``(model in eval mode, tokenizer)``. ``model_dir``: a directory
        saved by :meth:`save` (either layout) or any ``*ForSequenceClassification`` with ``num_labels=1``
        (a directory or an HF id)."""
        path = Path(model_dir)
        if path.exists():
            check_model_dir(path)
        if _is_old_layout(path):
            return cls._load_old_layout(path, device)
        if path.exists() and read_rewardline_section(path).get("layout") == TOKEN_LAYOUT:  # a saved PRM
            tokcls = load_pretrained(AutoModelForTokenClassification, path)
            model = cls(tokcls.base_model, read_reward_config(path))
            model.set_head(*head_from_token_classification(tokcls))
            return model.to(device).eval(), load_tokenizer(path, tokcls)
        ref = str(model_dir)
        seqcls = load_pretrained(AutoModelForSequenceClassification, ref)
        tokenizer = load_tokenizer(ref, seqcls)
        section = dict(getattr(seqcls.config, RL_KEY, None) or {})
        saved = read_reward_config(path) if (path / REWARD_CONFIG).is_file() else None
        if section.get("layout") not in (None, MODEL_POOLING):  # written by save: rebuild the exact head
            config = saved or config_from_section(section, ref)
            model = cls(seqcls.base_model, config)
            model.set_head(*head_from_sequence_classification(seqcls, section))
            return model.to(device).eval(), tokenizer
        if seqcls.config.num_labels != 1:
            raise ValueError(f"{ref}: {type(seqcls).__name__} has num_labels={seqcls.config.num_labels}; a reward "
                             "model has one output (num_labels=1)")
        _agree_on_pad_token(seqcls, tokenizer)
        config = replace(saved, pooling=MODEL_POOLING) if saved else config_from_section(
            {**section, "pooling": MODEL_POOLING}, ref)
        return cls(seqcls, config).to(device).eval(), tokenizer

    @torch.no_grad()
    def set_head(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """The reward head's ``w [1, H]`` and ``b [1]`` (read back from a saved classification head)."""
        self.head.weight.copy_(weight)
        self.head.bias.copy_(bias)

    def _save_old_layout(self, out_dir: Path, tokenizer: Any) -> None:
        """Backbone (``save_pretrained``), ``reward_head.safetensors``, tokenizer, ``reward_config.json``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(out_dir, safe_serialization=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, out_dir / HEAD_FILE)
        tokenizer.save_pretrained(out_dir)
        (out_dir / REWARD_CONFIG).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    @classmethod
    def _load_old_layout(cls, model_dir: Path, device: str | torch.device) -> tuple[RewardModel, Any]:
        """A directory of the layout before the standard one: backbone + ``reward_head.safetensors``."""
        config = read_reward_config(model_dir)
        head = require(model_dir / HEAD_FILE, "the reward head (safetensors)")
        backbone = load_pretrained(AutoModel, model_dir)
        model = cls(backbone, config)
        try:
            model.head.load_state_dict(load_file(head))
        except UNREADABLE as err:
            raise ModelLoadError(head, detail=f"unreadable ({one_line(str(err))}); expected the reward head's "
                                              "weight and bias in safetensors") from None
        tokenizer = load_tokenizer(model_dir, backbone)
        return model.to(device).eval(), tokenizer


def read_reward_config(model_dir: Path) -> RewardConfig:
    """``reward_config.json`` as a :class:`RewardConfig`; :class:`ModelLoadError` naming what is wrong."""
    path = require(model_dir / REWARD_CONFIG, "the reward config written by `rewardline train`")
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
    if values.get("pooling", "first") not in (*POOLINGS[1:], MODEL_POOLING):
        raise ModelLoadError(path, field="pooling", expected=f"one of {[*POOLINGS[1:], MODEL_POOLING]}",
                             got=repr(values["pooling"]))
    if not isinstance(values.get("format", {}), dict):
        raise ModelLoadError(path, field="format", expected="an object", got=json_type(values["format"]))
    try:
        config = RewardConfig(**values)
        config.format_config  # noqa: B018 - unknown format keys raise here
    except TypeError as err:
        raise ModelLoadError(path, field="format", detail=one_line(str(err))) from None
    return config


def _is_old_layout(path: Path) -> bool:
    """A ``reward_head.safetensors`` directory whose ``config.json`` has no ``rewardline`` object."""
    config = path / "config.json"
    return (path / HEAD_FILE).exists() and config.exists() and RL_KEY not in json.loads(config.read_text())


def rewardline_section(config: RewardConfig, info: dict[str, Any], temperature: float | None) -> dict[str, Any]:
    """The ``rewardline`` object of ``config.json``: normalisation *of the logit* (``logit = r − c``, so
    its mean is ``reward_mean − c``), temperature, and what :meth:`RewardModel.load` rebuilds the head from."""
    return {
        **info,
        "reward_mean": config.reward_mean - info["logit_offset"],
        "reward_std": config.reward_std,
        "temperature": temperature,
        "pooling": config.pooling,
        "format": config.format,
        "backbone": config.backbone,
        **({"step_separator": config.step_separator} if config.is_process else {}),
    }


def config_from_section(section: dict[str, Any], ref: str) -> RewardConfig:
    """A :class:`RewardConfig` from a ``config.json`` ``rewardline`` object (defaults for a foreign model)."""
    return RewardConfig(
        pooling=section.get("pooling", MODEL_POOLING),
        format=section.get("format") or FormatConfig().to_dict(),
        backbone=section.get("backbone") or ref,
        reward_mean=float(section.get("reward_mean") or 0.0) + float(section.get("logit_offset") or 0.0),
        reward_std=float(section.get("reward_std") or 1.0),
    )


def _last_token_pad_id(tokenizer: Any, format_config: FormatConfig) -> int:
    """A pad id for last-token pooling: ``*ForSequenceClassification`` reads the reward at the rightmost
    token that is not ``config.pad_token_id``, so the pad must differ from the token every formatted
    sequence ends with (the EOS of the ``text`` template, the chat template's last token). The
    tokenizer's own pad token when it qualifies, else its unk, bos or another special token."""
    end = Formatter(tokenizer, format_config).encode(["a"], ["b"])["input_ids"][0][-1]
    candidates = [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id, *tokenizer.all_special_ids]
    found = next((i for i in candidates if i is not None and i != end), None)
    if found is None:
        raise UnsupportedExport("the tokenizer has no token to pad with besides the one every sequence ends with; "
                                "add a pad token")
    return int(found)


def _agree_on_pad_token(seqcls: PreTrainedModel, tokenizer: Any) -> None:
    """Pad with ``config.pad_token_id`` (the id last-token heads skip); set it from the tokenizer's pad
    or EOS token when the config has none, as TRL does."""
    text_config = seqcls.config.get_text_config()
    if text_config.pad_token_id is None:
        text_config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
    if text_config.pad_token_id is not None and tokenizer.pad_token_id != text_config.pad_token_id:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(text_config.pad_token_id)

