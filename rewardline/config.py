"""params.yaml → typed, validated stage configs, with ``--set [section.]key=value`` overrides.

Each stage's config is a :class:`Section` (a pydantic model): unknown keys, wrong types and
out-of-range values raise :class:`~rewardline.errors.ConfigError` with one line naming the
file (or ``--set``), ``section.key``, the bad value and what was expected, e.g.

    params.yaml: validate.require_overlap: 'maybe' is not a boolean (expected true/false)

Booleans are strict: YAML ``true``/``false`` and ``1``/``0`` (``--set x=1``) only. Numbers that
YAML 1.1 reads as strings (``1e-4`` has no dot) are parsed for numeric fields; a boolean is
never a number.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from rewardline.errors import ConfigError

T = TypeVar("T")

_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


class Section(BaseModel):
    """Base of the stage configs: one ``params.yaml`` section, validated on creation and assignment.

    ``section`` is the params.yaml key it reads (used in messages and to accept ``--set section.key``).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True,
                              allow_inf_nan=False)
    section: ClassVar[str] = ""

    def __init__(self, /, *args: Any, **values: Any) -> None:
        """Keyword arguments, or positional ones in field order (as the dataclasses these replace took)."""
        names = list(type(self).model_fields)
        if len(args) > len(names):
            raise ConfigError(f"{type(self).__name__} takes at most {len(names)} positional arguments, got {len(args)}")
        clash = sorted(set(names[:len(args)]) & set(values))
        if clash:
            raise ConfigError(f"{type(self).__name__}: {', '.join(clash)} given both by position and by name")
        values = {**dict(zip(names, args, strict=False)), **values}
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise ConfigError(describe_errors(err, type(self))) from None

    # Marks this __init__ as a plain wrapper of BaseModel's (as pydantic's RootModel does), so
    # validation of nested sections and model_validate do not route through it.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as err:
            raise ConfigError(describe_errors(err, type(self))) from None

    @field_validator("*", mode="before")
    @classmethod
    def _strict_flags_and_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``bool`` fields take only true/false/1/0 (not ``'maybe'``, not ``'yes'`` as a string);
        ``int``/``float`` fields never take a boolean (pydantic's lax mode would read ``true`` as 1)."""
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        if annotation is bool:
            if isinstance(value, bool):
                return value
            if type(value) is int and value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            raise ValueError("is not a boolean (expected true/false)")
        if isinstance(value, bool) and annotation in (int, float):
            expected = "an integer" if annotation is int else "a number"
            raise ValueError(f"is a boolean, not a number (expected {expected})")
        return value

    def replace(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` applied (``dataclasses.replace``; ``model_copy`` does not validate)."""
        return type(self)(**{**self.model_dump(), **changes})


# -- messages ------------------------------------------------------------------------------
def _expected(error: Any) -> str:
    """What a pydantic error says was expected, as the tail of ``<value> <this>``."""
    kind, ctx = error["type"], error.get("ctx") or {}
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"is out of range (expected {bounds[kind]} {limit})"
    if kind == "literal_error":
        return f"is not allowed (expected {ctx.get('expected')})"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "is not an integer"
    if kind in ("float_parsing", "float_type"):
        return "is not a number (expected a float)"
    if kind == "finite_number":
        return "is not a finite number"
    if kind == "string_type":
        return "is not a string"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "is not a mapping of keys"
    if kind == "list_type":
        return "is not a list"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return f"is invalid ({error['msg'][0].lower()}{error['msg'][1:]})"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The (nested) model class that holds the key at ``loc`` (``("sources", 0, "fromat")`` → Source)."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        pending, current = [field.annotation], None
        while pending:
            candidate = pending.pop()
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
            pending.extend(typing.get_args(candidate))
    return current


def _dotted(section: str, loc: tuple[Any, ...]) -> str:
    path = section
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f"{'.' if path else ''}{part}"
    return path or "params"


def describe_errors(err: ValidationError, model: type[Section], where: str = "",
                    overridden: frozenset[str] = frozenset(), override_origin: str = "--set",
                    override_section: str = "") -> str:
    """One line for all of ``err``'s errors: ``WHERE: section.key: VALUE is ... (expected ...)``.

    ``where`` is the params file; an error in a key of ``overridden`` is reported as ``override_origin``
    (``--set``), under ``override_section`` when given (``prm.train``: its keys are merged over ``train``).
    """
    groups: dict[str, list[str]] = {}  # origin → messages, so each origin is named once
    for error in err.errors(include_url=False):
        loc = tuple(error["loc"])
        overrides = bool(loc) and loc[0] in overridden
        lines = groups.setdefault(override_origin if overrides else where, [])
        section = override_section if overrides and override_section else model.section
        if error["type"] == "extra_forbidden":
            holder = _model_at(model, loc)
            known = sorted(holder.model_fields) if holder else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            lines.append(f"{_dotted(section, loc)}: unknown key (value {error['input']!r}); "
                         f"{hint}expected one of: {', '.join(known)}")
        elif error["type"] == "missing":
            lines.append(f"{_dotted(section, loc)}: missing (a value is required)")
        elif not loc:  # a check across keys (model validator)
            lines.append(f"{model.section}: {_expected(error)}")
        elif error["input"] is None:  # `--set lr=` or `lr:` in YAML: "None is not a number" named no mistake
            lines.append(f"{_dotted(section, loc)}: the value is empty (or null), which {_expected(error)}")
        else:
            lines.append(f"{_dotted(section, loc)}: {error['input']!r} {_expected(error)}")
    return "; ".join((f"{origin}: " if origin else "") + "; ".join(lines) for origin, lines in groups.items())


# -- params.yaml ---------------------------------------------------------------------------
def load_params(path: Path = Path("params.yaml")) -> dict[str, Any]:
    """The whole params file as a dict; a clear error when it is missing or not a mapping."""
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the project root or pass --params")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of stage sections, got {type(params).__name__}")
    return params


def section_of(params: dict[str, Any], name: str, source: str = "params.yaml") -> Any:
    """``params[name]``, the section a DVC stage reads; a missing one is a :class:`ConfigError` (exit 2) naming
    ``source``, the section and the closest section name there (``trian`` for ``train``), not a ``KeyError``."""
    if name in params:
        return params[name]
    present = [str(key) for key in params]
    # letters swapped (trian) first: difflib would rank 'retrain' above 'trian' for 'train'
    close = [key for key in present if sorted(key) == sorted(name)] or difflib.get_close_matches(name, present, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"{source}: {name}: missing section; {hint}expected a mapping under '{name}:' "
                      f"(sections there: {', '.join(present) or 'none'})")


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


def parse_overrides(pairs: list[str], section: str | None = None) -> dict[str, Any]:
    """``["lr=1e-4", "train.epochs=2"]`` → ``{"lr": 1e-4, "epochs": 2}`` (values parsed as YAML scalars).

    With ``section`` given, ``section.key=value`` (DVC's spelling) means ``key=value``, and a key
    prefixed with any other section is an error naming the expected one.
    """
    overrides: dict[str, Any] = {}
    for item in pairs:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if section is not None and "." in key:
            prefix, _, rest = key.partition(".")
            if prefix != section or not rest:
                raise ConfigError(f"--set {item!r}: this command reads the {section!r} section; "
                                  f"expected {section}.KEY=VALUE or KEY=VALUE")
            key = rest
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            reason = " ".join(str(err).split())
            raise ConfigError(f"--set {item!r}: the value is not a YAML scalar ({reason})") from None
        if isinstance(value, dict | list):
            raise ConfigError(f"--set {item!r}: expected a single value (YAML scalar), got a {type(value).__name__}")
        overrides[key] = value
    return overrides


def build(cls: type[T], section: dict[str, Any] | None, overrides: dict[str, Any] | None = None, *,
          name: str = "", source: str = "params.yaml", override_origin: str = "--set",
          override_section: str = "") -> T:
    """``cls`` from a params section with ``overrides`` (from ``--set``) applied over it.

    A :class:`Section` is validated by pydantic; errors become one :class:`ConfigError` line
    naming ``source`` (or, for a key of ``overrides``, ``override_origin`` and ``override_section``),
    ``section.key``, the value and what was expected.
    """
    label = name or getattr(cls, "section", "") or cls.__name__
    if section is not None and not isinstance(section, dict):
        raise ConfigError(f"{source}: {label}: expected a mapping of keys, got {type(section).__name__}")
    values = {**(section or {}), **(overrides or {})}
    if isinstance(cls, type) and issubclass(cls, Section):
        try:
            return cls.model_validate(values)  # type: ignore[return-value]
        except ValidationError as err:
            raise ConfigError(describe_errors(err, cls, source, frozenset(overrides or {}), override_origin,
                                              override_section)) from None
    raise TypeError(f"{cls!r} is not a rewardline.config.Section")


def defaults_of(cls: type[Section]) -> dict[str, Any]:
    """Field name → default value of a :class:`Section` (required fields left out)."""
    return {name: field.get_default(call_default_factory=True)
            for name, field in cls.model_fields.items() if not field.is_required()}


if __name__ == "__main__":  # python -m rewardline.config OVERLAY [PARAMS]: used by .ci/pipeline
    import sys

    try:
        write_overlaid_params(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else Path("params.yaml"))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
