"""The pipeline's MLflow record and the ``register`` stage.

* :func:`log_pipeline_run` – the record, written from the stage outputs (DVC may have skipped
  cached stages, so nothing is logged live): one parent run with a nested run per stage
  (params, the stage's full ``<out>/metrics.json``, training curves, artifacts) and lineage tags.
* :func:`register_pipeline` – the record above plus a nested ``register`` run; when every gate
  passed, the bundle is registered through a :class:`~rewardline.registry.base.ModelRegistry` as a
  new version tagged with lineage and gate values, with the ``challenger`` alias.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ValidationInfo, field_validator

from rewardline.config import Section, load_params
from rewardline.data.tables import read_json
from rewardline.errors import ConfigError
from rewardline.paths import (
    EVALUATE_DIR,
    GATES_FILE,
    INGESTED_DIR,
    METRICS_FILE,
    REGISTRATION,
    STAGE_OUT,
    TRAIN_LOG,
    stage_metrics,
    stage_times,
)
from rewardline.registry.base import ModelRegistry
from rewardline.registry.bundle import build_bundle, register_once
from rewardline.registry.datasets import log_stage_datasets
from rewardline.registry.lineage import extra_tags_from_env, git_info, lineage_tags
from rewardline.registry.mlflow_backend import (
    client,
    configure_mlflow,
    ensure_configured,
    experiment_id,
    is_configured,
    name_problem,
)
from rewardline.registry.mlflow_values import MAX_TAG, MetricRow, log_batch, metric_values, param_values
from rewardline.registry.names import CHALLENGER, CHAMPION, EXPERIMENT, MODEL_NAME, model_uri
from rewardline.registry.pyfunc import BUNDLE
from rewardline.tracking import JsonlTracker, last_run

if TYPE_CHECKING:
    from mlflow import MlflowClient

STAGES = ("ingest", "validate", "pairs", "train", "evaluate", "register")
STAGE_ARTIFACTS: dict[str, list[tuple[str, str | None]]] = {  # (project path, artifact dir)
    "ingest": [("metrics/ingest.json", None), ("data/ingested/quarantine.parquet", "quarantine")],
    "validate": [("data/validated/report.md", None), ("data/validated/report.json", None),
                 ("data/validated/data_docs", "data_docs")],
    "pairs": [("metrics/pairs.json", None)],
    "train": [("models/reward-model/reward_config.json", None), ("metrics/train_log.jsonl", None)],
    "evaluate": [("reports/evaluate/report.md", None), ("reports/evaluate/gates.json", None),
                 ("reports/evaluate/calibration.json", None), ("reports/evaluate/metrics.json", None),
                 ("reports/evaluate/plots", "plots"),
                 ("reports/bon", "bon")],  # the bon stage's report, curves and gates, beside evaluate's
}


class RegisterConfig(Section):
    """``params.yaml: register``."""

    section: ClassVar[str] = "register"

    model_name: str = MODEL_NAME
    experiment: str = EXPERIMENT
    alias: str = CHALLENGER  # set on every newly registered version
    promote_to_champion: bool = False  # explicit opt-in: also move `champion` to the new version

    @field_validator("model_name", "alias")
    @classmethod
    def _accepted_by_mlflow(cls, value: str, info: ValidationInfo) -> str:
        """A name MLflow refuses stops the stage before the model is logged and registered (it was registered,
        then the alias failed)."""
        problem = name_problem("model" if info.field_name == "model_name" else "alias", value)
        if problem is not None:
            raise ValueError(problem)
        return value


def train_curves(log_path: Path) -> list[MetricRow]:
    """``(key, value, timestamp_ms, step)`` of the last training run in a :class:`JsonlTracker` file
    (records after its last ``params`` record: a resumed or repeated run appends)."""
    if not log_path.exists():
        return []
    out = []
    for r in last_run(JsonlTracker(log_path).read()):
        if r.get("kind") == "metrics":
            ts = int(float(r.get("time", time.time())) * 1000)
            out += [(k, v, ts, int(r["step"])) for k, v in metric_values(r["metrics"]).items()]
    return out


def quarantine_summary(ingested_dir: Path, out_path: Path, examples: int = 20) -> Path | None:
    """``{rows, reasons: {reason: count}, examples: [...]}`` of ``quarantine.parquet``, or None without one."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = ingested_dir / "quarantine.parquet"
    if not path.exists():
        return None
    table = pq.read_table(path)
    counts = pc.value_counts(table["reason"].cast("string").fill_null("None")).to_pylist() if table.num_rows else []
    shown = [{k: (v[:500] if isinstance(v, str) else v) for k, v in row.items()}
             for row in table.slice(0, examples).to_pylist()]
    summary = {"rows": table.num_rows, "reasons": {c["values"]: c["counts"] for c in counts}, "examples": shown}
    out_path.write_text(json.dumps(summary, indent=2) + "\n")
    return out_path


