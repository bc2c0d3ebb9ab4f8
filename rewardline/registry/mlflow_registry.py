"""The MLflow side of the pipeline: the one module that imports MLflow.

:class:`MlflowTracker` is the live-run implementation of :class:`rewardline.tracking.Tracker`.
``mlflow`` is imported lazily, inside the functions, so importing this module stays cheap:

* :func:`configure_mlflow` – tracking URI from ``MLFLOW_TRACKING_URI``, else the embedded
  default ``sqlite:///<project>/mlflow.db`` with artifacts under ``<project>/mlartifacts``.
* :func:`log_pipeline_run` – the pipeline's record, written from the stage outputs (DVC may
  have skipped cached stages, so nothing is logged live): one parent run with a nested run
  per stage (params, ``metrics/<stage>.json``, training curves, artifacts) and lineage tags.
* :func:`register_pipeline` – the ``register`` stage: the record above, plus, when every
  gate passed, the model logged as a pyfunc model (the *bundle*), a new registered model
  version tagged with lineage and gate values, and the ``challenger`` alias.
* :func:`promote`, :func:`alias_version`, :func:`load_model_bundle` – the registry by alias.

The bundle is one directory: the trained model directory (a valid rewardline model dir,
``score_texts`` works on it) with the evaluate stage's ``calibration.json`` (temperature,
reward normalisation; also written into its ``reward_config.json``), ``reference_rewards.json``
and ``evaluate_metrics.json``. The pyfunc flavour loads it with ``loader_module`` =
this module (:func:`_load_pyfunc`): no pickle, and ``mlflow models serve --env-manager local``
works wherever ``rewardline`` is installed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewardline.config import load_params
from rewardline.errors import ConfigError, GateFailed
from rewardline.tracking import JsonlTracker

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

# ------------------------------------------------------------------------------------------------
# Names, values and limits of MLflow
# ------------------------------------------------------------------------------------------------

DEFAULT_EXPERIMENT = "rewardline"
DEFAULT_MODEL_NAME = "reward-model"
CHAMPION, CHALLENGER = "champion", "challenger"
STAGES = ("ingest", "validate", "pairs", "train", "evaluate", "register")
MODEL_ARTIFACT = "reward_model"  # the pyfunc model's name in its run
BUNDLE = "bundle"  # the model data directory inside the pyfunc model (data/bundle)
TAGS_ENV = "REWARDLINE_MLFLOW_TAGS"  # extra parent-run tags, a JSON object (set by the Prefect flow)

MODEL_DIR = Path("models/reward-model")
EVALUATE_DIR = Path("reports/evaluate")
REGISTRATION = Path("reports/register/registration.json")
TRAIN_LOG = Path("metrics/train_log.jsonl")
STAGE_ARTIFACTS: dict[str, list[tuple[str, str | None]]] = {  # (project path, artifact dir)
    "ingest": [("metrics/ingest.json", None), ("data/ingested/quarantine.parquet", "quarantine")],
    "validate": [("data/validated/report.md", None), ("data/validated/report.json", None),
                 ("data/validated/data_docs", "data_docs")],
    "pairs": [("metrics/pairs.json", None)],
    "train": [("models/reward-model/reward_config.json", None), ("metrics/train_log.jsonl", None)],
    "evaluate": [("reports/evaluate/report.md", None), ("reports/evaluate/gates.json", None),
                 ("reports/evaluate/calibration.json", None), ("reports/evaluate/metrics.json", None),
                 ("reports/evaluate/plots", "plots")],
}

_MAX_KEY, _MAX_PARAM, _MAX_TAG, _MAX_DESCRIPTION = 250, 6000, 8000, 5000
_BATCH_METRICS, _BATCH_PARAMS = 1000, 100
_configured = False


def sanitize_key(key: str) -> str:
    """A valid MLflow metric / param / tag key: characters other than letters, digits,
    ``_ - . / space`` become ``_``; no empty, ``.`` or ``..`` path parts; at most 250 characters."""
    key = re.sub(r"[^/\w.\- ]", "_", str(key))
    parts = [p if p not in (".", "..") else p.replace(".", "_") for p in key.split("/") if p]
    return ("/".join(parts) or "_")[:_MAX_KEY]


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts → one level with ``a.b`` keys; other values (lists too) are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def metric_values(obj: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a (nested) metrics dict under sanitised ``a.b`` keys; booleans become 0/1,
    everything else (strings, lists, None) is skipped."""
    out = {}
    for key, value in flatten(obj).items():
        if isinstance(value, bool | int | float):
            out[sanitize_key(key)] = float(value)
    return out


