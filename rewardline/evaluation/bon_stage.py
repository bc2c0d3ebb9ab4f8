"""The ``bon`` pipeline stage: best-of-N on the test prompts whose candidates carry gold from the data.

Gold comes from the judged preference against the prompt's anchor, as ingest keeps it: an anchor
comparison is a ranking holding one response flagged ``is_anchor`` (AlpacaEval's reference) and one
sample, whose ``score`` is the judge's P(sample beats reference) = preference − 1 (the alpaca-eval
adapter). A candidate of a prompt is each non-anchor response with such a score; its gold is the mean
score over the anchor comparisons it appears in (one per judge). Only prompts of the pairs' ``test``
split with at least two candidates take part, so nothing the model was trained or calibrated on is used.

With no such prompt the stage passes as ``skipped`` (gates shown skipped, with the reason). With a
champion model the same prompts are scored by it too: ``champion_gold_by_n`` and its gain at N_max
sit beside the challenger's curve in ``metrics.json`` and ``report.md``. With none because the reference looks
mistaken (:func:`rewardline.registry.champion.resolved_champion`'s why: a ``models:/`` name close to a registered
one) both say so, as evaluate's gate report does (``metrics["champion_missing_reason"]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data.tables import json_safe, read_table, table_path, write_json
from rewardline.evaluation.bon import BON_GATES, BonConfig, bon_curves, run_bon, summarize
from rewardline.evaluation.candidates import Candidates
from rewardline.evaluation.gates import CHAMPION_MISSING
from rewardline.gates import GateReport, GateResult
from rewardline.ops.atomic import writes_output
from rewardline.paths import GATES_FILE, METRICS_FILE, REPORT_FILE
from rewardline.report import fmt


def anchored_test_candidates(validated_dir: Path, pairs_dir: Path, split: str = "test") -> Candidates | None:
    """Candidates with gold of the ``split`` prompts (module docstring); None when no prompt has two."""
    responses = read_table(table_path(pairs_dir, "responses"))
    if "is_anchor" not in responses.schema.names:
        return None
    prompt_ids = read_table(table_path(pairs_dir, split), columns=["prompt_id"])["prompt_id"].unique()
    rankings = read_table(table_path(validated_dir, "rankings"),
                          columns=["ranking_id", "prompt_id", "response_id", "score"])
    rankings = rankings.filter(pc.is_in(rankings["prompt_id"], value_set=prompt_ids))
    anchors = responses.filter(pc.fill_null(responses["is_anchor"], False))["response_id"].combine_chunks()
    is_anchor = pc.is_in(rankings["response_id"], value_set=anchors)
    with_anchor = rankings.filter(is_anchor)["ranking_id"].unique()
    samples = rankings.filter(pc.and_(pc.invert(is_anchor), pc.is_in(rankings["ranking_id"], value_set=with_anchor)))
    samples = samples.filter(pc.is_valid(samples["score"]))
    gold = samples.group_by(["prompt_id", "response_id"], use_threads=False).aggregate([("score", "mean")])
    gold = gold.sort_by([("prompt_id", "ascending"), ("response_id", "ascending")])
    per_prompt = gold.group_by("prompt_id", use_threads=False).aggregate([("response_id", "count")])
    keep = per_prompt.filter(pc.greater_equal(per_prompt["response_id_count"], 2))["prompt_id"]
    gold = gold.filter(pc.is_in(gold["prompt_id"], value_set=keep))
    if gold.num_rows == 0:
        return None
    texts = responses.take(pc.index_in(gold["response_id"], value_set=responses["response_id"]))["response"]
    prompts = read_table(table_path(pairs_dir, "prompts"))
    at = pc.index_in(gold["prompt_id"], value_set=prompts["prompt_id"])
    prompt_text, messages = prompts["prompt"].take(at).to_pylist(), prompts["prompt_messages"].take(at).to_pylist()
    codes = pa.chunked_array([gold["prompt_id"].combine_chunks().dictionary_encode().indices])
    return Candidates(prompts=[m or t for t, m in zip(prompt_text, messages, strict=True)],
                      responses=texts.to_pylist(), gold=gold["score_mean"].to_numpy().astype(np.float64),
                      prompt_index=codes.to_numpy().astype(np.int64),
                      origins=[str(table_path(validated_dir, "rankings")),
                               str(table_path(pairs_dir, split))])


def _skipped(out_dir: Path, config: BonConfig, reason: str, champion_missing: str | None = None) -> dict[str, Any]:
    gates = GateReport("bon", [GateResult(s.name, None, s.threshold(config), s.op, s.description, passed=True,
                                          skipped=True, reason=reason) for s in BON_GATES])
    metrics = {"status": "skipped", "reason": reason, "prompts": 0, "candidates": 0, **gates.metrics_entries(),
               "config": config.model_dump(), **_champion_missing(champion_missing)}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(json_safe(metrics), out_dir / METRICS_FILE)  # strict JSON: NaN → null
    gates.write_json(out_dir / GATES_FILE)
    (out_dir / REPORT_FILE).write_text(f"# Best-of-N\n\nskipped: {reason}\n\n{gates.to_markdown().rstrip()}\n"
                                       + missing_champion_section(champion_missing))
    (out_dir / "bon.csv").write_text("n,prompts,kl,sqrt_kl,gold,proxy\n")  # the declared plots: empty,
    _text_figure(f"best-of-N skipped:\n{reason}", out_dir / "bon.png")  # and a figure saying why
    return metrics


def _text_figure(text: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 1.5), dpi=100)
    FigureCanvasAgg(fig)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    fig.savefig(path, format="png")


def champion_section(metrics: dict[str, Any], champion: dict[str, Any]) -> str:
    """Report lines: gold by N of the challenger and the champion on the same prompts and gold."""
    lines = ["", "## Champion on the same prompts", "", "| N | challenger gold | champion gold |",
             "| ---: | ---: | ---: |"]
    lines += [f"| {n} | {fmt(metrics['gold_by_n'][n])} | {fmt(champion['gold_by_n'][n])} |"
              for n in metrics["gold_by_n"]]
    lo, hi = champion["gain_n_max_ci"]
    lines += ["", f"Champion gain at N = {champion['n_max']}: {fmt(champion['gain_n_max'])} (CI [{fmt(lo)}, "
              f"{fmt(hi)}]); challenger {fmt(metrics['gain_n_max'])}.", ""]
    return "\n".join(lines)


def _champion_missing(why: str | None) -> dict[str, str]:
    """``{champion_missing_reason: why}`` when the champion reference looks mistaken; else ``{}``."""
    return {CHAMPION_MISSING: why} if why else {}


def missing_champion_section(why: str | None) -> str:
    """Report lines saying why there is no champion curve, when the reference looks mistaken; else ""."""
    return f"\n## Champion\n\n{why}\n" if why else ""


@writes_output("out_dir")  # locked; written to a staging folder, published whole
def run_bon_stage(model_dir: Path, validated_dir: Path, pairs_dir: Path, out_dir: Path, config: BonConfig,
                  champion_dir: Path | None = None, champion_missing: str | None = None) -> dict[str, Any]:
    """Best-of-N on the anchored test candidates (or ``skipped``); champion curve when given. ``champion_missing``:
    why ``champion_dir`` is None when that looks mistaken (in ``metrics.json`` and ``report.md``)."""
    from rewardline.modeling.score import score_texts  # torch only when a model is scored

    candidates = anchored_test_candidates(validated_dir, pairs_dir)
    if candidates is None:
        return _skipped(out_dir, config, "no test prompt has two or more candidates with a judged preference "
                                         "against an anchor", champion_missing)
    proxy = score_texts(model_dir, candidates.prompts, candidates.responses).astype(np.float64)
    info: dict[str, Any] = {"status": "ran", "model": str(model_dir), "sources": candidates.origins,
                            "gold": "judge P(sample beats the anchor) from the data (rankings.score)",
                            **_champion_missing(champion_missing)}
    if champion_dir is not None:
        champion_proxy = score_texts(champion_dir, candidates.prompts, candidates.responses).astype(np.float64)
        champion = summarize(bon_curves(candidates.prompt_index, champion_proxy, candidates.gold, config.max_n),
                             config)
        info.update(champion_gold_by_n=champion["gold_by_n"], champion_gain_n_max=champion["gain_n_max"],
                    champion_gain_n_max_ci=champion["gain_n_max_ci"], champion_model=str(champion_dir))
    metrics = run_bon(candidates, proxy, out_dir, config, info=info)
    metrics.update(gain_n_max_ci_low=metrics["gain_n_max_ci"][0], gold_n_max=metrics["observed_peak"]["gold_n_max"],
                   overoptimization=metrics["observed_peak"]["overoptimization"])
    write_json(json_safe(metrics), out_dir / METRICS_FILE)  # strict JSON: NaN → null
    if champion_dir is not None or champion_missing:
        with (out_dir / REPORT_FILE).open("a") as report:
            report.write(champion_section(metrics, champion) if champion_dir is not None
                         else missing_champion_section(champion_missing))
    return metrics
