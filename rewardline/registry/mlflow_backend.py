"""MLflow configuration and :class:`MlflowRegistry`, the :class:`ModelRegistry` on MLflow's model registry.

Where MLflow lives: ``MLFLOW_TRACKING_URI`` when set (a server, e.g. the local stack's), else the
embedded default ``sqlite:///<project>/mlflow.db`` with new experiments keeping their artifacts in
``<project>/mlartifacts/<experiment>`` (:func:`experiment_id`). ``mlflow`` is imported inside the
functions, so importing this module stays cheap.

A registered version is a pyfunc model logged into a run (:func:`rewardline.registry.pyfunc.log_model_bundle`)
and registered from the logged model, so ``mlflow.pyfunc.load_model("models:/reward-model@champion")``
and ``mlflow models serve`` work on it; :meth:`MlflowRegistry.load` downloads its bundle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewardline.errors import ConfigError, PermissionDenied, TransientError, one_line
from rewardline.registry.base import ModelVersion, bare_model_name, is_registry_uri, local_model_dir, parse_model_uri
from rewardline.registry.mlflow_values import MAX_DESCRIPTION, tag_values
from rewardline.registry.names import EXPERIMENT

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion as MlflowModelVersion

_configured = False
_project_defaults: set[str] = set()  # the embedded default stores configure_mlflow chose in this process
#: MLflow's error codes for a refused user -> the HTTP status the auth app answered.
_AUTH_CODES = {"PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401}
#: MLflow's error codes for a registered model or version that is not there (a version that is not a number:
#: INVALID_PARAMETER_VALUE); any other error is a store that did not answer.
_ABSENT_CODES = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


def refused(err: Exception, action: str, needs: str, tracking_uri: str) -> Exception:
    """``err`` as a one-line :class:`PermissionDenied` naming who was refused, what and the permission it
    needs, when MLflow's auth app refused the request (403 / 401); else ``err`` itself."""
    status = _AUTH_CODES.get(str(getattr(err, "error_code", "")))
    if status is None:
        return err
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    who = f"user {user!r}" if user else "an anonymous client (MLFLOW_TRACKING_USERNAME not set)"
    if status == 401:
        return PermissionDenied(detail=f"{tracking_uri} did not authenticate {who} (401): cannot {action}; set "
                                       "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (docs/registry.md)")
    return PermissionDenied(detail=f"{tracking_uri} refused {who} (403 permission denied): cannot {action}; "
                                   f"that needs {needs}, ask an MLflow admin to grant it (docs/registry.md)")