def param_values(obj: Mapping[str, Any]) -> dict[str, str]:
    """A (nested) params section as MLflow params: ``a.b`` keys, lists as JSON, values cut at 6000."""
    return {sanitize_key(k): (v if isinstance(v, str) else json.dumps(v, default=str))[:_MAX_PARAM]
            for k, v in flatten(obj).items()}


def _tag_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    return str(value)[:_MAX_TAG]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


def configure_mlflow(project_dir: Path | str = ".") -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI``, or at the embedded default
    ``sqlite:///<abs project_dir>/mlflow.db``; return the URI.

    With a ``sqlite:`` store, new experiments keep their artifacts in ``mlartifacts/``
    next to the database (see :func:`experiment_id`); a server decides that itself."""
    import mlflow

    global _configured
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(project_dir).resolve() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _configured = True
    return uri


def _ensure_configured() -> str:
    """The tracking URI; ``MLFLOW_TRACKING_URI`` wins, else the first :func:`configure_mlflow`
    of this process, else the default of the current directory."""
    import mlflow

    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env or not _configured:
        return configure_mlflow(".")
    return mlflow.get_tracking_uri()


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def experiment_id(name: str = DEFAULT_EXPERIMENT) -> str:
    """The id of experiment ``name``, created when missing (artifacts next to a sqlite store)."""
    client = _client()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    db = _sqlite_path(client.tracking_uri)
    location = (db.parent / "mlartifacts" / name).as_uri() if db else None
    return client.create_experiment(name, artifact_location=location)


def _client() -> MlflowClient:
    from mlflow import MlflowClient

    uri = _ensure_configured()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _log_batch(client: MlflowClient, run_id: str, params: Mapping[str, str] | None = None,
               metrics: list[tuple[str, float, int, int]] | None = None, tags: Mapping[str, Any] | None = None) -> None:
    """``client.log_batch`` in chunks within MLflow's limits; metrics are ``(key, value, timestamp_ms, step)``."""
    from mlflow.entities import Metric, Param, RunTag

    params, metrics, tags = list((params or {}).items()), metrics or [], list((tags or {}).items())
    for i in range(0, len(params), _BATCH_PARAMS):
        client.log_batch(run_id, params=[Param(k, v) for k, v in params[i : i + _BATCH_PARAMS]])
    for i in range(0, len(tags), _BATCH_PARAMS):
        client.log_batch(run_id, tags=[RunTag(sanitize_key(k), _tag_value(v)) for k, v in tags[i : i + _BATCH_PARAMS]])
    for i in range(0, len(metrics), _BATCH_METRICS):
        client.log_batch(run_id, metrics=[Metric(k, v, ts, s) for k, v, ts, s in metrics[i : i + _BATCH_METRICS]])


