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
    """Instantiate dataclass ``cls`` from a params section; unknown keys are an error.

    Numbers that YAML 1.1 leaves as strings (``1e-4`` has no dot, so PyYAML reads a
    string) are converted for fields typed ``float`` / ``int``; ints become floats there.
    """
    values = {**(section or {}), **(overrides or {})}
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(f"params section {name or cls.__name__}: unknown key(s) {unknown}; known: {sorted(types)}")
    for key, value in values.items():
        try:
            if isinstance(value, str) and types[key] in ("float", "int"):
                values[key] = float(value) if types[key] == "float" else int(value)
            elif isinstance(value, int) and not isinstance(value, bool) and types[key] == "float":
                values[key] = float(value)
        except ValueError:
            raise ConfigError(f"params {name or cls.__name__}.{key}={value!r}: expected a {types[key]}") from None
    return cls(**values)