def stage_metrics_full(root: Path, stage: str) -> dict[str, Any]:
    """The stage's full metrics: ``<out>/metrics.json``, else ``metrics/<stage>.json`` (DVC's headline
    copy; the whole metrics in projects from before the headline); {} when neither exists."""
    full = root / STAGE_OUT[stage] / METRICS_FILE if stage in STAGE_OUT else None
    return read_json(full) if full is not None and full.exists() else read_json(root / stage_metrics(stage))


def _log_stage(mlflow_client: MlflowClient, run_id: str, root: Path, stage: str, params: Mapping[str, Any],
               scratch: Path, live: bool = False) -> None:
    """Params, full metrics (:func:`stage_metrics_full`), curves (train) and artifacts of one stage into its run
    (``live``: a run the stage logged itself, which has its params and curves: those are not logged again)."""
    section = dict(params.get(stage) or {})
    now = int(time.time() * 1000)
    metrics = [(k, v, now, 0) for k, v in metric_values(stage_metrics_full(root, stage)).items()]
    if live:
        section = {}
    elif stage == "train":
        log = root / TRAIN_LOG
        resolved = next((r["params"] for r in reversed(JsonlTracker(log).read()) if r.get("kind") == "params"),
                        {}) if log.exists() else {}
        section = {**resolved, **section}
        metrics += train_curves(log)
    log_batch(mlflow_client, run_id, params=param_values(section), metrics=metrics)
    for rel, artifact_dir in STAGE_ARTIFACTS.get(stage, []):
        path = root / rel
        if path.is_dir():
            mlflow_client.log_artifacts(run_id, str(path), artifact_path=artifact_dir)
        elif path.is_file():
            mlflow_client.log_artifact(run_id, str(path), artifact_path=artifact_dir)
    if stage == "ingest" and (summary := quarantine_summary(root / INGESTED_DIR, scratch / "quarantine.json")):
        mlflow_client.log_artifact(run_id, str(summary), artifact_path="quarantine")
    log_stage_datasets(mlflow_client, run_id, root, stage)


def pipeline_run_name(project_dir: Path | str = ".") -> str:
    """``pipeline-<short git sha>-<UTC timestamp>``."""
    sha = git_info(project_dir)["git_commit"][:7]
    return f"pipeline-{sha}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


@contextlib.contextmanager
def pipeline_run(project_dir: Path | str = ".", experiment: str = EXPERIMENT,
                 stages: tuple[str, ...] = STAGES[:-1]) -> Iterator[dict[str, str]]:
    """Open the parent run (lineage tags, ``REWARDLINE_MLFLOW_TAGS``, headline evaluate metrics),
    log one nested run per stage in ``stages`` from its outputs, and yield ``{"parent": id, stage: id}``
    (and ``"experiment"``: its id) with the parent still active (more nested runs may be started); finished on exit."""
    import mlflow

    root = Path(project_dir).resolve()
    if not is_configured():  # the project's embedded store, unless configured already (or MLFLOW_TRACKING_URI)
        configure_mlflow(root)
    mlflow_client = client()
    exp_id = experiment_id(experiment)
    params = load_params(root / "params.yaml") if (root / "params.yaml").exists() else {}
    tags = {**lineage_tags(root), **extra_tags_from_env()}
    report = root / EVALUATE_DIR / "report.md"
    if report.exists():
        tags["mlflow.note.content"] = report.read_text()[:MAX_TAG]
    with mlflow.start_run(experiment_id=exp_id, run_name=pipeline_run_name(root)) as parent, \
            tempfile.TemporaryDirectory() as scratch:
        ids = {"parent": parent.info.run_id, "experiment": exp_id}
        headline = {k: v for k, v in metric_values(stage_metrics_full(root, "evaluate")).items()
                    if "." not in k}
        now = int(time.time() * 1000)
        log_batch(mlflow_client, parent.info.run_id, tags={**tags, "pipeline": "rewardline"},
                  metrics=[(k, v, now, 0) for k, v in headline.items()])
        for stage in stages:
            ids[stage] = _stage_run(mlflow_client, exp_id, parent.info.run_id, root, stage, params, Path(scratch))
        yield ids


def _stage_times_ms(root: Path, stage: str) -> tuple[int | None, int | None]:
    """The stage's last ``started_at`` / ``ended_at`` (:func:`rewardline.stage.record_stage_times`) in epoch ms."""
    times = read_json(root / stage_times(stage)) if (root / stage_times(stage)).exists() else {}
    return tuple(int(datetime.fromisoformat(times[k]).timestamp() * 1000) if times.get(k) else None
                 for k in ("started_at", "ended_at"))  # type: ignore[return-value]


def _live_run(mlflow_client: MlflowClient, root: Path, stage: str) -> str | None:
    """The id of the run the stage logged live (``mlflow_run_id`` in its metrics), if it is in this store."""
    from mlflow.exceptions import MlflowException

    run_id = stage_metrics_full(root, stage).get("mlflow_run_id")
    if not run_id:
        return None
    try:
        return mlflow_client.get_run(run_id).info.run_id
    except MlflowException:
        return None  # logged to another store, or deleted: record it afresh


