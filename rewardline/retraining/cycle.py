"""Scheduled retraining on fresh policy samples: the logic behind ``flows/retrain.py`` (no Prefect here).

One cycle, per ready inbox batch (:mod:`rewardline.retraining.inbox`) not yet in the ledger
(:mod:`rewardline.retraining.ledger`):

1. **recover**: a batch left mid-way by a crash (latest ledger state not final) is rolled back
   (its fresh data file removed) and processed again from the start;
2. **drift**: the champion (registry ``models:/<register.model_name>@champion``; else the
   project's last trained model) scores the batch's samples; PSI and KS of those rewards
   vs the champion's reference rewards, and its accuracy on the batch's labelled pairs vs
   its test accuracy (:mod:`rewardline.retraining.drift`); thresholds in ``params.yaml: retrain``; a batch whose own
   data is bad input (:class:`~rewardline.retraining.inbox.Rejected`) is closed ``rejected`` instead, not retried;
3. **append**: on a retrain decision the batch's rankings are written atomically to
   ``<fresh_dir>/<batch_id>.jsonl``, an ``ingest.sources`` entry (format ``rankings``);
4. the caller runs the pipeline (DVC), then :func:`compare_on_holdout` scores the batch's
   held-out prompts (its pairs in the val/test splits, split exactly as the pairs stage
   splits them) with challenger and champion, and :func:`maybe_promote` moves the
   ``champion`` alias when ``retrain.auto_promote`` allows it;
5. ``done`` in the ledger, only after all of that.

Fault injection for tests and drills (inert unless set; docs/reliability.md):
``REWARDLINE_RETRAIN_FAIL_AT=<point>`` raises :class:`InjectedFailure`, and
``REWARDLINE_RETRAIN_KILL_AT=<point>`` SIGKILLs the process (a crash: no ``finally``, no
exception handler runs), right after the ledger records that state (``started``, ``decided``,
``appended``, ``done``), or at ``registered``: after the challenger was registered and compared,
before ``done`` is written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from rewardline.config import Section, build, load_params
from rewardline.data import adapters
from rewardline.data.canonical import canonicalize
from rewardline.data.ingest import IngestConfig
from rewardline.errors import BadInput, ModelLoadError, one_line
from rewardline.evaluation.bon import BonConfig, bon_curves, summarize
from rewardline.evaluation.metrics import hard_credit
from rewardline.ops import storage
from rewardline.pairs.expand import PairsConfig, build_pairs
from rewardline.paths import EVALUATE_DIR, FRESH_DIR, INBOX_DIR, METRICS_FILE, MODEL_DIR, REGISTRATION, RETRAIN_LEDGER
from rewardline.registry import open_registry
from rewardline.registry.base import promote
from rewardline.registry.names import CHAMPION, MODEL_NAME, model_uri
from rewardline.report import fmt
from rewardline.retraining import drift, inbox
from rewardline.retraining.ledger import FINAL, Ledger

FAIL_AT_ENV = "REWARDLINE_RETRAIN_FAIL_AT"
KILL_AT_ENV = "REWARDLINE_RETRAIN_KILL_AT"
HOLDOUT_SPLITS = ("val", "test")


class InjectedFailure(RuntimeError):
    """Raised where ``REWARDLINE_RETRAIN_FAIL_AT`` asks for a crash."""


class RetrainConfig(Section):
    """``params.yaml: retrain``."""

    section: ClassVar[str] = "retrain"

    inbox: str = str(INBOX_DIR)  # local directory (relative to the project) or s3://bucket/prefix
    ledger: str = str(RETRAIN_LEDGER)
    fresh_dir: str = str(FRESH_DIR)  # where retrained-on batches are appended (an ingest source)
    schedule_cron: str = "0 3 * * 1"  # the deployment's schedule (Mondays 03:00)
    timezone: str = "UTC"
    champion_alias: str = CHAMPION
    psi_bins: int = Field(10, ge=2)
    psi_threshold: float = Field(0.25, ge=0.0)
    ks_threshold: float = Field(0.2, ge=0.0, le=1.0)
    accuracy_drop_threshold: float = Field(0.05, ge=0.0, le=1.0)
    min_pairs: int = Field(20, ge=0)  # labelled pairs needed before the accuracy drop counts
    drift_alpha: float = Field(0.05, ge=0.0, le=1.0)  # PSI / KS count only with permutation p <= this
    drift_permutations: int = Field(1000, ge=0)  # rounds of the prompt-level permutation test; 0: no test
    force: bool = False  # retrain on every new batch regardless of drift
    auto_promote: bool = False  # move @champion to a registered challenger that is not worse on held-out
    promote_margin: float = Field(0.0, ge=0.0, le=1.0)  # ...i.e. challenger − champion held-out accuracy ≥ −margin
    push: bool = True  # `dvc push` after a cycle when a DVC remote is configured
    engine: Literal["local", "ray"] = "local"  # score the batch in this process, or on a Ray cluster (docs/serving.md)
    ray_address: str | None = None  # engine ray: the cluster to join (None: start a local one)

    @property
    def thresholds(self) -> drift.Thresholds:
        return drift.Thresholds(self.psi_threshold, self.ks_threshold, self.accuracy_drop_threshold, self.min_pairs,
                                self.drift_alpha)


def load_config(project: Path) -> tuple[RetrainConfig, dict[str, Any]]:
    """The ``retrain`` section as a :class:`RetrainConfig`, and the whole params dict."""
    params = load_params(project / "params.yaml")
    return build(RetrainConfig, params.get("retrain"), name="retrain"), params


def inbox_uri(project: Path, cfg: RetrainConfig) -> str:
    return cfg.inbox if storage.is_remote(cfg.inbox) else str(project / cfg.inbox)


def fresh_path(project: Path, cfg: RetrainConfig, batch_id: str) -> Path:
    """``<fresh_dir>/<batch_id>.jsonl``; ``ValueError`` for an invalid batch id (it could leave the folder)."""
    return project / cfg.fresh_dir / f"{inbox.check_batch_id(batch_id)}.jsonl"


def checkpoint(state: str) -> None:
    """SIGKILL this process when ``REWARDLINE_RETRAIN_KILL_AT`` names ``state``; raise
    :class:`InjectedFailure` when ``REWARDLINE_RETRAIN_FAIL_AT`` does; else nothing."""
    if os.environ.get(KILL_AT_ENV) == state:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(FAIL_AT_ENV) == state:
        raise InjectedFailure(f"injected failure after ledger state {state!r} ({FAIL_AT_ENV})")


def mark(ledger: Ledger, batch: inbox.Batch, state: str, **details: Any) -> None:
    """Record ``state`` for the batch, then honour the fault hooks (:func:`checkpoint`)."""
    ledger.record(batch.batch_id, batch.content_hash, state, **details)
    checkpoint(state)


# ---------------------------------------------------------------- 1. recovery and discovery


def recover(project: Path, cfg: RetrainConfig, ledger: Ledger) -> list[str]:
    """Roll back batches a previous run left mid-way: remove their fresh data, mark ``rolled_back``."""
    rolled = []
    last = {e["batch_id"]: e for e in ledger.events()}
    for batch_id in ledger.interrupted():
        path = fresh_path(project, cfg, batch_id)
        removed = path.exists()
        path.unlink(missing_ok=True)
        ledger.record(batch_id, last[batch_id]["content_hash"], "rolled_back",
                      interrupted_at=last[batch_id]["state"],
                      removed=str(path.relative_to(project)) if removed else None)
        rolled.append(batch_id)
    return rolled


def pending(batches: list[inbox.Batch], ledger: Ledger) -> tuple[list[inbox.Batch], list[dict]]:
    """Batches to process, and the ones that are duplicates (recorded as such) of a done batch or of a batch to
    process earlier in this cycle: the same data under two names in one inbox is processed once."""
    original_of = ledger.done_by_hash()  # content hash -> the batch that has (or will have) processed it
    todo, duplicates = [], []
    for batch in batches:
        if ledger.finished(batch.batch_id):
            continue
        original = original_of.get(batch.content_hash)
        if original is not None:
            ledger.record(batch.batch_id, batch.content_hash, "duplicate", of=original)
            duplicates.append({"batch_id": batch.batch_id, "duplicate_of": original})
            continue
        todo.append(batch)
        original_of[batch.content_hash] = batch.batch_id
    return todo, duplicates


def resubmitted(batches: list[inbox.Batch], ledger: Ledger) -> list[inbox.Skipped]:
    """Batches the ledger closed (``done``, ``duplicate``) whose files changed since, under the same id: a batch id
    is processed once, so they are skipped, with the reason (else a corrected or annotated batch put back in
    place was ignored without a word)."""
    last = {e["batch_id"]: e for e in ledger.events()}
    changed = []
    for batch in batches:
        event = last.get(batch.batch_id)
        if event and event["state"] in FINAL and event["content_hash"] != batch.content_hash:
            changed.append(inbox.Skipped(batch.batch_id, f"changed since it was processed ({event['state']} on "
                                         f"{event['time']}); a batch id is processed once: submit the new content "
                                         "under a new batch id"))
    return changed


# ---------------------------------------------------------------- 2. champion and drift


@dataclass
class Champion:
    model_dir: Path
    reference_rewards: np.ndarray  # raw rewards of its test responses, stored at registration
    test_accuracy: float
    source: str  # "models:/reward-model@champion (version 3)" or the local fallback
    reference_prompts: np.ndarray | None = None  # prompt id of each reference reward (None: older bundles)


def read_reference(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``reference_rewards.json``: the rewards and, when recorded, their prompt ids."""
    data = json.loads(path.read_text())
    prompts = data.get("prompt_ids")
    return np.asarray(data["rewards"], np.float64), (np.asarray(prompts, dtype=object) if prompts else None)


