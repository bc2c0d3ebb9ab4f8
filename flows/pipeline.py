"""Prefect flow ``pipeline``: every DVC stage of dvc.yaml as one task, run through ``dvc repro``.

Versioning is identical to an engineer's ``dvc repro``: each task runs
``dvc repro --single-item <stage>`` in the project, so dvc.lock, the cache and the outputs
are DVC's. Stage output goes to the Prefect run logs line by line. A transient failure
(stage exit 3: I/O, network, a service down; DVC lock held, a killed process) is retried with
exponential backoff; a failed quality gate (exit 1) or bad parameter / input (exit 2) is not
(the same inputs fail the same way; see :mod:`rewardline.errors`): the flow ends
Failed with the stage's message, which names the gate. The gate reports (ingest,
validate, evaluate) are published as Markdown artifacts ``<stage>-gate-report``.

    python -m flows.pipeline [--project DIR]     # one run (ephemeral API unless PREFECT_API_URL is set)

The ephemeral API server gets ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (Prefect's default 20 s; the flows
set none) to start; missing it is exit 3 naming the setting (:mod:`flows.command_line`, docs/retraining.md).

Exit status: the contract's (:mod:`flows.command_line`): 0 done, 1 a gate failed, 2 bad input, 3 transient.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from flows.command_line import require_project, run_flow_command
from rewardline.errors import ConfigError, GateFailed, TransientError
from rewardline.ops import dvc_run
from rewardline.registry.names import TAGS_ENV  # parent-run tags the register stage adds


class StageError(TransientError):
    """DVC or a stage failed for a reason other than a gate or bad input (stage exit 3, or DVC itself): retried."""


@task(cache_policy=NO_CACHE, name="dvc-stage", task_run_name="dvc repro {stage}", retries=2,
      retry_delay_seconds=exponential_backoff(backoff_factor=10), retry_jitter_factor=0.2)
def run_stage(stage: str, project: str, env: dict[str, str]) -> dict:
    """``dvc repro --single-item <stage>``, output to the run logs; raises :class:`StageError` to retry."""
    logger = get_run_logger()
    run = dvc_run.repro(stage, Path(project), on_line=logger.info, env=env)
    if run.retryable:
        raise StageError(f"dvc repro {stage} failed (stage exit {run.stage_exit}, dvc exit {run.returncode}): "
                         f"{run.message}")
    return {"stage": stage, "kind": run.kind, "message": run.message if run.kind != "ok" else "",
            "seconds": round(run.seconds, 1)}


def publish_gate_report(project: Path, stage: str, failure: str = "") -> None:
    report = dvc_run.gate_report(project, stage)
    if report is None and not failure:
        return
    head = f"**{stage}: gate failed**\n\n```\n{failure}\n```\n\n" if failure else ""
    create_markdown_artifact(markdown=head + (report or ""), key=f"{stage}-gate-report",
                             description=f"{stage} gate report")


def selected_stages(root: Path, stages: list[str] | None) -> list[str]:
    """``stages`` (default: every stage of dvc.yaml, in order); a name dvc.yaml lacks is a :class:`ConfigError`
    (exit 2, not retried) listing the stages there, before any ``dvc repro`` runs."""
    known = dvc_run.stage_names(root)
    unknown = [stage for stage in stages or () if stage not in known]
    if unknown:
        raise ConfigError(f"{root / 'dvc.yaml'}: no stage {', '.join(map(repr, unknown))}; "
                          f"expected one of: {', '.join(known)}")
    return list(stages or known)


@flow(name="pipeline")
def pipeline(project: str = ".", stages: list[str] | None = None, retries: int = 2, retry_backoff_s: float = 10.0,
             env: dict[str, str] | None = None) -> list[dict]:
    """Run ``stages`` (default: all of dvc.yaml, in order) through DVC; Failed on a gate, naming it."""
    root = Path(project).resolve()
    tags = json.loads((env or {}).get(TAGS_ENV) or os.environ.get(TAGS_ENV) or "{}")
    tags.update(prefect_flow_run_id=str(flow_run.id), prefect_flow_run_name=str(flow_run.name))
    env = {**(env or {}), TAGS_ENV: json.dumps(tags)}
    runner = run_stage.with_options(retries=retries, retry_delay_seconds=exponential_backoff(retry_backoff_s))
    results = []
    for stage in selected_stages(root, stages):
        result = runner(stage, str(root), env)
        results.append(result)
        failed = result["kind"] in ("gate", "config")
        publish_gate_report(root, stage, result["message"] if failed else "")
        if result["kind"] == "gate":
            raise GateFailed(f"stage {stage}: {result['message']}")
        if result["kind"] == "config":
            raise ConfigError(f"stage {stage}: {result['message']}")
    get_run_logger().info("pipeline done: %s", ", ".join(f"{r['stage']} {r['seconds']} s" for r in results))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline",
                                     description="Run the DVC pipeline as a Prefect flow.")
    parser.add_argument("--project", default=".", help="the project directory (default: the current one)")
    parser.add_argument("--stage", action="append", help="only these stages (repeatable)")
    args = parser.parse_args()
    run_flow_command(lambda: pipeline(project=str(require_project(args.project, "dvc.yaml")), stages=args.stage))


if __name__ == "__main__":
    main()