def _stage_run(mlflow_client: MlflowClient, exp_id: str, parent_id: str, root: Path, stage: str,
               params: Mapping[str, Any], scratch: Path) -> str:
    """The nested run of ``stage`` under ``parent_id``: the run it logged live (re-parented; its params and
    curves are there already: only artifacts and final metrics are added), else a new run with the stage's
    real start and end times (:func:`_stage_times_ms`; now when unknown) written from its outputs."""
    live = _live_run(mlflow_client, root, stage)
    if live is not None:
        log_batch(mlflow_client, live, tags={"mlflow.parentRunId": parent_id, "stage": stage})
        _log_stage(mlflow_client, live, root, stage, params, scratch, live=True)
        return live
    started, ended = _stage_times_ms(root, stage)
    run = mlflow_client.create_run(exp_id, start_time=started, run_name=stage,
                                   tags={"mlflow.parentRunId": parent_id, "stage": stage})
    try:
        _log_stage(mlflow_client, run.info.run_id, root, stage, params, scratch)
    except BaseException:
        mlflow_client.set_terminated(run.info.run_id, "FAILED")
        raise
    mlflow_client.set_terminated(run.info.run_id, "FINISHED", end_time=ended if started else None)
    return run.info.run_id


def log_pipeline_run(project_dir: Path | str = ".", experiment: str = EXPERIMENT,
                     stages: tuple[str, ...] = STAGES[:-1]) -> dict[str, str]:
    """Write the pipeline's MLflow record from the stage outputs in ``project_dir`` (no model,
    no registration); return ``{"parent": run id, "<stage>": run id, ..., "experiment": id}``."""
    with pipeline_run(project_dir, experiment, stages) as ids:
        return ids


def register_pipeline(project_dir: Path | str = ".", config: RegisterConfig | None = None,
                      registry: ModelRegistry | None = None) -> dict[str, Any]:
    """The ``register`` stage: log the pipeline record; when every gate in
    ``reports/evaluate/gates.json`` passed, register the bundle in ``registry`` (default: the
    project's MLflow registry) under ``config.model_name`` with ``config.alias`` (and ``champion``
    only if ``config.promote_to_champion``); a bundle registered before is not registered again: its version
    gets the aliases (``already_registered``). Writes and returns ``reports/register/registration.json``;
    never registers a model whose gates failed."""
    import mlflow

    from rewardline.registry import open_registry

    config = config or RegisterConfig()
    if config.alias == CHAMPION and not config.promote_to_champion:
        raise ConfigError("register.alias is 'champion': set register.promote_to_champion: true to move "
                          "the champion automatically, or promote by hand (rewardline promote)")
    root = Path(project_dir).resolve()
    if not is_configured():
        configure_mlflow(root)
    gates = read_json(root / EVALUATE_DIR / GATES_FILE)
    if not gates:
        raise ConfigError(f"{root / EVALUATE_DIR / GATES_FILE} not found: run the evaluate stage first")
    passed = bool(gates.get("passed")) and all(g.get("passed") for g in gates.get("gates", {}).values())
    result: dict[str, Any] = {"model_name": config.model_name, "version": None, "run_id": None,
                              "parent_run_id": None, "aliases": [], "registered": False,
                              "tracking_uri": ensure_configured()}
    registry = registry or open_registry()
    with pipeline_run(root, config.experiment) as ids:
        result["parent_run_id"] = ids["parent"]
        with mlflow.start_run(experiment_id=ids["experiment"], run_name="register", nested=True,
                              tags={"stage": "register"}) as run:
            result["run_id"] = run.info.run_id
            mlflow_client = client()
            log_batch(mlflow_client, run.info.run_id, params=param_values(config.model_dump()))
            if passed:
                aliases = list(dict.fromkeys((config.alias, CHAMPION) if config.promote_to_champion
                                             else (config.alias,)))
                tags = {**lineage_tags(root), "parent_run_id": ids["parent"], "pipeline_run": ids["parent"]}
                report = (root / EVALUATE_DIR / "report.md").read_text()
                with tempfile.TemporaryDirectory() as tmp:
                    bundle = build_bundle(root, Path(tmp) / BUNDLE)
                    version, reused = register_once(registry, config.model_name, bundle, tags, report, run.info.run_id)
                for alias in aliases:
                    registry.set_alias(config.model_name, alias, version.version)
                result.update(version=version.version, aliases=aliases, registered=True, already_registered=reused,
                              model_uri=model_uri(config.model_name, version=version.version),
                              logged_model=version.source)
            else:
                failed = [n for n, g in gates.get("gates", {}).items() if not g.get("passed")]
                result["reason"] = f"gates failed: {', '.join(failed) or 'passed=false'}"
            outcome = {"registered": result["registered"], "model_version": result["version"]}
            log_batch(mlflow_client, run.info.run_id, tags=outcome)
            log_batch(mlflow_client, ids["parent"], tags=outcome)
    out = root / REGISTRATION
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result