def load_champion(project: Path, params: dict[str, Any], cfg: RetrainConfig, dst: Path) -> Champion:
    """The registered champion's bundle, downloaded to ``dst``; without one, the project's
    last trained model and its evaluate report, copied to ``dst`` (the pipeline overwrites them)."""
    registry = open_registry(project)
    name = (params.get("register") or {}).get("model_name", MODEL_NAME)
    uri = model_uri(name, cfg.champion_alias)
    bundle = registry.load(uri, dst / "registry")
    if bundle is not None:
        source = f"{uri} (version {registry.resolve_alias(name, cfg.champion_alias)})"
        return champion_from(source, bundle, bundle / "reference_rewards.json", bundle / "evaluate_metrics.json")
    model, report = project / MODEL_DIR, project / EVALUATE_DIR
    if not (model / "reward_config.json").exists() or not (report / "reference_rewards.json").exists():
        raise FileNotFoundError(f"no champion: {uri} is not registered and {model} / "
                                f"{report / 'reference_rewards.json'} do not exist; run the pipeline first")
    local = dst / "local"
    shutil.copytree(model, local, dirs_exist_ok=True)
    return champion_from(f"{MODEL_DIR} (no {uri} registered)", local, report / "reference_rewards.json",
                         report / METRICS_FILE)


