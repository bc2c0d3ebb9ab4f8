"""The model registry as the pipeline sees it: :class:`ModelRegistry`, :class:`ModelVersion`, and
what is written against that interface alone (gate-checked promotion, the summary, model references).

A registry holds, per model name, numbered versions (a *bundle* directory, tags, a description)
and aliases (``champion``, ``challenger``, ...) that each point at one version. A model is
referred to by a URI: ``models:/<name>@<alias>``, ``models:/<name>/<version>``, or a plain local
model directory. :class:`rewardline.registry.mlflow_backend.MlflowRegistry` implements it on MLflow;
get one with :func:`rewardline.registry.open_registry`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rewardline.errors import ConfigError, GateFailed
from rewardline.registry.names import CHAMPION, MODEL_NAME

REGISTRY_SCHEMES = ("models:/", "runs:/")
SHOWN_NAMES = 20  # registered model names a message lists at most


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its number, the aliases pointing at it, its tags and where it came from."""

    name: str
    version: str
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    run_id: str | None = None  # the run that logged it
    created: str | None = None  # ISO-8601 UTC, seconds
    description: str = ""
    source: str = ""  # where the registry keeps its files (e.g. the logged model's URI)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def gates_passed(self) -> bool:
        return self.tags.get("gates_passed") == "true"

    def failed_gates(self) -> list[str]:
        """Names of the ``gate.<name>.passed`` tags that are not ``true``."""
        return sorted(k.split(".")[1] for k, v in self.tags.items()
                      if k.startswith("gate.") and k.endswith(".passed") and v != "true")


@runtime_checkable
class ModelRegistry(Protocol):
    """Register bundles, move aliases, resolve and load models by URI."""

    tracking_uri: str  # where the registry lives (reported in registration.json and by the CLI)

    def ui_command(self) -> str:
        """How a person looks at the registry (a command or a URL)."""
        ...

    def register(self, name: str, bundle_dir: Path, tags: Mapping[str, Any], description: str = "",
                 run_id: str | None = None) -> ModelVersion:
        """Store ``bundle_dir`` as a new version of ``name`` (created when missing) with ``tags`` and
        ``description``; ``run_id``: the tracking run it belongs to, when there is one."""
        ...

    def set_alias(self, name: str, alias: str, version: int | str) -> None:
        """Point ``name@alias`` at ``version`` (moving it when it points elsewhere)."""
        ...

    def resolve_alias(self, name: str, alias: str) -> str | None:
        """The version ``name@alias`` points to; None when the model or the alias does not exist."""
        ...

    def get_version(self, name: str, version: int | str) -> ModelVersion | None:
        """Version ``version`` of ``name``; None when there is no such version."""
        ...

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first, with its aliases and tags; [] for an unknown name."""
        ...

    def model_names(self) -> list[str]:
        """The names of the registered models, sorted; [] when there are none."""
        ...

    def load(self, model_uri: str, dst: Path | str | None = None) -> Path | None:
        """The local bundle directory of ``model_uri`` (a registry URI is downloaded into ``dst``; a
        plain model directory is returned as it is); None when the name, version or alias does not exist."""
        ...


def is_registry_uri(ref: str | Path) -> bool:
    return str(ref).startswith(REGISTRY_SCHEMES)


def parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None] | None:
    """``models:/name@alias`` → ``(name, None, alias)``; ``models:/name/3`` → ``(name, "3", None)``; else None."""
    m = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", model_uri)
    return (m.group(1), m.group(3), m.group(2)) if m else None


def bare_model_name(model_uri: str) -> str | None:
    """``models:/reward-model`` → ``reward-model``: a registered model's name with neither a version nor an alias,
    which MLflow would take for a logged model's id (those are ``m-`` and 32 hex digits); else None."""
    m = re.fullmatch(r"models:/([^/@]+)/?", model_uri)
    return m.group(1) if m and not re.fullmatch(r"m-[0-9a-f]{32}", m.group(1)) else None


def missing_model_reason(registry: ModelRegistry, model_uri: str) -> str:
    """Why ``registry.load(model_uri)`` found nothing, for the user: which of the name, the version or the
    alias does not exist in the registry at ``registry.tracking_uri``, what there is instead, and how to get it."""
    where = f"in the registry at {registry.tracking_uri}"
    target = parse_model_uri(model_uri)
    bare = bare_model_name(model_uri)
    if bare is not None:
        return (f"{model_uri}: names no version or alias; expected models:/{bare}@ALIAS (e.g. "
                f"models:/{bare}@{CHAMPION}) or models:/{bare}/VERSION (`rewardline registry` lists them)")
    if target is None:
        return f"{model_uri}: no such model or run {where}"
    name, version, alias = target
    versions = registry.list_versions(name)
    if not versions:
        return f"{model_uri}: {unknown_model_reason(registry, name)}"
    aliases = {a: v.version for v in versions for a in v.aliases}
    held = ", ".join(f"@{a} → version {v}" for a, v in sorted(aliases.items())) or "no aliases"
    numbers = f"versions {versions[0].version}–{versions[-1].version}" if len(versions) > 1 else \
        f"version {versions[0].version}"
    if alias is not None:
        options = (f" --name {name}" if name != MODEL_NAME else "") + (f" --alias {alias}" if alias != CHAMPION else "")
        return (f"{model_uri}: {name!r} has no alias {alias!r} {where} ({held}; {numbers}); point it at a version "
                f"in the MLflow UI or with `rewardline promote --version N{options}`")
    return f"{model_uri}: {name!r} has no version {version} {where} ({numbers}; {held})"