class MlflowTracker:
    """A :class:`Tracker` that writes to one MLflow run: ``run_id``, or one created at the first call
    (so ranks of a distributed run that never log create nothing).

    Use as a context manager, or call :meth:`close`, to mark the run finished (or failed)."""

    def __init__(self, run_name: str | None = None, experiment: str = DEFAULT_EXPERIMENT, run_id: str | None = None,
                 tags: Mapping[str, Any] | None = None, parent_run_id: str | None = None) -> None:
        self.run_name, self.experiment, self._run_id = run_name, experiment, run_id
        self.tags = {**(tags or {}), **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})}
        self.client = _client()
        if run_id is not None and self.tags:
            _log_batch(self.client, run_id, tags=self.tags)

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            run = self.client.create_run(experiment_id(self.experiment), run_name=self.run_name,
                                         tags={k: _tag_value(v) for k, v in self.tags.items()})
            self._run_id = run.info.run_id
        return self._run_id

    def log_params(self, params: dict[str, Any]) -> None:
        _log_batch(self.client, self.run_id, params=param_values(params))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        rows = [(k, v, now, int(step)) for k, v in metric_values(metrics).items()]
        _log_batch(self.client, self.run_id, metrics=rows)

    def log_artifact(self, path: Path) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
        else:
            self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str = "FINISHED") -> None:
        if self._run_id is not None:
            self.client.set_terminated(self._run_id, status)

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close("FAILED" if exc_type else "FINISHED")


# ------------------------------------------------------------------------------------------------
# Lineage: git, DVC hashes, dataset sizes, backbone, gates
# ------------------------------------------------------------------------------------------------