def champion_from(source: str, model_dir: Path, reference_file: Path, metrics_file: Path) -> Champion:
    """The champion ``source`` (its model in ``model_dir``, its reference rewards and test accuracy read from the
    files), or :class:`~rewardline.errors.ModelLoadError` (:func:`champion_errors`)."""
    with champion_errors(source, model_dir):
        reference, prompts = read_reference(reference_file)
        accuracy = float(json.loads(metrics_file.read_text())["accuracy"])
    return Champion(model_dir, reference, accuracy, source, prompts)


@contextmanager
def champion_errors(source: str, model_dir: Path) -> Iterator[None]:
    """A champion file missing or malformed, or weights that do not load, as :class:`~rewardline.errors.ModelLoadError`
    (exit 2) naming the champion and the file, not the temporary directory it was downloaded to (gone after the run),
    and what to do."""
    try:
        yield
    except (ModelLoadError, FileNotFoundError, KeyError, json.JSONDecodeError) as err:
        what = (f"no field {err.args[0]!r} in its records" if isinstance(err, KeyError)
                else f"no {Path(err.filename).name}" if isinstance(err, FileNotFoundError) and err.filename
                else one_line(str(err)).replace(f"{model_dir}/", ""))
        raise ModelLoadError(detail=f"champion {source} is not usable: {what}; move the alias to a version that is "
                                    "(rewardline promote --version N)") from err


