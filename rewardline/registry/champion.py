"""The champion a challenger is compared against: ``evaluate.champion_model`` → a local model directory.

The evaluate section of ``params.yaml`` names the champion by a registry URI
(``models:/reward-model@champion``) or a model directory; :func:`split_champion` takes it out of the
section (it is not an :class:`~rewardline.evaluation.evaluate.EvalConfig` field) and
:func:`resolved_model_dir` turns it into a directory through a :class:`ModelRegistry`.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rewardline.registry.base import ModelRegistry, is_registry_uri, local_model_dir

CHAMPION_KEY = "champion_model"  # the evaluate section's champion reference


def split_champion(section: Mapping[str, Any] | None) -> tuple[str | None, dict[str, Any]]:
    """``(champion reference or None, the rest of the section)`` of an ``evaluate`` params section."""
    rest = dict(section or {})
    ref = rest.pop(CHAMPION_KEY, None)
    return (str(ref) if ref is not None and str(ref).strip() else None), rest


@contextlib.contextmanager
def resolved_model_dir(ref: str | Path | None, registry: ModelRegistry | None = None) -> Iterator[Path | None]:
    """A model reference as a local directory for the duration of the block.

    None or "" → None; a ``models:/`` or ``runs:/`` URI → its bundle downloaded into a temporary
    directory by ``registry`` (default: :func:`rewardline.registry.open_registry`), None when the
    model, version or alias does not exist; anything else → that directory (which must be a model dir)."""
    if ref is None or str(ref).strip() == "":
        yield None
        return
    if not is_registry_uri(ref):
        yield local_model_dir(ref)
        return
    if registry is None:
        from rewardline.registry import open_registry

        registry = open_registry()
    with tempfile.TemporaryDirectory(prefix="rewardline-model-") as tmp:
        yield registry.load(str(ref), tmp)