def git_info(project_dir: Path | str = ".") -> dict[str, str]:
    """``git_commit`` (HEAD, or "unknown" outside a repository) and ``git_dirty`` ("true"/"false")."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit or "unknown", "git_dirty": "unknown" if status is None else _tag_value(bool(status))}


def dvc_hashes(project_dir: Path | str = ".") -> dict[str, str]:
    """``{"dvc.<path>.md5": hash}`` of every stage output in ``dvc.lock`` and of the raw data
    (dependencies under ``data/``): with the git commit, enough to ``dvc pull`` the exact data."""
    import yaml

    lock_path = Path(project_dir) / "dvc.lock"
    if not lock_path.exists():
        return {}
    lock = yaml.safe_load(lock_path.read_text()) or {}
    out: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        entries = list(stage.get("outs") or []) + [d for d in stage.get("deps") or [] if d["path"].startswith("data/")]
        for entry in entries:
            if entry.get("md5"):
                out[f"dvc.{entry['path']}.md5"] = entry["md5"]
    return out


def gate_tags(gates: Mapping[str, Any]) -> dict[str, str]:
    """``gate.<name>.value/threshold/passed/skipped`` and ``gates_passed`` from a ``gates.json`` dict."""
    tags = {"gates_passed": _tag_value(bool(gates.get("passed", False)))}
    for name, gate in (gates.get("gates") or {}).items():
        for field in ("value", "threshold", "passed", "skipped"):
            tags[f"gate.{name}.{field}"] = _tag_value(gate.get(field))
    return tags


def lineage_tags(project_dir: Path | str = ".") -> dict[str, str]:
    """Tags for the pipeline run and the model version: git, DVC hashes, dataset sizes, backbone, gates."""
    root = Path(project_dir)
    git = git_info(root)
    tags: dict[str, str] = {**git, "mlflow.source.git.commit": git["git_commit"]}
    tags.update(dvc_hashes(root))
    pairs = _read_json(root / "metrics/pairs.json")
    for key in ("pairs_train", "pairs_val", "pairs_test", "prompts_train", "prompts_val", "prompts_test"):
        if key in pairs:
            tags[f"dataset.{key}"] = _tag_value(pairs[key])
    ingest = _read_json(root / "metrics/ingest.json")
    for key in ("rows_ok", "rows_quarantined", "annotators"):
        if key in ingest:
            tags[f"dataset.ingest_{key}"] = _tag_value(ingest[key])
    backbone = _read_json(root / MODEL_DIR / "reward_config.json").get("backbone")
    if backbone is None and (root / "params.yaml").exists():
        backbone = (load_params(root / "params.yaml").get("train") or {}).get("backbone")
    tags["backbone"] = _tag_value(backbone)
    tags.update(gate_tags(_read_json(root / EVALUATE_DIR / "gates.json")))
    if git["git_commit"] != "unknown":
        tags["reproduce"] = f"git checkout {git['git_commit']} && dvc pull"
    return tags


def extra_tags_from_env() -> dict[str, str]:
    """Parent-run tags from ``REWARDLINE_MLFLOW_TAGS`` (a JSON object), e.g. set by a Prefect flow."""
    raw = os.environ.get(TAGS_ENV, "").strip()
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{TAGS_ENV} is not valid JSON: {err}") from None
    if not isinstance(tags, dict):
        raise ConfigError(f"{TAGS_ENV} must be a JSON object, got {type(tags).__name__}")
    return {str(k): _tag_value(v) for k, v in tags.items()}


# ------------------------------------------------------------------------------------------------
# The pipeline record: one parent run, one nested run per stage
# ------------------------------------------------------------------------------------------------

def train_curves(log_path: Path) -> list[tuple[str, float, int, int]]:
    """``(key, value, timestamp_ms, step)`` of the last training run in a :class:`JsonlTracker` file
    (records after its last ``params`` record: a resumed or repeated run appends)."""
    if not log_path.exists():
        return []
    records = JsonlTracker(log_path).read()
    starts = [i for i, r in enumerate(records) if r.get("kind") == "params"]
    out = []
    for r in records[starts[-1] if starts else 0 :]:
        if r.get("kind") == "metrics":
            ts = int(float(r.get("time", time.time())) * 1000)
            out += [(k, v, ts, int(r["step"])) for k, v in metric_values(r["metrics"]).items()]
    return out


def quarantine_summary(ingested_dir: Path, out_path: Path, examples: int = 20) -> Path | None:
    """``{rows, reasons: {reason: count}, examples: [...]}`` of ``quarantine.parquet``, or None without one."""
    import pyarrow.parquet as pq

    path = ingested_dir / "quarantine.parquet"
    if not path.exists():
        return None
    rows = pq.read_table(path).to_pylist()
    reasons: dict[str, int] = {}
    for row in rows:
        reasons[str(row.get("reason"))] = reasons.get(str(row.get("reason")), 0) + 1
    shown = [{k: (v[:500] if isinstance(v, str) else v) for k, v in row.items()} for row in rows[:examples]]
    out_path.write_text(json.dumps({"rows": len(rows), "reasons": reasons, "examples": shown}, indent=2) + "\n")
    return out_path


def _log_stage(client: MlflowClient, run_id: str, root: Path, stage: str, params: Mapping[str, Any],
               scratch: Path) -> None:
    """Params, ``metrics/<stage>.json``, curves (train) and artifacts of one stage into its run."""
    section = dict(params.get(stage) or {})
    metrics_json = _read_json(root / "metrics" / f"{stage}.json")
    now = int(time.time() * 1000)
    metrics = [(k, v, now, 0) for k, v in metric_values(metrics_json).items()]
    if stage == "train":
        log = root / TRAIN_LOG
        resolved = next((r["params"] for r in reversed(JsonlTracker(log).read()) if r.get("kind") == "params"),
                        {}) if log.exists() else {}
        section = {**resolved, **section}
        metrics += train_curves(log)
    _log_batch(client, run_id, params=param_values(section), metrics=metrics)
    for rel, artifact_dir in STAGE_ARTIFACTS.get(stage, []):
        path = root / rel
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=artifact_dir)
        elif path.is_file():
            client.log_artifact(run_id, str(path), artifact_path=artifact_dir)
    if stage == "ingest" and (summary := quarantine_summary(root / "data/ingested", scratch / "quarantine.json")):
        client.log_artifact(run_id, str(summary), artifact_path="quarantine")


def pipeline_run_name(project_dir: Path | str = ".") -> str:
    """``pipeline-<short git sha>-<UTC timestamp>``."""
    sha = git_info(project_dir)["git_commit"][:7]
    return f"pipeline-{sha}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


@contextlib.contextmanager
def pipeline_run(project_dir: Path | str = ".", experiment: str = DEFAULT_EXPERIMENT,
                 stages: tuple[str, ...] = STAGES[:-1]) -> Iterator[dict[str, str]]:
    """Open the parent run (lineage tags, ``REWARDLINE_MLFLOW_TAGS``, headline evaluate metrics),
    log one nested run per stage in ``stages`` from its outputs, and yield ``{"parent": id, stage: id}``
    (and ``"experiment"``: its id) with the parent still active (more nested runs may be started); finished on exit."""
    import mlflow

    root = Path(project_dir).resolve()
    if not _configured:  # the project's embedded store, unless configured already (or MLFLOW_TRACKING_URI)
        configure_mlflow(root)
    client = _client()
    exp_id = experiment_id(experiment)
    params = load_params(root / "params.yaml") if (root / "params.yaml").exists() else {}
    tags = {**lineage_tags(root), **extra_tags_from_env()}
    report = root / EVALUATE_DIR / "report.md"
    if report.exists():
        tags["mlflow.note.content"] = report.read_text()[:_MAX_TAG]
    with mlflow.start_run(experiment_id=exp_id, run_name=pipeline_run_name(root)) as parent, \
            tempfile.TemporaryDirectory() as scratch:
        ids = {"parent": parent.info.run_id, "experiment": exp_id}
        headline = {k: v for k, v in metric_values(_read_json(root / "metrics/evaluate.json")).items()
                    if "." not in k}
        now = int(time.time() * 1000)
        _log_batch(client, parent.info.run_id, tags={**tags, "pipeline": "rewardline"},
                   metrics=[(k, v, now, 0) for k, v in headline.items()])
        for stage in stages:
            with mlflow.start_run(experiment_id=exp_id, run_name=stage, nested=True, tags={"stage": stage}) as child:
                _log_stage(client, child.info.run_id, root, stage, params, Path(scratch))
                ids[stage] = child.info.run_id
        yield ids


def log_pipeline_run(project_dir: Path | str = ".", experiment: str = DEFAULT_EXPERIMENT,
                     stages: tuple[str, ...] = STAGES[:-1]) -> dict[str, str]:
    """Write the pipeline's MLflow record from the stage outputs in ``project_dir`` (no model,
    no registration); return ``{"parent": run id, "<stage>": run id, ..., "experiment": id}``."""
    with pipeline_run(project_dir, experiment, stages) as ids:
        return ids


# ------------------------------------------------------------------------------------------------
# The model: bundle, pyfunc flavour
# ------------------------------------------------------------------------------------------------


def build_bundle(project_dir: Path | str, dst: Path) -> Path:
    """``dst`` = the trained model directory + ``calibration.json``, ``reference_rewards.json`` (when
    present) and ``evaluate_metrics.json``; ``reward_config.json`` gets the calibration's reward
    mean and std, so ``score_texts(dst)`` returns exactly what the pyfunc model serves."""
    root = Path(project_dir)
    shutil.copytree(root / MODEL_DIR, dst)
    calibration = _read_json(root / EVALUATE_DIR / "calibration.json")
    (dst / "calibration.json").write_text(json.dumps(calibration, indent=2) + "\n")
    if (root / EVALUATE_DIR / "reference_rewards.json").exists():
        shutil.copyfile(root / EVALUATE_DIR / "reference_rewards.json", dst / "reference_rewards.json")
    shutil.copyfile(root / EVALUATE_DIR / "metrics.json", dst / "evaluate_metrics.json")
    config = json.loads((dst / "reward_config.json").read_text())
    for key in ("reward_mean", "reward_std"):
        if calibration.get(key) is not None:
            config[key] = calibration[key]
    (dst / "reward_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return dst


class RewardScorer:
    """What ``mlflow.pyfunc.load_model`` returns inside: a loaded bundle with a DataFrame ``predict``.

    Input columns ``prompt``, ``response`` and optionally ``response_b``; output ``reward``
    (``r − reward_mean``) and, for rows with a ``response_b``, ``reward_b`` and the calibrated
    preference probability ``p_prefer = σ((r_a − r_b) / T)``."""

    def __init__(self, bundle_dir: Path | str, device: str = "auto") -> None:
        from rewardline.modeling.device import select_runtime
        from rewardline.modeling.model import RewardModel

        self.bundle_dir = Path(bundle_dir)
        self.device = str(select_runtime(device).device)  # CUDA when available
        self.model, self.tokenizer = RewardModel.load(self.bundle_dir, self.device)
        self.temperature = float(_read_json(self.bundle_dir / "calibration.json").get("temperature") or 1.0)

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        from rewardline.evaluation.calibration import preference_probability
        from rewardline.modeling.score import score_texts

        prompts, responses = list(model_input["prompt"]), [str(r) for r in model_input["response"]]
        pairwise = "response_b" in model_input.columns
        rows_b = np.flatnonzero(model_input["response_b"].notna().to_numpy()) if pairwise else np.zeros(0, int)
        texts_b = [str(model_input["response_b"].iloc[i]) for i in rows_b]
        rewards = score_texts(self.bundle_dir, prompts + [prompts[i] for i in rows_b], responses + texts_b,
                              device=self.device, model=self.model, tokenizer=self.tokenizer).astype(np.float64)
        out = pd.DataFrame({"reward": rewards[: len(responses)]})
        if pairwise:
            reward_b = np.full(len(responses), np.nan)
            reward_b[rows_b] = rewards[len(responses) :]
            out["reward_b"] = reward_b
            out["p_prefer"] = preference_probability(out["reward"].to_numpy(), reward_b, self.temperature)
        return out


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> RewardScorer:
    """The pyfunc ``loader_module`` entry point: ``data_path`` is the model's ``data/bundle``."""
    return RewardScorer(data_path)


