"""Prefect flow ``retrain``: fresh policy-sample batches → drift check → retrain, register, maybe promote.

Thin: each step is a :mod:`rewardline.retraining.cycle` function (see there for the cycle and the
exactly-once ledger); the pipeline runs as the ``pipeline`` subflow, through DVC. The
cycle's report (drift numbers against thresholds, decision, challenger gates) is the
Markdown artifact ``retrain-summary``.

A challenger that a gate rejects is a normal outcome, not an error: the ``pipeline`` subflow ends
Failed (naming the gate), the retrain run ends Completed with "challenger rejected" and the gate
table in its summary. Only errors (bad input, a stage or DVC failing after its retries) fail the run. A batch whose
own data is bad input is recorded ``rejected`` (final: not retried), the other batches are processed, and then the
run ends Failed, exit 2, naming it (docs/retraining.md, "Outcomes").

    python -m flows.retrain run [--project DIR] [--force]   # one cycle now
    python -m flows.retrain serve [--project DIR] [--name N] # scheduler in this process (cron from params)

Exit status: the contract's (:mod:`flows.command_line`): 0 done (a rejected challenger included), 2 bad input,
3 transient.

Deployments for a work pool: ``prefect.yaml`` (see docs/retraining.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.schedules import Cron
from prefect.states import State
from prefect.tasks import exponential_backoff

from flows.command_line import require_project, run_flow_command
from flows.pipeline import pipeline
from rewardline.errors import EXIT_TRANSIENT, BadInput, ConfigError, GateFailed, exit_code
from rewardline.ops import dvc_run
from rewardline.registry.names import TAGS_ENV
from rewardline.retraining import cycle as rt
from rewardline.retraining import inbox
from rewardline.retraining.ledger import Ledger


def transient(task: object, task_run: object, state: State) -> bool:
    """Retry a task only on what the exit-code contract retries (exit 3: an outage, an internal error), not on
    bad input (exit 2) or a gate (exit 1): the same batch fails the same way (README, "Exit codes")."""
    return not isinstance(state.data, BaseException) or exit_code(state.data) == EXIT_TRANSIENT


TRANSIENT = {"retries": 2, "retry_delay_seconds": exponential_backoff(backoff_factor=5),
             "retry_condition_fn": transient}


def _ledger(root: Path) -> Ledger:
    return Ledger(root / rt.load_config(root)[0].ledger)


@task(cache_policy=NO_CACHE, name="recover")
def recover(root: Path) -> list[str]:
    rolled = rt.recover(root, rt.load_config(root)[0], _ledger(root))
    if rolled:
        get_run_logger().warning("rolled back interrupted batches: %s", ", ".join(rolled))
    return rolled


@task(cache_policy=NO_CACHE, name="discover", **TRANSIENT)
def discover(root: Path) -> tuple[list[inbox.Batch], list[dict], list[inbox.Skipped]]:
    """Ready batches not in the ledger; duplicates recorded; not-ready and changed-since-processed ones reported."""
    cfg, _ = rt.load_config(root)
    batches, skipped = inbox.discover(rt.inbox_uri(root, cfg))
    todo, duplicates = rt.pending(batches, _ledger(root))
    skipped += rt.resubmitted(batches, _ledger(root))
    logger = get_run_logger()
    logger.info("inbox %s: %d ready, %d new, %d duplicates, %d skipped", cfg.inbox, len(batches), len(todo),
                len(duplicates), len(skipped))
    for batch in skipped:  # in the run's output too, not only in retrain-summary: cron mails the output
        logger.warning("batch %s skipped: %s", batch.batch_id, batch.reason)
    return todo, duplicates, skipped


@task(cache_policy=NO_CACHE, name="drift-check", task_run_name="drift-check {batch.batch_id}", **TRANSIENT)
def drift_check(root: Path, batch: inbox.Batch, force: bool,
                workdir: Path) -> tuple[rt.BatchResult, rt.Champion | None]:
    """The batch's data is read first: bad input (:class:`~rewardline.retraining.inbox.Rejected`) closes the batch
    ``rejected`` (no champion returned); an outage, a bad setting or an unusable champion raises as before."""
    cfg, params = rt.load_config(root)
    ledger = _ledger(root)
    rt.mark(ledger, batch, "started", labelled=batch.labelled)
    try:
        samples, pairs = batch.samples(), rt.batch_pairs(batch, params)
    except inbox.Rejected as err:
        ledger.record(batch.batch_id, batch.content_hash, "rejected", reason=str(err))  # final, like `duplicate`
        get_run_logger().error("batch %s rejected (bad input, not retried): %s", batch.batch_id, err)
        return rt.BatchResult(batch.batch_id, outcome=f"rejected: {err}", rejected=str(err)), None
    champion = rt.load_champion(root, params, cfg, workdir)
    report, decision = rt.check_drift(batch, champion, pairs, cfg, force, samples)
    rt.mark(ledger, batch, "decided", champion=champion.source, drift=report.to_dict(), decision=decision.to_dict())
    get_run_logger().info("batch %s: PSI %.4f, KS %.4f, accuracy drop %.4f -> %s", batch.batch_id, report.psi,
                          report.ks, report.accuracy_drop, decision.reasons or "no retrain")
    result = rt.BatchResult(batch.batch_id, champion.source, report.to_dict(), decision.to_dict())
    return result, champion


@task(cache_policy=NO_CACHE, name="append-batch", task_run_name="append {batch.batch_id}")
def append(root: Path, batch: inbox.Batch) -> str:
    cfg, _ = rt.load_config(root)
    path = rt.append_batch(root, cfg, batch)
    rt.mark(_ledger(root), batch, "appended", path=str(path.relative_to(root)))
    return str(path)


@task(cache_policy=NO_CACHE, name="compare-and-promote", task_run_name="compare {batch.batch_id}")
def compare_and_promote(root: Path, batch: inbox.Batch, champion: rt.Champion) -> tuple[dict, dict]:
    cfg, params = rt.load_config(root)
    comparison = rt.compare_on_holdout(root, champion, rt.batch_pairs(batch, params))
    return comparison, rt.maybe_promote(root, params, cfg, comparison)


@task(cache_policy=NO_CACHE, name="finish-batch", task_run_name="finish {batch.batch_id}")
def finish(root: Path, batch: inbox.Batch, result: rt.BatchResult) -> None:
    """``done`` in the ledger: the last step of a batch."""
    rt.mark(_ledger(root), batch, "done", outcome=result.outcome, comparison=result.comparison,
            promotion=result.promotion)


@task(cache_policy=NO_CACHE, name="version-ledger", **TRANSIENT)
def version_ledger(root: Path) -> str:
    """``dvc add`` the ledger (DVC-tracked with the data) and ``dvc push`` when a remote is configured."""
    cfg, _ = rt.load_config(root)
    logger = get_run_logger()
    code, out = dvc_run.dvc(root, "add", cfg.ledger, on_line=logger.info)
    if code != 0:
        raise RuntimeError(f"dvc add {cfg.ledger} failed: {out}")
    if not cfg.push or not dvc_run.remotes(root):
        return "no DVC remote configured: nothing pushed"
    code, out = dvc_run.dvc(root, "push", on_line=logger.info)
    if code != 0:
        raise RuntimeError(f"dvc push failed: {out}")
    return "pushed"


#: The event a registered challenger emits (infra/prefect-automations.yaml notifies on it; a rejection emits none).
CHALLENGER_EVENT = "rewardline.challenger.registered"


def announce_challenger(batch_id: str, promotion: dict) -> None:
    """Emit :data:`CHALLENGER_EVENT` about the model version, related to this flow run (Prefect automations)."""
    version = str(promotion.get("version"))
    emit_event(event=CHALLENGER_EVENT,
               resource={"prefect.resource.id": f"rewardline.model.reward-model.{version}",
                         "prefect.resource.name": f"reward-model v{version}"},
               payload={"batch_id": batch_id, "version": version, "promoted": bool(promotion.get("promoted")),
                        "reason": promotion.get("reason", "")})


@flow(name="retrain")
def retrain(project: str = ".", force: bool = False) -> list[dict]:
    """One retraining cycle over the inbox (``params.yaml: retrain``); ``force`` retrains on every new batch."""
    root = Path(project).resolve()
    cfg, _ = rt.load_config(root)
    rolled_back = recover(root)
    todo, duplicates, skipped = discover(root)
    results: list[rt.BatchResult] = []
    with tempfile.TemporaryDirectory(prefix="rewardline-champion-") as tmp:
        for batch in todo:
            result, champion = drift_check(root, batch, force, Path(tmp) / batch.batch_id)
            results.append(result)
            if result.rejected:  # closed in the ledger; the batches after it still run
                continue
            if not result.decision["retrain"]:
                result.outcome = rt.no_retrain_outcome(result.decision)
            elif not batch.labelled:
                result.outcome = "drift, but the batch has no rankings: annotate it and submit the labelled batch"
            else:
                append(root, batch)
                tags = {"retrain_batch": batch.batch_id, "retrain_flow_run_id": str(flow_run.id)}
                try:
                    pipeline(project=str(root), env={TAGS_ENV: json.dumps(tags)})
                except GateFailed as err:  # a decision: the data stays appended, the challenger is not registered
                    result.outcome = f"retrained; challenger rejected: {err}"
                    get_run_logger().warning("batch %s: %s", batch.batch_id, result.outcome)
                else:
                    result.comparison, result.promotion = compare_and_promote(root, batch, champion)
                    rt.checkpoint("registered")  # fault hook: registered (and compared), not yet done
                    result.outcome = ("retrained; challenger registered" if result.promotion["registered"]
                                      else "retrained; challenger not registered")
                    if result.promotion["promoted"]:
                        result.outcome += " and promoted to champion"
                    if result.promotion["registered"]:
                        announce_challenger(batch.batch_id, result.promotion)
                result.gates = dvc_run.gate_table(dvc_run.gate_report(root, "evaluate"))
            finish(root, batch, result)
    if todo or duplicates or rolled_back:
        version_ledger(root)
    create_markdown_artifact(markdown=rt.summary_markdown(results, cfg, rolled_back, duplicates, skipped),
                             key="retrain-summary", description="drift, decision and gates of this cycle")
    rejected = [r for r in results if r.rejected]
    if rejected:  # after every other batch and the summary: Failed, exit 2, so that the alert on a Failed run fires
        raise BadInput(detail="; ".join(f"batch {r.batch_id} rejected: {r.rejected}" for r in rejected)
                       + " (recorded in the ledger, not retried: fix the batch and submit it under a new batch id)")
    return [r.to_dict() for r in results]


def schedule(cfg: rt.RetrainConfig) -> Cron:
    """The deployment's schedule (``retrain.schedule_cron`` in ``retrain.timezone``), or
    :class:`~rewardline.errors.ConfigError` (exit 2) naming the setting: Prefect's own errors named neither."""
    try:
        ZoneInfo(cfg.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"params.yaml: retrain.timezone: {cfg.timezone!r} is not a time zone; expected an IANA "
                          "name such as 'UTC' or 'Europe/Berlin'") from None
    try:
        return Cron(cfg.schedule_cron, timezone=cfg.timezone)
    except ValueError as err:
        raise ConfigError(f"params.yaml: retrain.schedule_cron: {err}; expected 5 fields (minute hour day month "
                          "weekday) such as '0 3 * * 1'") from None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.retrain",
                                     description="Retraining on fresh policy samples (Prefect flow).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,serve}")
    run = commands.add_parser("run", help="run one cycle now", description="One retraining cycle over the inbox.")
    run.add_argument("--force", action="store_true", help="retrain on every new batch, whatever its drift")
    serve_cmd = commands.add_parser("serve", help="serve the cron schedule of params.yaml (retrain.schedule_cron)",
                                    description="Serve the retrain deployment on its schedule, in this process.")
    serve_cmd.add_argument("--name", default="retrain-scheduled", help="deployment name")
    for command in (run, serve_cmd):
        command.add_argument("--project", default=".", help="the project directory (default: the current one)")
    args = parser.parse_args()
    if args.command == "run":
        run_flow_command(lambda: retrain(project=str(require_project(args.project, "dvc.yaml", "params.yaml")),
                                         force=args.force))
        return

    def serve() -> None:
        root = require_project(args.project, "dvc.yaml", "params.yaml")
        cfg, _ = rt.load_config(root)
        retrain.serve(name=args.name, schedules=[schedule(cfg)], parameters={"project": str(root)}, limit=1)

    run_flow_command(serve)


if __name__ == "__main__":
    main()