@dataclass
class BatchPairs:
    """The batch's labelled pairs (pairs schema), with the texts needed to score them."""

    pairs: pa.Table
    prompt_of: dict[str, Any]  # prompt_id -> prompt text or message list
    response_of: dict[str, tuple[str, str]]  # response_id -> (prompt_id, text)


def batch_pairs(batch: inbox.Batch, params: dict[str, Any]) -> BatchPairs | None:
    """Canonicalise the batch's rankings exactly as ingest would and expand them as the pairs stage
    does (same ``pairs`` params, so the same prompts land in the same split); None when unlabelled. Records it
    cannot use raise :class:`~rewardline.retraining.inbox.Rejected` (the batch is bad input, not retried)."""
    if not batch.labelled:
        return None
    data = batch.read(inbox.RANKINGS)  # an outage or a refused read raises as such: only the content rejects a batch
    with inbox.rejecting(batch.batch_id):
        result = adapters.read_file(data, batch.file_uri(inbox.RANKINGS), fmt="rankings", batch_id=batch.batch_id)
        tables = canonicalize(result.ranked)
        check_quarantine(pa.concat_tables([result.quarantine, tables.quarantine]), result.records_in, params)
        pairs, _ = build_pairs(tables.rankings, tables.prompts, build(PairsConfig, params.get("pairs"), name="pairs"),
                               tables.responses)
    prompts = tables.prompts.to_pydict()
    prompt_of = {pid: (msgs if msgs else text) for pid, text, msgs in
                 zip(prompts["prompt_id"], prompts["prompt"], prompts["prompt_messages"], strict=True)}
    responses = tables.responses.to_pydict()
    response_of = {rid: (pid, text) for rid, pid, text in
                   zip(responses["response_id"], responses["prompt_id"], responses["response"], strict=True)}
    return BatchPairs(pairs, prompt_of, response_of)


def check_quarantine(quarantine: pa.Table, records_in: int, params: dict[str, Any]) -> None:
    """:class:`~rewardline.errors.BadInput` naming the first quarantined record of a batch's rankings when more
    than ``ingest.max_quarantine_share`` of its records were quarantined: a file in another format (all of them)
    would otherwise give the drift check no labelled pairs and be appended to the training data."""
    share = build(IngestConfig, params.get("ingest"), name="ingest").max_quarantine_share
    if not quarantine.num_rows or quarantine.num_rows <= share * records_in:
        return
    first = quarantine.slice(0, 1).to_pylist()[0]
    raise BadInput(first["origin_file"], line=first["origin_line"], field=first["field"],
                   detail=f"{first['reason']} ({quarantine.num_rows} of {records_in} records quarantined, more than "
                          f"ingest.max_quarantine_share {share}); expected native `rankings` records "
                          "(docs/data-contract.md)")


def raw_rewards(model_dir: Path, prompts: list[Any], responses: list[str],
                cfg: RetrainConfig | None = None) -> np.ndarray:
    """Raw rewards f_θ(prompt, response) (no ``reward_mean`` shift), in input order: in this process, or by
    model actors on a Ray cluster when ``cfg.engine`` is ``ray`` (:mod:`rewardline.serving.ray_engine`)."""
    if cfg is not None and cfg.engine == "ray":
        from rewardline.serving.ray_engine import RayOptions, ray_rewards

        rows = [{"prompt": p, "response": r} for p, r in zip(prompts, responses, strict=True)]
        return ray_rewards(model_dir, rows, options=RayOptions(address=cfg.ray_address), normalize=False)[0]
    from rewardline.modeling.score import score_texts

    return score_texts(model_dir, prompts, responses, normalize=False)