def model_signature() -> Any:
    """Input ``prompt``, ``response``, optional ``response_b`` (strings); output ``reward``,
    optional ``reward_b`` and ``p_prefer`` (doubles)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    inputs = Schema([ColSpec(DataType.string, "prompt"), ColSpec(DataType.string, "response"),
                     ColSpec(DataType.string, "response_b", required=False)])
    outputs = Schema([ColSpec(DataType.double, "reward"), ColSpec(DataType.double, "reward_b", required=False),
                      ColSpec(DataType.double, "p_prefer", required=False)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({
        "prompt": ["How do I boil an egg?", "Name a prime number."],
        "response": ["Put it in boiling water for about nine minutes, then cool it.", "7"],
        "response_b": ["Eggs are food.", "8"],
    })


def _requirements() -> list[str]:
    """Pinned requirements of the pyfunc model (given explicitly: MLflow would otherwise load the
    model in a subprocess to infer them). ``rewardline`` itself must be installed where it is served."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "scipy"):
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"{name}=={version(name).split('+')[0]}")
    return out


def log_model_bundle(bundle_dir: Path) -> Any:
    """Log ``bundle_dir`` as a pyfunc model into the active run; return MLflow's ``ModelInfo``."""
    import mlflow

    return mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT, loader_module=__name__, data_path=str(bundle_dir), signature=model_signature(),
        input_example=input_example(), pip_requirements=_requirements(),
    )


