"""A reward model as a standard transformers ``*ForSequenceClassification`` with ``num_labels=1``.

RewardBench, TRL's PPO/RLOO/GRPO trainers, OpenRLHF and vLLM load a reward model with
``AutoModelForSequenceClassification.from_pretrained(dir)`` and read ``logits[:, 0]``. rewardline's
reward is ``r = w · h_pool + b`` (:mod:`rewardline.modeling.model`); each layout below writes it into the
architecture's own classification head so that ``logit = r - c`` with ``c`` stored in ``config.json``:

* ``bert`` (BERT, MiniLM), pooling ``first``: ``BertForSequenceClassification`` computes
  ``logit = W_c · tanh(W_p h_0 + b_p) + b_c``. With ``W_p = ε I``, ``b_p = 0``, ``W_c = w / ε``,
  ``b_c = b``::

      logit = Σ_i (w_i / ε) · tanh(ε h_i) + b = r − Σ_i w_i (ε² h_i³ / 3 + O(ε⁴ h_i⁵))

  with ``ε = 2⁻¹²`` (a power of two, so ``w = W_c · ε`` is recovered bit for bit). The error is below
  ``6.2e-8 · Σ_i |w_i| |h_i|³ / 3``: about 1e-6 for MiniLM-size hidden states (measured in
  tests/modeling/test_export.py; the tolerance asked of it is 1e-4). ``c = 0``.
* ``deberta-v2`` (DeBERTa v2/v3), pooling ``first``: the ``ContextPooler``'s activation is the
  config's ``pooler_hidden_act``; with ``"linear"`` (identity), ``W_p = I``, ``b_p = 0``,
  ``W_c = w``, ``b_c = b`` the logit is ``r`` exactly. ``c = 0``.
* ``score`` (decoders: Llama, Qwen2, Mistral, Gemma ... — every ``GenericForSequenceClassification``),
  pooling ``last``: ``logit = W_s · h_last`` where ``last`` is the rightmost token whose id is not
  ``config.pad_token_id``; ``W_s = w``. The score layer has no bias, so ``c = b``.

Other poolings (``mean``; ``last`` on an encoder; ``first`` on a decoder) and other architectures have
no exact ``*ForSequenceClassification`` form: :class:`UnsupportedExport` (``rewardline export`` exits 2;
:meth:`RewardModel.save` warns and keeps the rewardline-only layout).

A **process reward model** (``reward_config.step_separator`` set) has no sequence reward: it reads
``z_k = w · h_SEP_k + b`` at each step separator (:mod:`rewardline.modeling.steps`). It is saved as the
architecture's ``*ForTokenClassification`` with two labels, ``0: incorrect`` and ``1: correct``, as TRL's
``PRMTrainer`` trains them: ``classifier`` / ``score`` rows ``[0, w]``, biases ``[0, b]``, so at every token
``softmax(logits)[1] = σ(z)`` and, at a separator, P(step correct) exactly (layout ``token``). Loading reads
``w = W_1 − W_0``, ``b = b_1 − b_0`` (the same for any two-label PRM; one label: ``w = W_0``).

``config.json`` gets a ``rewardline`` object: ``reward_mean`` / ``reward_std`` *of the logit* (so a
consumer normalises with ``logit - reward_mean``; ``reward_mean = μ_r − c``), ``temperature``
(``P(a ≻ b) = σ((logit_a − logit_b) / T)``), and what rewardline needs to rebuild its own head exactly
(``layout``, ``pooler_scale`` ε, ``logit_offset`` c, pooling, format, backbone).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, PreTrainedModel
from transformers.modeling_layers import GenericForSequenceClassification

RL_KEY = "rewardline"  # the config.json object rewardline writes
POOLER_SCALE = 2.0**-12  # ε of the ``bert`` layout
TOKEN_LAYOUT = "token"  # a process reward model as *ForTokenClassification (labels incorrect, correct)
STEP_LABELS = {0: "incorrect", 1: "correct"}


class UnsupportedExport(ValueError):
    """The reward model has no exact ``*ForSequenceClassification`` form (bad input: exit 2)."""


def layout_of(model_type: str, seqcls_class: type, pooling: str) -> str:
    """The head layout for a backbone's ``model_type``, its ``*ForSequenceClassification`` class and
    the pooling; :class:`UnsupportedExport` when the reward cannot be written into that head."""
    if issubclass(seqcls_class, GenericForSequenceClassification):
        layout, wanted = "score", "last"
    elif model_type == "bert":
        layout, wanted = "bert", "first"
    elif model_type == "deberta-v2":
        layout, wanted = "deberta-v2", "first"
    else:
        raise UnsupportedExport(
            f"no exact {seqcls_class.__name__} form for a rewardline reward model on model_type {model_type!r}: "
            "exportable are BERT/MiniLM and DeBERTa-v2 encoders with pooling 'first' and decoders with a "
            "last-token score head (Llama, Qwen2, Mistral, ...) with pooling 'last'")
    if pooling != wanted:
        raise UnsupportedExport(
            f"{seqcls_class.__name__} pools the {'last non-pad' if wanted == 'last' else 'first'} token; this "
            f"model pools {pooling!r}, which that head cannot express: train with train.pooling: {wanted} to "
            "export it")
    return layout


def _seqcls_config(backbone_config: Any, pad_token_id: int | None, layout: str) -> Any:
    config = copy.deepcopy(backbone_config)
    config.num_labels = 1  # sets id2label / label2id to one label
    config.problem_type = "regression"
    config.architectures = None
    if layout == "score":
        config.pad_token_id = pad_token_id
    if layout == "deberta-v2":
        config.pooler_hidden_act = "linear"
        config.pooler_hidden_size = config.hidden_size
    return config


def to_sequence_classification(
    backbone: PreTrainedModel, head: torch.nn.Linear, pooling: str, pad_token_id: int | None
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """``(*ForSequenceClassification model, its rewardline head info)`` computing ``logit = r − c``."""
    seqcls_class = _head_class(AutoModelForSequenceClassification, backbone)
    layout = layout_of(backbone.config.model_type, seqcls_class, pooling)
    seqcls = _with_backbone_weights(seqcls_class(_seqcls_config(backbone.config, pad_token_id, layout)), backbone,
                                    head.weight.dtype)
    w, b = head.weight.detach().cpu(), head.bias.detach().cpu()
    info: dict[str, Any] = {"layout": layout, "logit_offset": 0.0, "pooler_scale": None}
    with torch.no_grad():
        if layout == "score":
            seqcls.score.weight.copy_(w)
            info["logit_offset"] = float(b.item())
        else:
            scale = POOLER_SCALE if layout == "bert" else 1.0
            pooler = seqcls.base_model.pooler if layout == "bert" else seqcls.pooler
            pooler.dense.weight.copy_(scale * torch.eye(w.shape[1], dtype=w.dtype))
            pooler.dense.bias.zero_()
            seqcls.classifier.weight.copy_(w / scale)
            seqcls.classifier.bias.copy_(b)
            info["pooler_scale"] = scale
    return seqcls, info


def head_from_sequence_classification(seqcls: PreTrainedModel, info: dict[str, Any]) -> tuple[torch.Tensor,
                                                                                                torch.Tensor]:
    """rewardline's ``(w [1, H], b [1])`` from a model written by :func:`to_sequence_classification`."""
    if info["layout"] == "score":
        weight = seqcls.score.weight.detach()
        return weight.clone(), torch.full((1,), float(info["logit_offset"]), dtype=weight.dtype)
    weight = seqcls.classifier.weight.detach() * float(info["pooler_scale"])
    return weight, seqcls.classifier.bias.detach().clone()