def configure_mlflow(project_dir: Path | str = ".") -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI``, or at the embedded default
    ``sqlite:///<abs project_dir>/mlflow.db``; return the URI."""
    import mlflow

    global _configured
    default = f"sqlite:///{Path(project_dir).resolve() / 'mlflow.db'}"
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default
    if uri == default:  # mlflow.set_tracking_uri exports the variable: remember which URIs nobody set
        _project_defaults.add(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _configured = True
    return uri


def name_problem(kind: str, value: str) -> str | None:
    """Why MLflow would refuse ``value`` as a registered model's name (``kind`` "model") or an alias ("alias"), in
    MLflow's words; None when it accepts it. Checked before anything is logged, so a bad name registers nothing."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils import validation

    checks = ((validation._validate_model_name,) if kind == "model" else
              (validation._validate_model_alias_name, validation._validate_model_alias_name_reserved))
    try:
        for check in checks:
            check(value)
    except MlflowException as err:
        return one_line(err.message)
    return None


def is_configured() -> bool:
    """Whether :func:`configure_mlflow` ran in this process."""
    return _configured


def ensure_configured() -> str:
    """The tracking URI; ``MLFLOW_TRACKING_URI`` wins, else the first :func:`configure_mlflow`
    of this process, else the default of the current directory."""
    import mlflow

    if os.environ.get("MLFLOW_TRACKING_URI") or not _configured:
        return configure_mlflow(".")
    return mlflow.get_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def client(tracking_uri: str | None = None) -> MlflowClient:
    """A client of ``tracking_uri`` (default: :func:`ensure_configured`) for tracking and registry;
    ConfigError (:func:`unusable_store`) when MLflow cannot open a store at that URI."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException
    from sqlalchemy.exc import ArgumentError

    uri = tracking_uri or ensure_configured()
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except ArgumentError as err:  # SQLAlchemy: a sqlite URL of the wrong form (sqlite://path)
        raise unusable_store(uri, "a malformed sqlite URL") from err
    except UnsupportedModelRegistryStoreURIException as err:
        raise unusable_store(uri, f"unknown scheme {uri.split(':', 1)[0]!r}") from err
    except MlflowException as err:  # a path or file: URI: MLflow's file store, retired
        if str(err.error_code) != "INVALID_PARAMETER_VALUE":
            raise
        raise unusable_store(uri, "a path, which MLflow reads as its retired file store") from err


def unusable_store(uri: str, reason: str) -> ConfigError:
    """The one-line error for a tracking URI MLflow cannot open a store at (a typo in ``MLFLOW_TRACKING_URI``):
    never "no registered model", which would skip the champion gate."""
    setting = "MLFLOW_TRACKING_URI=" if os.environ.get("MLFLOW_TRACKING_URI") == uri else "tracking URI "
    return ConfigError(f"{setting}{uri!r}: not a store MLflow can open ({reason}); expected http(s)://HOST:PORT "
                       "(a server), sqlite:////ABSOLUTE/PATH.db or sqlite:///RELATIVE/PATH.db (docs/registry.md)")


def experiment_id(name: str = EXPERIMENT, tracking_uri: str | None = None) -> str:
    """The id of experiment ``name``, created when missing (artifacts next to a sqlite store)."""
    mlflow_client = client(tracking_uri)
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    db = sqlite_path(mlflow_client.tracking_uri)
    location = (db.parent / "mlartifacts" / name).as_uri() if db else None
    return mlflow_client.create_experiment(name, artifact_location=location)


def ui_command(tracking_uri: str | None = None) -> str:
    """How to look at the runs and the registry: ``mlflow ui`` on an embedded store, else the server's URL."""
    uri = tracking_uri or ensure_configured()
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
    return f"open {uri}"


class MlflowRegistry:
    """:class:`~rewardline.registry.base.ModelRegistry` on the MLflow model registry at ``tracking_uri``
    (default: :func:`ensure_configured`)."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri or ensure_configured()
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        """Made at first use: making one opens (and creates) an embedded store, which looking must not do."""
        if self._client is None:
            self._client = client(self.tracking_uri)
        return self._client

    @classmethod
    def for_project(cls, project_dir: Path | str = ".") -> MlflowRegistry:
        """The registry of ``project_dir``: ``MLFLOW_TRACKING_URI``, else its embedded sqlite store."""
        return cls(configure_mlflow(project_dir))

    def ui_command(self) -> str:
        return ui_command(self.tracking_uri)

    # -- writing ---------------------------------------------------------------------------
    def register(self, name: str, bundle_dir: Path, tags: Mapping[str, Any], description: str = "",
                 run_id: str | None = None) -> ModelVersion:
        """Log ``bundle_dir`` as a pyfunc model into run ``run_id`` and register the logged model as a
        new version of ``name``. ``run_id`` None: the active run, else a new ``register`` run in the
        ``rewardline`` experiment; a run given by id that is not the active one is resumed and ends finished."""
        import mlflow
        from mlflow.exceptions import MlflowException

        from rewardline.registry.bundle import calibration_tags
        from rewardline.registry.pyfunc import log_model_bundle

        self._make_global()
        active = mlflow.active_run()
        if active is not None and run_id in (None, active.info.run_id):
            info = log_model_bundle(bundle_dir)
        elif run_id is None:  # a run of its own, in the experiment whose artifacts sit next to the store
            with mlflow.start_run(experiment_id=experiment_id(EXPERIMENT, self.tracking_uri), run_name="register"):
                info = log_model_bundle(bundle_dir)
        else:
            with mlflow.start_run(run_id=run_id, nested=active is not None):
                info = log_model_bundle(bundle_dir)
        try:
            self.client.create_registered_model(name, description="Reward model: (prompt, response) → scalar reward.")
        except MlflowException as err:
            if "ALREADY_EXISTS" not in str(err.error_code):
                raise
        created = self.client.create_model_version(
            name, source=info.model_uri, run_id=run_id or info.run_id,
            tags=tag_values({**calibration_tags(Path(bundle_dir)), **tags}),
            description=description[:MAX_DESCRIPTION], model_id=info.model_id)
        return self._version(created, ())

    def set_alias(self, name: str, alias: str, version: int | str) -> None:
        from mlflow.exceptions import MlflowException

        problem = name_problem("alias", alias)
        if problem is not None:
            raise ConfigError(f"alias {alias!r}: {problem}")
        try:
            self.client.set_registered_model_alias(name, alias, str(version))
        except MlflowException as err:
            raise refused(err, f"move alias {alias!r} of registered model {name!r} to version {version}",
                          f"EDIT or MANAGE on registered model {name!r}", self.tracking_uri) from err

    # -- reading ---------------------------------------------------------------------------
    def _aliases(self, name: str) -> dict[str, str] | None:
        """``{alias: version}`` of ``name``; None when no such registered model (or no store yet)."""
        from mlflow.exceptions import MlflowException

        if self._store_missing():
            return None
        try:
            return {alias: str(v) for alias, v in self.client.get_registered_model(name).aliases.items()}
        except MlflowException as err:
            if _AUTH_CODES.get(str(err.error_code)):
                raise refused(err, f"read registered model {name!r}", f"READ on registered model {name!r}",
                              self.tracking_uri) from err
            if str(err.error_code) in _ABSENT_CODES:
                return None
            raise self._unanswered(err, f"read registered model {name!r}") from err

    def resolve_alias(self, name: str, alias: str) -> str | None:
        return (self._aliases(name) or {}).get(alias)

    def get_version(self, name: str, version: int | str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        aliases = self._aliases(name)
        if aliases is None:
            return None
        try:
            found = self.client.get_model_version(name, str(version))
        except MlflowException as err:
            if str(err.error_code) in _ABSENT_CODES:
                return None
            raise self._unanswered(err, f"read version {version} of registered model {name!r}") from err
        return self._version(found, tuple(a for a, v in aliases.items() if v == str(found.version)))

    def list_versions(self, name: str) -> list[ModelVersion]:
        aliases = self._aliases(name)
        if aliases is None:
            return []
        found = self.client.search_model_versions(f"name = '{name}'")
        versions = [self._version(mv, tuple(sorted(a for a, v in aliases.items() if v == str(mv.version))))
                    for mv in found]
        return sorted(versions, key=lambda v: int(v.version))

    def model_names(self) -> list[str]:
        """The registered models' names, sorted; [] when there are none. ConfigError when ``MLFLOW_TRACKING_URI``
        names a sqlite file that does not exist (a typo'd path, most likely; the project's own default store
        not made yet is a new project, []): what lists the registry or explains a missing model says so."""
        from mlflow.exceptions import MlflowException

        if self._store_missing():
            db = sqlite_path(self.tracking_uri)
            if self.tracking_uri not in _project_defaults and db is not None:
                raise ConfigError(f"MLFLOW_TRACKING_URI={self.tracking_uri!r}: no MLflow store there (no file "
                                  f"{db.absolute()}: nothing was logged or registered there); a sqlite URI is "
                                  "sqlite:////ABSOLUTE/PATH.db or sqlite:///PATH/RELATIVE/TO/CWD.db")
            return []
        names: list[str] = []
        token: str | None = None
        try:
            while True:  # MLflow answers a page at a time
                page = self.client.search_registered_models(max_results=1000, page_token=token)
                names += [model.name for model in page]
                token = page.token
                if not token:
                    return sorted(names)
        except MlflowException as err:
            raise refused(err, "list the registered models", "READ on the registered models",
                          self.tracking_uri) if _AUTH_CODES.get(str(err.error_code)) else \
                self._unanswered(err, "list the registered models") from err

    def load(self, model_uri: str, dst: Path | str | None = None) -> Path | None:
        """The bundle of ``model_uri`` (``models:/name@alias``, ``models:/name/3``, ``runs:/...``,
        ``models:/<model id>``) downloaded into ``dst`` (a temporary directory when None); a plain model
        directory as it is. None when the registered model, version or alias does not exist."""
        import mlflow

        from rewardline.registry.pyfunc import bundle_data_dir

        if not is_registry_uri(model_uri):
            return local_model_dir(model_uri)
        if self._store_missing() or bare_model_name(model_uri) is not None:
            return None  # an embedded store that was never written: nothing is registered; a name alone: no version
        target = parse_model_uri(model_uri)
        if target is not None:
            name, version, alias = target
            if alias is not None and self.resolve_alias(name, alias) is None:
                return None
            if version is not None and self.get_version(name, version) is None:
                return None
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=None if dst is None else str(dst),
                                                    tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return bundle_data_dir(Path(local))

    # -- helpers ---------------------------------------------------------------------------
    def _unanswered(self, err: Exception, action: str) -> TransientError:
        """``err`` (MLflow could not answer: a server down or failing) as a one-line :class:`TransientError`
        naming the store: not an absent model, which would skip the champion gate or misreport a version."""
        detail = one_line(str(err))
        detail = detail if len(detail) <= 240 else detail[:240] + "…"
        return TransientError(f"cannot {action}: the MLflow store at {self.tracking_uri} did not answer "
                              f"({err.error_code}: {detail}); is the server up? "  # type: ignore[attr-defined]
                              "(MLFLOW_TRACKING_URI, `rewardline stack up`)")

    def _store_missing(self) -> bool:
        """An embedded sqlite store whose file does not exist (looking must not create it)."""
        db = sqlite_path(self.tracking_uri)
        return db is not None and not db.exists()

    def _make_global(self) -> None:
        """Make this registry's URI MLflow's process-wide one (``mlflow.pyfunc.log_model`` and active runs use it)."""
        import mlflow

        if mlflow.get_tracking_uri() != self.tracking_uri:
            mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)

    @staticmethod
    def _version(mv: MlflowModelVersion, aliases: tuple[str, ...]) -> ModelVersion:
        created = (datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")
                   if mv.creation_timestamp else None)
        return ModelVersion(name=mv.name, version=str(mv.version), aliases=aliases, tags=dict(mv.tags or {}),
                            run_id=mv.run_id, created=created, description=mv.description or "",
                            source=mv.source or "")