# ------------------------------------------------------------------------------------------------
# The registry: register, promote, resolve aliases
# ------------------------------------------------------------------------------------------------


@dataclass
class RegisterConfig:
    """``params.yaml: register``."""

    model_name: str = DEFAULT_MODEL_NAME
    experiment: str = DEFAULT_EXPERIMENT
    alias: str = CHALLENGER  # set on every newly registered version
    promote_to_champion: bool = False  # explicit opt-in: also move `champion` to the new version


def register_bundle(bundle_dir: Path, name: str, run_id: str, tags: Mapping[str, Any], description: str = "",
                    aliases: tuple[str, ...] = (CHALLENGER,)) -> tuple[str, Any]:
    """Log ``bundle_dir`` as a pyfunc model into the active run ``run_id``, register it as a new
    version of ``name`` with ``tags`` and ``description``, point ``aliases`` at it.
    Returns ``(version, ModelInfo)``."""
    from mlflow.exceptions import MlflowException

    client = _client()
    info = log_model_bundle(bundle_dir)
    try:
        client.create_registered_model(name, description="Reward model: (prompt, response) → scalar reward.")
    except MlflowException as err:
        if "ALREADY_EXISTS" not in str(err.error_code):
            raise
    version = client.create_model_version(
        name, source=info.model_uri, run_id=run_id, tags={sanitize_key(k): _tag_value(v) for k, v in tags.items()},
        description=description[:_MAX_DESCRIPTION], model_id=info.model_id,
    ).version
    for alias in aliases:
        client.set_registered_model_alias(name, alias, str(version))
    return str(version), info