def to_token_classification(backbone: PreTrainedModel, head: torch.nn.Linear) -> tuple[PreTrainedModel, dict[str, Any]]:
    """``(*ForTokenClassification model, its rewardline head info)`` of a process reward model (module docstring):
    labels ``incorrect``, ``correct`` with logits ``[0, z]`` at every token, so ``softmax(logits)[1] = σ(z)``."""
    tokcls_class = _head_class(AutoModelForTokenClassification, backbone)
    config = copy.deepcopy(backbone.config)
    config.num_labels = len(STEP_LABELS)
    config.id2label, config.label2id = dict(STEP_LABELS), {v: k for k, v in STEP_LABELS.items()}
    config.architectures, config.token_classification_bias = None, True  # the generic score layer: with a bias
    tokcls = _with_backbone_weights(tokcls_class(config), backbone, head.weight.dtype)
    linear = _token_head(tokcls)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[1].copy_(head.weight.detach()[0].cpu())
        linear.bias[1].copy_(head.bias.detach()[0].cpu())
    return tokcls, {"layout": TOKEN_LAYOUT, "logit_offset": 0.0, "pooler_scale": None}


def head_from_token_classification(tokcls: PreTrainedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """rewardline's step head ``(w [1, H], b [1])`` of a token classifier: ``σ(z) = softmax(logits)[1]`` with
    ``z = (W_1 − W_0) h + b_1 − b_0`` (two labels), or ``z = W_0 h + b_0`` (one label)."""
    linear = _token_head(tokcls)
    weight = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
    if weight.shape[0] == 1:
        return weight.clone(), bias.clone()
    if weight.shape[0] == len(STEP_LABELS):
        return (weight[1] - weight[0]).unsqueeze(0), (bias[1] - bias[0]).reshape(1)
    raise ValueError(f"{type(tokcls).__name__} has num_labels={weight.shape[0]}; a process reward model has one "
                     "output (sigmoid) or two (incorrect, correct)")


def _head_class(auto_class: Any, backbone: PreTrainedModel) -> type:
    """``auto_class``'s model class (``*ForSequenceClassification``, ``*ForTokenClassification``) for the
    backbone's config type; :class:`UnsupportedExport` when transformers has none."""
    head_class = auto_class._model_mapping.get(type(backbone.config), None)
    if head_class is None:
        kind = auto_class.__name__.removeprefix("AutoModel")
        raise UnsupportedExport(f"transformers has no *{kind} for {type(backbone.config).__name__}")
    return head_class


def _with_backbone_weights(model: PreTrainedModel, backbone: PreTrainedModel, dtype: torch.dtype) -> PreTrainedModel:
    """``model`` (in eval mode, ``dtype``) with the backbone's weights in its base model. Only pooler weights may be
    on one side alone (a token classifier has no pooler; a layout writes the pooler it needs); any other
    mismatch is :class:`UnsupportedExport`."""
    model = model.to(dtype).eval()
    missing, unexpected = model.base_model.load_state_dict(backbone.state_dict(), strict=False)
    if [k for k in (*missing, *unexpected) if not k.startswith("pooler.")]:
        raise UnsupportedExport(f"backbone weights do not fit {type(model).__name__}: missing {missing}, "
                                f"unexpected {unexpected}")
    return model


def _token_head(tokcls: PreTrainedModel) -> torch.nn.Linear:
    """The per-token linear layer: ``classifier`` (BERT, DeBERTa) or ``score`` (the generic decoder classes)."""
    return tokcls.classifier if hasattr(tokcls, "classifier") else tokcls.score


def read_rewardline_section(model_dir: Path) -> dict[str, Any]:
    """The ``rewardline`` object of ``model_dir/config.json``; {} when absent."""
    path = Path(model_dir) / "config.json"
    return dict(json.loads(path.read_text()).get(RL_KEY) or {}) if path.exists() else {}


def write_rewardline_section(model_dir: Path, section: dict[str, Any]) -> None:
    """Merge ``section`` into the ``rewardline`` object of ``model_dir/config.json``."""
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text())
    config[RL_KEY] = {**(config.get(RL_KEY) or {}), **section}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
