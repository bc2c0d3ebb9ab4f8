"""Checks of a model directory before it is trusted: each raises :class:`~rewardline.errors.ModelLoadError`
(exit 2) naming the file and what was expected.

Safetensors weights only (a directory with only ``pytorch_model.bin`` is refused: unpickling runs
code), every weight present with its shape, tokenizer files present, and
``V_tok ≤ V_emb ≤ V_tok + max(1024, V_emb / 8)`` for the tokenizer's size ``V_tok`` and the
embedding rows ``V_emb`` (ids past the embedding cannot be looked up; embedding tables are padded
to a multiple of 64-128 rows and sometimes more, never to many times the vocabulary).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from rewardline.errors import ModelLoadError, TransientError, is_unreachable, one_line
from rewardline.modeling.backbones import hub_miss_reason, is_hub_id

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
UNREADABLE = (SafetensorError, OSError, ValueError, RuntimeError, TypeError)  # what a broken file raises


def require(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise ModelLoadError(path, detail=f"missing; expected {expected}")
    return path


def check_model_dir(model_dir: Path) -> None:
    """A directory with ``config.json``, safetensors weights (pickle-only weights are refused: unpickling
    runs code) and tokenizer files (without them transformers builds a tokenizer of a few special
    tokens that maps every word to ``[UNK]``). Cheap: file names only, before anything is loaded."""
    if not model_dir.is_dir():
        raise ModelLoadError(model_dir, detail="not a directory; expected a model directory of `rewardline train`")
    require(model_dir / "config.json", "the model's config.json")
    if not any((model_dir / name).is_file() for name in WEIGHT_FILES):
        pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
        found = f"only pickle weights ({', '.join(pickles)}), which are never loaded" if pickles else "no weights"
        raise ModelLoadError(model_dir / WEIGHT_FILES[0], detail=f"missing ({found}); expected safetensors weights")
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(model_dir, detail=f"no tokenizer files; expected one of {', '.join(TOKENIZER_FILES)}")


def load_pretrained(auto_class: Any, ref: Path | str) -> PreTrainedModel:
    """``auto_class.from_pretrained(ref)`` (a directory or an HF id) from safetensors only, every weight
    present with its shape (a weight missing from the file would be initialised at random, silently)."""
    local = Path(ref)
    weights = next((local / n for n in WEIGHT_FILES if (local / n).is_file()), ref)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # stderr carries errors only (one line each)
    try:
        loaded, info = auto_class.from_pretrained(ref, dtype=torch.float32, use_safetensors=True,
                                                  output_loading_info=True)
    except UNREADABLE as err:
        if not local.exists():  # an HF id: the Hub unreachable is an outage, anything else not loadable
            if is_unreachable(err):
                raise TransientError(f"{ref}: {hub_miss_reason(str(ref), err)}") from err
            raise ModelLoadError(local, detail=not_found(str(ref), err)) from None
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


def not_found(ref: str, err: Exception) -> str:
    """Why a model reference that is no local path failed: it cannot be a Hugging Face model id either, or it
    can and the Hub (or its cache, offline) did not have it."""
    expected = "expected a model directory (the output of `rewardline train` or `rewardline export`), a " \
               "Hugging Face model id (org/name) or a registry URI (models:/NAME@ALIAS, models:/NAME/VERSION)"
    scheme = re.match(r"([A-Za-z][\w+.-]*):/", ref)
    if scheme:  # a URI, but not one the registry reads (``model:/``, ``Models:/``): the scheme is what is wrong
        return f"{scheme.group(1)!r} is not a scheme rewardline reads; {expected}"
    if not is_hub_id(ref):
        return f"no such directory; {expected}"
    return f"no such directory, and {hub_miss_reason(ref, err)}; {expected}"


def load_tokenizer(model_dir: Path | str, model: PreTrainedModel) -> Any:
    """The saved tokenizer (files checked by :func:`check_model_dir`), refused unless its size ``V_tok``
    fits the embedding's ``V_emb`` rows: ``V_tok ≤ V_emb ≤ V_tok + max(1024, V_emb / 8)``."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except UNREADABLE as err:
        raise ModelLoadError(model_dir, field="tokenizer", detail=f"unreadable ({one_line(str(err))})") from None
    rows, size = model.get_input_embeddings().num_embeddings, len(tokenizer)
    if not size <= rows <= size + max(1024, rows // 8):
        raise ModelLoadError(model_dir, field="tokenizer", got=f"{size} tokens",
                             expected=f"the vocabulary of the model's {rows}-row embedding (config.json)")
    return tokenizer