def register_pipeline(project_dir: Path | str = ".", config: RegisterConfig | None = None) -> dict[str, Any]:
    """The ``register`` stage: log the pipeline record; when every gate in
    ``reports/evaluate/gates.json`` passed, register the bundle under ``config.model_name`` with
    ``config.alias`` (and ``champion`` only if ``config.promote_to_champion``). Writes and returns
    ``reports/register/registration.json``; never registers a model whose gates failed."""
    config = config or RegisterConfig()
    if config.alias == CHAMPION and not config.promote_to_champion:
        raise ConfigError("register.alias is 'champion': set register.promote_to_champion: true to move "
                          "the champion automatically, or promote by hand (rewardline promote)")
    root = Path(project_dir).resolve()
    if not _configured:
        configure_mlflow(root)
    gates = _read_json(root / EVALUATE_DIR / "gates.json")
    if not gates:
        raise ConfigError(f"{root / EVALUATE_DIR / 'gates.json'} not found: run the evaluate stage first")
    passed = bool(gates.get("passed")) and all(g.get("passed") for g in gates.get("gates", {}).values())
    result: dict[str, Any] = {"model_name": config.model_name, "version": None, "run_id": None,
                              "parent_run_id": None, "aliases": [], "registered": False,
                              "tracking_uri": _ensure_configured()}
    with pipeline_run(root, config.experiment) as ids:
        import mlflow

        result["parent_run_id"] = ids["parent"]
        with mlflow.start_run(experiment_id=ids["experiment"], run_name="register", nested=True,
                              tags={"stage": "register"}) as run:
            result["run_id"] = run.info.run_id
            client = _client()
            _log_batch(client, run.info.run_id, params=param_values(asdict(config)))
            if passed:
                aliases = (config.alias, CHAMPION) if config.promote_to_champion else (config.alias,)
                tags = {**lineage_tags(root), "parent_run_id": ids["parent"], "pipeline_run": ids["parent"]}
                report = (root / EVALUATE_DIR / "report.md").read_text()
                with tempfile.TemporaryDirectory() as tmp:
                    bundle = build_bundle(root, Path(tmp) / BUNDLE)
                    version, info = register_bundle(bundle, config.model_name, run.info.run_id, tags, report,
                                                    tuple(dict.fromkeys(aliases)))
                result.update(version=version, aliases=list(dict.fromkeys(aliases)), registered=True,
                              model_uri=f"models:/{config.model_name}/{version}", logged_model=info.model_uri)
            else:
                failed = [n for n, g in gates.get("gates", {}).items() if not g.get("passed")]
                result["reason"] = f"gates failed: {', '.join(failed) or 'passed=false'}"
            _log_batch(client, run.info.run_id, tags={"registered": result["registered"],
                                                      "model_version": result["version"]})
            _log_batch(client, ids["parent"], tags={"registered": result["registered"],
                                                    "model_version": result["version"]})
    out = root / REGISTRATION
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def alias_version(name: str, alias: str) -> str | None:
    """The version number ``name@alias`` points to, or None (no such model or alias)."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = _client().get_registered_model(name).aliases
    except MlflowException:
        return None
    return str(aliases[alias]) if alias in aliases else None


def ui_command(tracking_uri: str | None = None) -> str:
    """How to look at the runs and the registry: ``mlflow ui`` on an embedded store, else the server's URL."""
    uri = tracking_uri or _ensure_configured()
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
    return f"open {uri}"