def pair_credit(model_dir: Path, bp: BatchPairs, pairs: pa.Table | None = None,
                cfg: RetrainConfig | None = None) -> np.ndarray:
    """Hard credit per pair (1 right, 0 wrong, 0.5 equal rewards, NaN tied label); each response scored once
    (:func:`raw_rewards` with ``cfg``'s engine)."""
    pairs = bp.pairs if pairs is None else pairs
    a, b = pairs["response_a_id"].to_pylist(), pairs["response_b_id"].to_pylist()
    ids = sorted(set(a) | set(b))
    if not ids:
        return np.zeros(0)
    rewards = raw_rewards(model_dir, [bp.prompt_of[bp.response_of[r][0]] for r in ids],
                          [bp.response_of[r][1] for r in ids], cfg)
    index = {r: i for i, r in enumerate(ids)}
    ra = rewards[[index[r] for r in a]]
    rb = rewards[[index[r] for r in b]]
    return hard_credit(ra, rb, pairs["label"].to_numpy())


def check_drift(batch: inbox.Batch, champion: Champion, bp: BatchPairs | None, cfg: RetrainConfig, force: bool = False,
                samples: list[dict] | None = None) -> tuple[drift.DriftReport, drift.Decision]:
    """Score the batch's samples (``samples``, else read) with the champion (``cfg.engine``: here or on Ray); PSI,
    KS (with their prompt-level permutation p-values when the reference carries prompt ids), accuracy drop; the
    decision."""
    samples = batch.samples() if samples is None else samples
    with champion_errors(champion.source, champion.model_dir):
        rewards = raw_rewards(champion.model_dir, [s["prompt"] for s in samples], [s["response"] for s in samples],
                              cfg)
        credit = pair_credit(champion.model_dir, bp, cfg=cfg) if bp is not None else None
    grouped = champion.reference_prompts is not None
    report = drift.measure(champion.reference_rewards, rewards, cfg.psi_bins, pair_credit=credit,
                           reference_accuracy=champion.test_accuracy, reference_groups=champion.reference_prompts,
                           groups=np.asarray([s.get("prompt_id") for s in samples], dtype=object) if grouped else None,
                           permutations=cfg.drift_permutations)
    report.best_of_n = fresh_bon(samples, rewards)
    return report, drift.decide(report, cfg.thresholds, force=force or cfg.force)


#: What the cycle report keeps of :func:`rewardline.evaluation.bon.summarize` for a fresh batch.
FRESH_BON_KEYS = ("prompts", "n_max", "gold_by_n", "random_gold", "oracle_gold", "gain_n_max", "gain_n_max_ci")


def fresh_bon(samples: list[dict], rewards: np.ndarray, config: BonConfig | None = None) -> dict[str, Any] | None:
    """The champion's best-of-N on fresh policy samples that carry gold labels (every sample a numeric
    ``gold``: a judge's preference, correctness, a gold RM's score), with the samples of a prompt as its
    candidates: exact E[gold of the pick] per N, random pick, oracle, gain at N_max with its CI by prompt
    (:func:`rewardline.evaluation.bon.bon_curves`, ``summarize``). None without gold or with < 2 samples per prompt."""
    gold = [s.get("gold") for s in samples]
    if not samples or any(isinstance(g, bool) or not isinstance(g, int | float) for g in gold):
        return None
    keys = [p if isinstance(p, str) else json.dumps(p, sort_keys=True) for p in (s["prompt"] for s in samples)]
    _, prompt_index = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    if np.bincount(prompt_index).max() < 2:
        return None
    curves = bon_curves(prompt_index, np.asarray(rewards, np.float64), np.asarray(gold, np.float64))
    metrics = summarize(curves, config or BonConfig())
    return {k: metrics[k] for k in FRESH_BON_KEYS}


