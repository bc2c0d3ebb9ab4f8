"""Model references → local model directories: the champion a challenger is compared against, and the
``--model`` of every command that uses a model.

The evaluate section of ``params.yaml`` names the champion by a registry URI
(``models:/reward-model@champion``) or a model directory; :func:`split_champion` takes it out of the
section (it is not an :class:`~rewardline.evaluation.evaluate.EvalConfig` field) and
:func:`resolved_model_dir` turns it into a directory through a :class:`ModelRegistry` (None: no champion
yet); :func:`resolved_champion` does so for the champion, saying (in the gate's reason and on stderr) when a
``models:/`` name the registry does not hold is close to one it does (a typo skips the champion gate as "no
champion" would; a new model's name is no error). :func:`model_dir` does the same for a model that must exist
(``rewardline score --model models:/reward-model@champion``).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import field_validator

from rewardline.config import Section, build
from rewardline.errors import ConfigError, closest_sibling
from rewardline.registry import open_registry
from rewardline.registry.base import (
    ModelRegistry,
    is_registry_uri,
    local_model_dir,
    missing_model_reason,
    parse_model_uri,
)
from rewardline.registry.names import model_uri

CHAMPION_KEY = "champion_model"  # the evaluate section's champion reference
LOG = logging.getLogger(__name__)


class ChampionReference(Section):
    """``evaluate.champion_model`` alone, validated as every params key is (a string; empty or null: none)."""

    section: ClassVar[str] = "evaluate"
    champion_model: str | None = None

    @field_validator(CHAMPION_KEY, mode="before")
    @classmethod
    def _a_string(cls, value: Any) -> Any:
        """Not coerced: ``5`` or ``true`` is a mistake, not the directory ``./5``."""
        if value is not None and not isinstance(value, str):
            raise ValueError(f"is not a string (expected a registry URI such as {model_uri()}, or a model directory)")
        return value


def split_champion(section: Mapping[str, Any] | None, source: str = "params.yaml") -> tuple[str | None, dict[str, Any]]:
    """``(champion reference or None, the rest of the section)`` of an ``evaluate`` params section; a reference
    that is not a string is a :class:`ConfigError` naming ``source`` and ``evaluate.champion_model``."""
    rest = dict(section or {})
    ref = build(ChampionReference, {CHAMPION_KEY: rest.pop(CHAMPION_KEY, None)}, source=source).champion_model
    return (ref if ref is not None and ref.strip() else None), rest


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
    registry = registry if registry is not None else open_registry()
    with tempfile.TemporaryDirectory(prefix="rewardline-model-") as tmp:
        yield registry.load(str(ref), tmp)


@contextlib.contextmanager
def resolved_champion(ref: str | Path | None, key: str = f"evaluate.{CHAMPION_KEY}",
                      registry: ModelRegistry | None = None) -> Iterator[tuple[Path | None, str | None]]:
    """:func:`resolved_model_dir` for a champion: ``(directory or None, why None when that looks mistaken)``.

    The why (also a warning on stderr) is for a ``models:/`` URI whose model the registry does not hold while it
    holds a close name: ``no champion: evaluate.champion_model models:/reward-modle@champion: no registered model
    'reward-modle' ...; did you mean 'reward-model'?``. Otherwise (no champion yet, a first run) it is None.
    A model directory that is not there is a :class:`ConfigError` naming ``key`` (:func:`_local_champion`).
    ``key``: what named ``ref`` (the params key, or ``--champion``)."""
    if ref is not None and str(ref).strip() and not is_registry_uri(ref):
        yield _local_champion(Path(ref), key), None
        return
    if ref is not None and is_registry_uri(ref) and registry is None:
        registry = open_registry()
    with resolved_model_dir(ref, registry) as found:
        why = None
        if found is None and registry is not None and (target := parse_model_uri(str(ref))) is not None:
            close = _close_name(registry, target[0])
            if close:
                why = (f"no champion: {key} {ref}: no registered model {target[0]!r} in the registry at "
                       f"{registry.tracking_uri}; did you mean {close[0]!r}? (a new model's name: ignore this until "
                       "it is registered)")
                LOG.warning("%s", why)
        yield found, why


def _local_champion(path: Path, key: str) -> Path:
    """A champion directory named by ``key``; one that is not there (or holds no model) is a :class:`ConfigError`
    (exit 2: a directory has no "not registered yet" state, so a mistaken one must not drop the gate silently)
    naming ``key``, the path and the closest directory beside it (``models/reward-modle``: did you mean
    ``models/reward-model``?)."""
    if path.exists():
        try:
            return local_model_dir(path)
        except ConfigError as err:
            raise ConfigError(f"{key}: {err}") from None
    close = closest_sibling(path, dirs_only=True)
    hint = f"; did you mean {str(close)!r}?" if close else ""
    raise ConfigError(f"{key}: {str(path)!r}: no such model directory{hint} (expected a model directory or a "
                      f"registry URI such as {model_uri()})")


def _close_name(registry: ModelRegistry, name: str) -> list[str]:
    """``[the registered name closest to name]`` when ``name`` itself is not registered; else ``[]``, also for a
    store not made yet (its ConfigError is for the commands that list the registry: a champion there is a first
    run's "no champion")."""
    try:
        names = registry.model_names()
    except ConfigError:
        return []
    return [] if name in names else difflib.get_close_matches(name, names, n=1)


@contextlib.contextmanager
def model_dir(ref: str | Path, registry: ModelRegistry | None = None) -> Iterator[Path]:
    """A model that must exist, as a local directory for the duration of the block.

    A ``models:/`` or ``runs:/`` URI → its bundle downloaded into a temporary directory; one that names no
    model, version or alias is a :class:`ConfigError` saying what the registry holds instead. Anything else
    → ``Path(ref)`` untouched: a trained or exported directory, or a Hugging Face id, whose loader reports
    what is wrong with it."""
    if not is_registry_uri(ref):
        yield Path(ref)
        return
    registry = registry if registry is not None else open_registry()
    with resolved_model_dir(ref, registry) as found:
        if found is None:
            raise ConfigError(missing_model_reason(registry, str(ref)))
        yield found


def pinned(ref: str | Path, registry: ModelRegistry | None = None) -> tuple[str, str]:
    """``(what to load, how to name it to a person)``, from one lookup so the two agree: an alias URI →
    ``models:/reward-model/3`` and ``models:/reward-model@champion (version 3)``, the version it points to now
    (moving the alias later does not change what was loaded); any other reference, or an alias that points
    nowhere (:func:`model_dir` then says so), as it is, twice."""
    target = parse_model_uri(str(ref)) if is_registry_uri(ref) else None
    if target is None or target[2] is None:
        return str(ref), str(ref)
    registry = registry if registry is not None else open_registry()
    version = registry.resolve_alias(target[0], target[2])
    if version is None:
        return str(ref), str(ref)
    return f"models:/{target[0]}/{version}", f"{ref} (version {version})"