def unknown_model_reason(registry: ModelRegistry, name: str) -> str:
    """Why ``name`` has no versions in ``registry``, for the user: no registered model of that name (naming the
    ones there are, or how to register one when there are none), or a registered model without versions."""
    where = f"in the registry at {registry.tracking_uri}"
    names = registry.model_names()
    if name in names:
        return f"registered model {name!r} has no versions {where} (`rewardline register` or `make run` adds one)"
    if names:
        shown = ", ".join(names[:SHOWN_NAMES]) + (f", … ({len(names)} in all)" if len(names) > SHOWN_NAMES else "")
        return f"no registered model {name!r} {where}; it holds: {shown} (choose one with --name or in the URI)"
    return (f"no registered model {name!r} {where} (`rewardline register` or `make run` registers one; outside the "
            "project, cd to it or set MLFLOW_TRACKING_URI)")


def local_model_dir(path: str | Path) -> Path:
    """``path`` when it is a reward model directory: rewardline's (it has ``reward_config.json``) or one trained
    elsewhere (a transformers ``config.json``: ``--model`` takes it, the model loader checks it); else ConfigError."""
    path = Path(path)
    if not (path / "reward_config.json").exists() and not (path / "config.json").is_file():
        raise ConfigError(f"{path} is not a reward model directory (no reward_config.json, nor the config.json of a "
                          "transformers model)")
    return path


def version_number(version: int | str) -> str:
    """A model version as the registry spells it (``"01"`` → ``"1"``); ConfigError when it is not a number."""
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"--version {version!r}: expected a model version number (1, 2, ...; "
                          "`rewardline registry` lists them)")
    return str(int(text))


def promote(registry: ModelRegistry, name: str, version: int | str, alias: str = CHAMPION,
            require_gates: bool = True) -> str | None:
    """Point ``name@alias`` at ``version``; return the version it pointed to before (None: none).

    Refuses (:class:`GateFailed`) a version whose ``gates_passed`` tag is not ``true`` unless
    ``require_gates=False``, and (:class:`ConfigError`) a version that is not a number or does not exist (saying
    what the registry holds instead)."""
    version = version_number(version)
    found = registry.get_version(name, version)
    if found is None:
        raise ConfigError(missing_model_reason(registry, f"models:/{name}/{version}"))
    if require_gates and not found.gates_passed:
        failed = found.failed_gates()
        tag = found.tags.get("gates_passed")
        state = (f"its gates_passed tag is {tag!r}" if tag is not None else
                 "it has no gates_passed tag (registered outside the register stage, its gates unknown)")
        raise GateFailed(f"refusing to make version {version} of {name!r} the {alias}: {state}"
                         + (f" (failed: {', '.join(failed)})" if failed else "") + "; use --force to promote anyway")
    before = registry.resolve_alias(name, alias)
    registry.set_alias(name, alias, version)
    return before


#: The JSON type of a version's ``calibration.<key>`` tag in :func:`registry_summary` (the others: strings).
CALIBRATION_TYPES: dict[str, type] = {"anchored": bool, "residual_sd": float, "temperature": float}


def tag_json(value: str | None, kind: type = str) -> Any:
    """A tag's string (``mlflow_values.tag_value`` wrote it) as a JSON value of ``kind``: ``none`` or no tag → None,
    ``true`` / ``false`` → a bool, a number → a float; a string that is none of these is kept as it is."""
    if value is None or value == "none":
        return None
    if kind is bool and value in ("true", "false"):
        return value == "true"
    if kind is float:
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def registry_summary(registry: ModelRegistry, name: str) -> dict[str, Any]:
    """``{model_name, versions: [{version, aliases, gates_passed, git_commit, calibration, run_id, created}],
    aliases}``; ``calibration``: the version's ``calibration.*`` tags (objective, link, anchored, residual_sd,
    temperature). Typed for scripts: version numbers (``aliases``' values too) are ints, ``gates_passed`` and
    ``anchored`` booleans (``gates_passed`` None: no such tag), ``residual_sd`` / ``temperature`` floats,
    ``created`` an ISO-8601 UTC string. ConfigError when there is no registered model ``name``, unless it is the
    default name in a registry that holds none yet (a new project: an empty summary)."""
    versions = registry.list_versions(name)
    if not versions:
        names = registry.model_names()
        if name not in names and (names or name != MODEL_NAME):
            raise ConfigError(unknown_model_reason(registry, name))
    rows = [{"version": int(v.version), "aliases": sorted(v.aliases),
             "gates_passed": tag_json(v.tags.get("gates_passed"), bool), "git_commit": v.tags.get("git_commit"),
             "calibration": {key: tag_json(t, CALIBRATION_TYPES.get(key, str)) for k, t in sorted(v.tags.items())
                             if (key := k.removeprefix("calibration.")) != k},
             "run_id": v.run_id, "created": v.created} for v in versions]
    aliases = {alias: int(v.version) for v in versions for alias in v.aliases}
    return {"model_name": name, "versions": rows, "aliases": dict(sorted(aliases.items()))}