# ---------------------------------------------------------------- 3. append, 4. compare and promote


def append_batch(project: Path, cfg: RetrainConfig, batch: inbox.Batch) -> Path:
    """Write the batch's rankings to ``<fresh_dir>/<batch_id>.jsonl`` (temp file + rename: all or nothing)."""
    path = fresh_path(project, cfg, batch.batch_id)
    storage.write_bytes(str(path), batch.read(inbox.RANKINGS))
    return path


def compare_on_holdout(project: Path, champion: Champion, bp: BatchPairs) -> dict[str, Any]:
    """Challenger (the freshly trained model) vs champion on the batch's val/test pairs."""
    holdout = bp.pairs.filter(pc.is_in(bp.pairs["split"], pa.array(HOLDOUT_SPLITS)))
    out: dict[str, Any] = {"n_pairs": holdout.num_rows,
                           "n_prompts": len(set(holdout["prompt_id"].to_pylist()))}
    for name, model in (("challenger", project / MODEL_DIR), ("champion", champion.model_dir)):
        credit = pair_credit(model, bp, holdout)
        counted = credit[~np.isnan(credit)]
        out[f"{name}_accuracy"] = float(counted.mean()) if counted.size else float("nan")
    out["difference"] = out["challenger_accuracy"] - out["champion_accuracy"]
    return out


def registration(project: Path) -> dict[str, Any] | None:
    path = project / REGISTRATION
    return json.loads(path.read_text()) if path.exists() else None


def maybe_promote(project: Path, params: dict[str, Any], cfg: RetrainConfig,
                  comparison: dict[str, Any]) -> dict[str, Any]:
    """Move ``@champion`` to the registered challenger when ``auto_promote`` and it is not worse on held-out."""
    reg = registration(project) or {}
    out: dict[str, Any] = {"version": reg.get("version"), "registered": bool(reg.get("registered")),
                           "promoted": False}
    diff = comparison.get("difference", float("nan"))
    if not out["registered"]:
        out["reason"] = "challenger not registered"
    elif not cfg.auto_promote:
        out["reason"] = "retrain.auto_promote is false: promote by hand (rewardline promote)"
    elif math.isnan(diff) or diff < -cfg.promote_margin:
        out["reason"] = f"held-out accuracy difference {diff:.4f} < -{cfg.promote_margin}"
    else:
        promote(open_registry(project), reg["model_name"], reg["version"], alias=cfg.champion_alias,
                require_gates=True)
        out.update(promoted=True, reason=f"held-out accuracy difference {diff:.4f} >= -{cfg.promote_margin}")
    return out


# ---------------------------------------------------------------- 5. the report


@dataclass
class BatchResult:
    batch_id: str
    champion: str = ""
    drift: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)
    comparison: dict[str, Any] = field(default_factory=dict)
    promotion: dict[str, Any] = field(default_factory=dict)
    gates: str = ""  # the evaluate gate table of the challenger (Markdown), when retrained
    outcome: str = ""
    rejected: str = ""  # why the batch's own data is bad input (inbox.Rejected), when it is: not drift-checked

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def no_retrain_outcome(decision: dict[str, Any]) -> str:
    """The outcome of a batch the decision does not retrain on: below every threshold, or a crossing that
    the permutation test put within sampling noise (``decision["within_noise"]``), said as such."""
    noise = decision.get("within_noise") or []
    if not noise:
        return "no retrain (below every threshold)"
    return f"no retrain ({', '.join(n.split()[0].upper() for n in noise)} crossed within sampling noise)"


