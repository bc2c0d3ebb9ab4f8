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


def merge_params(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` deep-merged over ``base`` (mappings merge key by key; anything else replaces)."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_params(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_overlaid_params(overlay_path: Path, params_path: Path = Path("params.yaml")) -> dict[str, Any]:
    """Rewrite ``params_path`` with the overlay file merged over it (CI's small parameter set); return it.

    Keys of the overlay must already exist in ``params_path``, so a typo fails loudly.
    """
    params, overlay = load_params(params_path), load_params(overlay_path)
    _check_known(params, overlay, str(overlay_path))
    merged = merge_params(params, overlay)
    params_path.write_text(f"# {params_path} with {overlay_path} merged over it\n"
                           + yaml.safe_dump(merged, sort_keys=False))
    return merged


def _check_known(base: dict[str, Any], overlay: dict[str, Any], where: str) -> None:
    for key, value in overlay.items():
        if key not in base:
            raise ConfigError(f"{where}: {key!r} is not a key of params.yaml (known: {sorted(base)})")
        if isinstance(value, dict) and isinstance(base[key], dict):
            _check_known(base[key], value, f"{where}:{key}")


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


if __name__ == "__main__":  # python -m rewardline.config OVERLAY [PARAMS]: used by .ci/pipeline
    import sys

    write_overlaid_params(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else Path("params.yaml"))