def registry_summary(name: str = DEFAULT_MODEL_NAME) -> dict[str, Any]:
    """``{model_name, versions: [{version, aliases, gates_passed, run_id, created}], aliases, mlflow_ui}``."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException:
        aliases = {}
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    versions = [{"version": mv.version, "aliases": sorted(by_version.get(str(mv.version), [])),
                 "gates_passed": mv.tags.get("gates_passed"), "git_commit": mv.tags.get("git_commit"),
                 "run_id": mv.run_id,
                 "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")}
                for mv in client.search_model_versions(f"name = '{name}'")]
    versions.sort(key=lambda v: int(v["version"]))
    return {"model_name": name, "versions": versions, "aliases": {a: str(v) for a, v in aliases.items()},
            "mlflow_ui": ui_command()}


def promote(name: str, version: int | str, alias: str = CHAMPION, require_gates: bool = True) -> None:
    """Point ``name@alias`` at ``version``; refuses (``GateFailed``) a version whose ``gates_passed``
    tag is not ``true`` unless ``require_gates=False``, and (``ConfigError``) an unknown version."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException:
        raise ConfigError(f"registered model {name!r} has no version {version}") from None
    if require_gates and mv.tags.get("gates_passed") != "true":
        failed = sorted(k.split(".")[1] for k, v in mv.tags.items() if k.endswith(".passed") and v != "true")
        raise GateFailed(f"refusing to make version {version} of {name!r} the {alias}: its gates_passed tag is "
                         f"{mv.tags.get('gates_passed')!r}" + (f" (failed: {', '.join(failed)})" if failed else "")
                         + "; use --force to promote anyway")
    client.set_registered_model_alias(name, alias, str(version))


def _registry_target(model_uri: str) -> tuple[str, str | None, str | None] | None:
    """``models:/name@alias`` → (name, None, alias); ``models:/name/3`` → (name, "3", None); else None."""
    m = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", model_uri)
    return (m.group(1), m.group(3), m.group(2)) if m else None


def load_model_bundle(model_uri: str, dst: Path | str | None = None) -> Path | None:
    """Download the bundle of ``model_uri`` (``models:/reward-model@champion``, ``models:/reward-model/3``,
    ``runs:/...``, ``models:/<model id>``) and return its local directory (a rewardline model dir).
    None when the registered model, version or alias does not exist."""
    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    uri = _ensure_configured()
    db = _sqlite_path(uri)
    if db is not None and not db.exists():
        return None  # an embedded store that was never written: nothing is registered
    target = _registry_target(model_uri)
    if target is not None:
        name, version, alias = target
        client = _client()
        try:
            model = client.get_registered_model(name)
            if alias is not None and alias not in model.aliases:
                return None
            if version is not None:
                client.get_model_version(name, version)
        except MlflowException:
            return None
    if dst is not None:
        Path(dst).mkdir(parents=True, exist_ok=True)
        dst = str(dst)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dst))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    return local / flavor.get("data", f"data/{BUNDLE}")


@contextlib.contextmanager
def resolved_model_dir(ref: str | Path | None) -> Iterator[Path | None]:
    """A model reference as a local directory for the duration of the block: None → None; a
    ``models:/`` or ``runs:/`` URI → its bundle downloaded to a temporary directory (None when the
    model or alias does not exist); anything else → that directory (which must exist)."""
    if ref is None or str(ref).strip() == "":
        yield None
        return
    if str(ref).startswith(("models:/", "runs:/")):
        with tempfile.TemporaryDirectory(prefix="rewardline-model-") as tmp:
            yield load_model_bundle(str(ref), tmp)
        return
    path = Path(ref)
    if not (path / "reward_config.json").exists():
        raise ConfigError(f"{path} is not a reward model directory (no reward_config.json)")
    yield path