def summary_markdown(results: list[BatchResult], cfg: RetrainConfig, rolled_back: list[str],
                     duplicates: list[dict], skipped: list[inbox.Skipped]) -> str:
    """The cycle's report: per batch the drift numbers against the thresholds, the decision, the gates."""
    t = cfg.thresholds
    lines = ["# Retraining cycle", ""]
    if not results:
        lines.append("No new batch in the inbox.")
    for r in results:
        if r.rejected:  # bad input: no drift numbers
            lines += [f"## Batch `{r.batch_id}`: {r.outcome}", "", "Recorded `rejected` in the ledger, not retried: "
                      "fix the batch and submit it under a new batch id.", ""]
            continue
        d = r.drift
        lines += [f"## Batch `{r.batch_id}`: {r.outcome}", "", f"Champion: {r.champion}", "",
                  f"| check | value | threshold | permutation p (alpha {t.alpha}) | crossed |",
                  "| --- | --- | --- | --- | --- |"]
        for label, value, threshold, p in (("PSI (reward distribution)", d.get("psi"), t.psi, d.get("psi_pvalue")),
                                           ("KS statistic", d.get("ks"), t.ks, d.get("ks_perm_pvalue")),
                                           ("accuracy drop (test − batch)", d.get("accuracy_drop"), t.accuracy_drop,
                                            None)):
            crossed = isinstance(value, float) and not math.isnan(value) and value > threshold
            lines.append(f"| {label} | {fmt(value)} | {threshold} | {fmt(p) if p is not None else ''} "
                         f"| {'yes' if crossed else 'no'} |")
        lines += ["", f"Samples {d.get('n_samples')} ({d.get('n_prompts')} prompts), reference "
                      f"{d.get('n_reference')} ({d.get('n_reference_prompts')} prompts), labelled pairs "
                      f"{d.get('n_pairs')} (min {t.min_pairs}); champion accuracy: test "
                      f"{fmt(d.get('reference_accuracy'))}, batch {fmt(d.get('batch_accuracy'))}; KS p-value "
                      f"(independent samples) {fmt(d.get('ks_pvalue'))}.", "",
                  f"Decision: **{'retrain' if r.decision.get('retrain') else 'no retrain'}**"
                  + (f" ({'; '.join(r.decision.get('reasons', []))})" if r.decision.get("reasons") else ""), ""]
        if d.get("best_of_n"):
            b = d["best_of_n"]
            n_max = str(b["n_max"])
            low, high = b["gain_n_max_ci"]
            lines += [f"Best-of-N of the champion on the samples' gold ({b['prompts']} prompts): N = {n_max} "
                      f"{fmt(b['gold_by_n'][n_max])}, random {fmt(b['random_gold'][n_max])}, oracle "
                      f"{fmt(b['oracle_gold'][n_max])}; gain {fmt(b['gain_n_max'])} [{fmt(low)}, {fmt(high)}].", ""]
        if r.decision.get("within_noise"):
            lines += [f"Within sampling noise, not counted: {'; '.join(r.decision['within_noise'])}.", ""]
        if r.comparison:
            c = r.comparison
            lines += [f"Held-out prompts of the batch ({c.get('n_prompts')} prompts, {c.get('n_pairs')} pairs): "
                      f"challenger {fmt(c.get('challenger_accuracy'))}, champion "
                      f"{fmt(c.get('champion_accuracy'))}, difference {fmt(c.get('difference'))}.", ""]
        if r.promotion:
            p = r.promotion
            lines += [f"Registered: {p.get('registered')} (version {p.get('version')}); promoted: "
                      f"{p.get('promoted')} ({p.get('reason', '')}).", ""]
        if r.gates:
            lines += ["### Challenger gates", "", r.gates.strip(), ""]
    if rolled_back:
        lines += ["", f"Rolled back and redone after an interrupted run: {', '.join(rolled_back)}."]
    if duplicates:
        lines += ["", "Duplicates (same content as a processed batch, not processed again): "
                  + ", ".join(f"{d['batch_id']} = {d['duplicate_of']}" for d in duplicates) + "."]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{s.batch_id} ({s.reason})" for s in skipped) + "."]
    return "\n".join(lines).rstrip() + "\n"
