"""params.yaml → typed stage configs, with ``--set key=value`` overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rewardline.errors import ConfigError

T = TypeVar("T")


def load_params(path: Path = Path("params.yaml")) -> dict[str, Any]:
    """The whole params file as a dict; a clear error when it is missing or not a mapping."""
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the project root or pass --params")
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of stage sections, got {type(params).__name__}")
    return params


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr=1e-4", "epochs=2"]`` → ``{"lr": 1e-4, "epochs": 2}`` (values parsed as YAML scalars)."""
    overrides: dict[str, Any] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def build(cls: type[T], section: dict[str, Any] | None, overrides: dict[str, Any] | None = None, *,
          name: str = "") -> T:
    """Instantiate dataclass ``cls`` from a params section; unknown keys are an error."""
    values = {**(section or {}), **(overrides or {})}
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"params section {name or cls.__name__}: unknown key(s) {unknown}; known: {sorted(known)}")
    return cls(**values)
