"""Stage 3, pairs: rankings → aggregated pairwise comparisons, split by prompt.

Every ranking of K responses yields its C(K, 2) comparisons. One annotator's vote on
the pair {a, b} is

    v = 1 if rank_a < rank_b,  0 if rank_a > rank_b,  1/2 if tied

(ties are dropped when ``ties: skip``). Soft anchor judgements (``anchor_labels: score``, the
default): when a ranking has K = 2 responses, one of them the prompt's anchor
(``responses.is_anchor``) and the other with a score ``s ∈ [0, 1]`` (a judge's probability that
it beats the anchor, e.g. AlpacaEval's ``preference − 1``), the vote is that probability,

    v = s for the non-anchor side,  1 − s for the anchor,

never dropped as a tie (s = 1/2 is the judge's indifference, not a tied rank); with
``anchor_labels: rank`` such a comparison votes from its ranks like any other.

Responses are compared by text: two responses of one prompt with the same text (``responses.text_hash``,
e.g. two policy samples that came out identical) are one response here, so a comparison between them is
dropped (``identical_texts_dropped``: a judge's preference between equal texts says nothing a reward model can
learn, and its score difference is 0 by construction) and their comparisons with a third response aggregate
into one pair, named by one of their ids (the same on every run). Tables without ``text_hash`` (older ones)
compare by id.

Every comparison of a K-way ranking counts as one vote (rank breaking: C(K, 2) votes per
ranking). Across the annotators of a prompt the votes on one unordered pair aggregate into a
single row with the soft label

    p = (Σ v) / n_votes = share of votes preferring a,

oriented so that p ≥ 1/2 (``response_a`` is the majority's choice). The margin is the
mean per-vote margin: ``score`` → |score_a − score_b| (rank gap where a score is
missing), ``rank_gap`` → |rank_a − rank_b| / (K − 1), ``none`` → 0; times
``margin_scale``.

Annotator weights (``pairs.annotator_weights: agreement``; default ``none``, every vote counts 1): a
noisier annotator counts less. Its weight comes from the agreement the validate stage measured
(``metrics.json``'s ``annotator_agreement``: ρ_a, the mean leave-one-out Spearman correlation of the
annotator's ranks with the other annotators' consensus):

    w_a = (max(ρ_a, 0) / ρ_max)²,   ρ_max = the largest ρ of the scored annotators,

and ``w_a = 1`` for an annotator without a score (no overlap: no evidence). Why the square: if annotator
a perceives ``u + e_a`` (noise sd σ_a, the utilities' spread τ), ρ_a ∝ corr(u + e_a, u) = τ/√(τ² + σ_a²),
and the Fisher information one probit vote carries about a utility difference is ∝ 1/(τ² + σ_a²)
relative to the same scale, i.e. ∝ ρ_a². The aggregated label becomes ``p = Σ w·v / Σ w`` (the plain
share where every vote on the pair weighs 0) and the utility fit counts ``Σ w`` votes on the pair, not
``n_votes`` (which stays the number of votes). Only the pairs stage (:func:`run_pairs`) weighs votes, since it
reads validate's agreement; :func:`build_pairs` on a batch of its own (the retrain flow's fresh labelled batch,
``rewardline evaluate`` on a raw source) counts every vote 1.

Targets (``pairs.targets: thurstone | bt``, default ``none``): per-response utilities fitted
per prompt to all of its comparisons (:mod:`rewardline.pairs.thurstone`), written to
``targets/part-NNN.parquet`` (one part per prompt bucket, like the splits); with ``none`` nothing is fitted
and the outputs are those of before.

Split: u = FNV-1a(salt + prompt_id) / 2^64 ∈ [0, 1); train if u < f_train, val if
u < f_train + f_val, else test. It depends on the prompt id alone, so a prompt keeps
its split when new batches arrive, and no prompt is in two splits.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from rewardline.config import Section
from rewardline.data import schema
from rewardline.data.buckets import PromptBuckets
from rewardline.data.hashing import unit_interval
from rewardline.data.keys import SEP, key_codes
from rewardline.data.tables import (
    TARGETS,
    copy_table,
    remove_table,
    stage_tables,
    table_path,
    table_rows,
    table_schema,
    write_json,
    write_part,
)
from rewardline.errors import ConfigError
from rewardline.gates import read_output_report
from rewardline.ops.atomic import writes_output
from rewardline.pairs.thurstone import fit_targets
from rewardline.paths import REPORT_FILE

LOG = logging.getLogger(__name__)


class PairsConfig(Section):
    section: ClassVar[str] = "pairs"

    ties: Literal["skip", "half"] = "skip"
    margin: Literal["none", "score", "rank_gap"] = "none"
    margin_scale: float = Field(1.0, ge=0.0)
    train_fraction: float = Field(0.8, gt=0.0, lt=1.0)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_salt: str = "rewardline-v1"
    targets: Literal["none", "thurstone", "bt"] = "none"
    target_prior_sd: float = Field(2.0, ge=1e-6, le=1e6)  # 1/sd² stays a finite, non-zero precision
    target_prior_centre: Literal["anchor", "prompt"] = "prompt"
    anchor_labels: Literal["score", "rank"] = "score"
    annotator_weights: Literal["none", "agreement"] = "none"

    @model_validator(mode="after")
    def _fractions_leave_a_test_share(self) -> PairsConfig:
        """test share = 1 − train_fraction − val_fraction ≥ 0."""
        if self.train_fraction + self.val_fraction > 1:
            raise ValueError(f"train_fraction {self.train_fraction} + val_fraction {self.val_fraction} > 1 "
                             "(expected train + val <= 1; test gets the rest)")
        return self

    def check(self) -> None:
        """Re-validate (the checks run on creation and assignment; ``model_copy(update=...)`` skips them)."""
        self.replace()  # raises ConfigError naming the key


def comparison_indices(group_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (i, j), i < j, of all within-group pairs of consecutive groups of ``group_sizes``.

    Loops over the distinct group sizes only (K is small), never over groups.
    """
    offsets = np.concatenate([[0], np.cumsum(group_sizes)[:-1]]).astype(np.int64)
    firsts, seconds = [], []
    for k in np.unique(group_sizes):
        if k < 2:
            continue
        i, j = np.triu_indices(int(k), 1)
        base = offsets[group_sizes == k][:, None]
        firsts.append((base + i).ravel())
        seconds.append((base + j).ravel())
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def anchor_response_ids(responses: pa.Table | None) -> pa.Array:
    """Ids of the responses flagged ``is_anchor`` (none when ``responses`` is None or has no such column)."""
    if responses is None or "is_anchor" not in responses.column_names:
        return pa.array([], pa.string())
    return responses.filter(pc.fill_null(responses["is_anchor"], False))["response_id"].combine_chunks()


def comparison_votes(table: pa.Table, sizes: np.ndarray, config: PairsConfig,
                     anchors: pa.Array, response: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows ``a``, ``b`` (a = smaller ``response`` code, :func:`response_text_codes`) of every comparison
    of the rankings in ``table`` (sorted by ranking, ``sizes`` per ranking), the vote ``v`` for ``a``, the
    margin, and the number of ties dropped (module docstring)."""
    first, second = comparison_indices(sizes)
    k_row = np.repeat(sizes, sizes).astype(np.float64)
    rank = table["rank"].to_numpy(zero_copy_only=False).astype(np.float64)
    score = table["score"].to_numpy(zero_copy_only=False).astype(np.float64)  # NaN where null
    swap = response[first] > response[second]
    a = np.where(swap, second, first)
    b = np.where(swap, first, second)
    vote = np.where(rank[a] < rank[b], 1.0, np.where(rank[a] > rank[b], 0.0, 0.5))
    soft = np.zeros(a.size, bool)
    if config.anchor_labels == "score" and len(anchors):
        is_anchor = np.asarray(pc.is_in(table["response_id"], value_set=anchors), bool)
        other_score = np.where(is_anchor[a], score[b], score[a])  # the non-anchor side's score
        soft = (k_row[a] == 2) & (is_anchor[a] ^ is_anchor[b]) & (other_score >= 0.0) & (other_score <= 1.0)
        vote = np.where(soft, np.where(is_anchor[a], 1.0 - other_score, other_score), vote)
    keep = soft | (vote != 0.5) if config.ties == "skip" else np.ones(a.size, bool)
    a, b, vote = a[keep], b[keep], vote[keep]
    rank_gap = np.abs(rank[a] - rank[b]) / np.maximum(k_row[a] - 1, 1)
    if config.margin == "none":
        margin = np.zeros(a.size)
    elif config.margin == "rank_gap":
        margin = rank_gap
    else:
        gap = np.abs(score[a] - score[b])
        margin = np.where(np.isnan(gap), rank_gap, gap)
    return a, b, vote, margin * config.margin_scale, int((~keep).sum())


def build_pairs(rankings: pa.Table, prompts: pa.Table, config: PairsConfig,
                responses: pa.Table | None = None) -> tuple[pa.Table, dict]:
    """Expand and aggregate the comparisons of ``rankings``; returns the PAIRS table and counts.

    ``responses`` (optional, ``response_id`` and ``is_anchor``) marks the anchors of soft anchor judgements."""
    pairs, counts, _ = aggregate_pairs(rankings, prompts, config, responses)
    return pairs, counts


def annotator_vote_weights(agreement: dict[str, float | None]) -> dict[str, float]:
    """``w_a = (max(ρ_a, 0) / ρ_max)²``, 1 without a score (module docstring); all 1 when no ρ is positive."""
    scored = {a: r for a, r in agreement.items() if r is not None}
    top = max(scored.values(), default=0.0)
    if top <= 0:
        return dict.fromkeys(agreement, 1.0)
    return {a: 1.0 if r is None else (max(r, 0.0) / top) ** 2 for a, r in agreement.items()}


def read_annotator_weights(in_dir: Path) -> dict[str, float]:
    """The vote weights of the annotators validated in ``in_dir`` (its ``metrics.json``'s agreement)."""
    path = in_dir / "metrics.json"
    try:
        agreement = json.loads(path.read_text())["annotator_agreement"]
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"pairs.annotator_weights=agreement: expected the validate stage's {path} with an "
                          f"'annotator_agreement' object ({type(exc).__name__}: {exc})") from exc
    return annotator_vote_weights(agreement)


def _row_weights(table: pa.Table, annotator_weight: dict[str, float] | None) -> np.ndarray:
    """Each ranking row's annotator weight (1 for an annotator not in ``annotator_weight``)."""
    if annotator_weight is None:
        return np.ones(table.num_rows)
    codes = pc.dictionary_encode(table["annotator_id"].combine_chunks())
    names = codes.dictionary.to_pylist()
    weight_of = np.array([annotator_weight.get(name, 1.0) for name in names] + [1.0])  # last: a null annotator
    index = pc.fill_null(codes.indices, len(names)).to_numpy(zero_copy_only=False)
    return weight_of[index]


def aggregate_pairs(rankings: pa.Table, prompts: pa.Table, config: PairsConfig, responses: pa.Table | None = None,
                    annotator_weight: dict[str, float] | None = None) -> tuple[pa.Table, dict, np.ndarray]:
    """:func:`build_pairs`, with each vote weighted by its annotator's weight (``annotator_weight``, module
    docstring; None: every vote 1), and the pairs' vote weights ``Σ w`` (the utility fit's vote counts)."""
    config.check()
    ranking = key_codes(rankings["ranking_id"])
    order = np.argsort(ranking, kind="stable")
    ranking = ranking[order]
    table = rankings.take(pa.array(order))
    sizes = np.bincount(ranking)
    sizes = sizes[sizes > 0]
    response = response_text_codes(table, responses)
    a, b, vote, margin, ties_dropped = comparison_votes(table, sizes, config, anchor_response_ids(responses),
                                                        response)
    n_comparisons = int((sizes * (sizes - 1) // 2).sum())  # C(K, 2) per ranking
    distinct = response[a] != response[b]  # a comparison of one text with itself: dropped (module docstring)
    a, b, vote, margin = a[distinct], b[distinct], vote[distinct], margin[distinct]

    # Aggregate over annotators: one row per unordered (a, b) pair of texts (responses belong to one prompt).
    n_responses = int(response.max()) + 1 if response.size else 0
    key = response[a] * n_responses + response[b]
    uniq, first_index, inverse = np.unique(key, return_index=True, return_inverse=True)
    n_votes = np.bincount(inverse, minlength=uniq.size)
    weight = _row_weights(table, annotator_weight)[a]
    weighed = np.bincount(inverse, weights=weight, minlength=uniq.size) > 0
    weight = np.where(weighed[inverse], weight, 1.0)  # a pair whose every vote weighs 0: the plain share
    vote_weight = np.bincount(inverse, weights=weight, minlength=uniq.size)  # > 0: every pair has a vote
    margin_mean = np.bincount(inverse, weights=weight * margin, minlength=uniq.size) / vote_weight
    p = np.bincount(inverse, weights=weight * vote, minlength=uniq.size) / vote_weight

    rows_a, rows_b = a[first_index], b[first_index]
    flip = p < 0.5
    rows_a, rows_b = np.where(flip, rows_b, rows_a), np.where(flip, rows_a, rows_b)
    p = np.where(flip, 1.0 - p, p)

    prompt_ids = table["prompt_id"].take(pa.array(rows_a))
    u = unit_interval(prompt_ids, salt=config.split_salt)
    split = np.where(
        u < config.train_fraction, "train",
        np.where(u < config.train_fraction + config.val_fraction, "val", "test"),
    )
    category = _lookup_category(prompt_ids, prompts)
    pairs = pa.table(
        {
            "prompt_id": prompt_ids,
            "response_a_id": table["response_id"].take(pa.array(rows_a)),
            "response_b_id": table["response_id"].take(pa.array(rows_b)),
            "label": pa.array(p, pa.float32()),
            "n_votes": pa.array(n_votes, pa.int32()),
            "margin": pa.array(margin_mean, pa.float32()),
            "category": category,
            "split": pa.array(split, pa.string()),
        },
        schema=schema.PAIRS,
    )
    counts = {"comparisons": n_comparisons, "ties_dropped": ties_dropped,
              "identical_texts_dropped": int((~distinct).sum())}
    return pairs, counts, vote_weight


def response_text_codes(table: pa.Table, responses: pa.Table | None) -> np.ndarray:
    """A code per ranking row of ``table``, equal for the rows of two responses of one prompt with the same text
    (``responses.text_hash``); without that column, or where it is null, the response id's own code."""
    if responses is None or "text_hash" not in responses.column_names:
        return key_codes(table["response_id"])
    index = pc.index_in(table["response_id"], value_set=responses["response_id"].combine_chunks())
    text_hash = responses["text_hash"].combine_chunks().take(index)
    key = pc.if_else(pc.is_null(text_hash), pc.binary_join_element_wise("\x00id", table["response_id"], SEP),
                     pc.binary_join_element_wise(table["prompt_id"], text_hash.cast(pa.string()), SEP))
    return key_codes(key)


def _lookup_category(prompt_ids: pa.ChunkedArray | pa.Array, prompts: pa.Table) -> pa.Array:
    index = pc.index_in(prompt_ids, value_set=prompts["prompt_id"].combine_chunks())
    return prompts["category"].combine_chunks().take(index)


def pairs_metrics(pairs: pa.Table, counts: dict) -> dict:
    """Pairs and prompts per split, and the label distribution."""
    label = pairs["label"].to_numpy(zero_copy_only=False)
    metrics: dict = {**counts, "pairs": pairs.num_rows}
    for split in schema.SPLITS:
        mask = pc.equal(pairs["split"], split)
        metrics[f"pairs_{split}"] = int(pc.sum(mask).as_py() or 0)
        metrics[f"prompts_{split}"] = len(pairs.filter(mask)["prompt_id"].unique())
    metrics["label_distribution"] = {
        "unanimous (p=1)": int((label == 1.0).sum()),
        "majority (0.5<p<1)": int(((label > 0.5) & (label < 1.0)).sum()),
        "tied (p=0.5)": int((label == 0.5).sum()),
    }
    metrics["label_mean"] = round(float(label.mean()), 6) if label.size else None
    votes = pairs["n_votes"].to_numpy(zero_copy_only=False)
    metrics["votes_mean"] = round(float(votes.mean()), 6) if votes.size else None
    return metrics


def _warn_if_not_validated(in_dir: Path) -> None:
    """Pairs are built from a validate output. An ingest output works too (its tables are the same), but without
    validate's annotator exclusions and gates, and a validate output may hold a failed gate: say so, and go on."""
    report = read_output_report(in_dir)
    if report is not None and report.stage == "ingest":
        LOG.warning("%s is an ingest output, not validated: validate's annotator exclusions and gates were not "
                    "applied to these pairs (`rewardline validate %s --out DIR`, then pairs on DIR)", in_dir, in_dir)
    elif report is not None and not report.passed:
        failed = ", ".join(gate.name for gate in report.failed)
        LOG.warning("%s: its %s gate failed (%s; %s/%s): the pairs are built from data that did not pass",
                    in_dir, report.stage, failed, in_dir, REPORT_FILE)


@writes_output("out_dir", inputs=lambda args: [args["in_dir"]])  # locked; written to a staging folder, published whole
def run_pairs(in_dir: Path, out_dir: Path, config: PairsConfig, shards: int | None = None) -> dict:
    """Read a validated dataset directory, write the splits ``{train,val,test}/part-NNN.parquet`` + tables + metrics.

    Past ``buckets.ROWS_PER_BUCKET`` ranking rows (or with ``shards``: forced buckets, for tests) the pairs
    are built one prompt bucket at a time (:func:`_bucketed_pairs`), and each split gets one part per bucket."""
    files = stage_tables(in_dir, schema.RANKING_TABLES)
    _warn_if_not_validated(in_dir)
    columns = {"prompts": ["prompt_id", "category"], "responses": ["prompt_id", *anchor_columns(in_dir)]}
    n_rankings = table_rows(files["rankings"])
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_table(out_dir, TARGETS)  # a stale fit of an earlier run
    weights = read_annotator_weights(in_dir) if config.annotator_weights == "agreement" else None
    with PromptBuckets(files, columns, n_rankings, shards=shards) as buckets:
        if buckets.single:
            tables = next(iter(buckets))
            pairs, counts, vote_weight = aggregate_pairs(tables["rankings"], tables["prompts"], config,
                                                         tables["responses"], weights)
            for split in schema.SPLITS:
                write_part(pairs.filter(pc.equal(pairs["split"], split)), out_dir, split)
            metrics = pairs_metrics(pairs, counts)
            if config.targets != "none":
                targets, metrics["targets"] = fit_pair_targets(pairs, tables["responses"], vote_weight, config)
                write_part(targets, out_dir, TARGETS)
            del tables
        else:
            metrics = _bucketed_pairs(buckets, out_dir, config, weights)
    if weights is not None:
        metrics["annotator_weights"] = weights
    for name in ("prompts", "responses"):
        copy_table(in_dir, out_dir, name)
    write_json(metrics, out_dir / "metrics.json")
    return metrics


def _bucketed_pairs(buckets: PromptBuckets, out_dir: Path, config: PairsConfig,
                    weights: dict[str, float] | None) -> dict:
    """:func:`build_pairs` (and the utility fit) per prompt bucket: bucket ``i``'s pairs of each split are the
    split's part ``i``, and its targets are part ``i`` of ``targets/``; the metrics of :func:`pairs_metrics` from
    sums over the buckets (a prompt's comparisons, pairs, split and utilities are all in its bucket).
    ``label_mean`` / ``votes_mean`` are float64 sums over the count (the one-bucket path averages the float32
    labels: equal to 6 decimals);
    the targets' ``iterations`` and ``max_gradient`` are the largest over the buckets' fits (each bucket is
    fitted to the same tolerance), ``se_median`` the median over all responses."""
    total: dict = {"comparisons": 0, "ties_dropped": 0, "identical_texts_dropped": 0, "pairs": 0}
    labels = {"unanimous (p=1)": 0, "majority (0.5<p<1)": 0, "tied (p=0.5)": 0}
    label_sum = votes_sum = 0.0
    fits: list[dict] = []
    standard_errors: list[np.ndarray] = []

    for index, tables in enumerate(buckets):
        pairs, counts, vote_weight = aggregate_pairs(tables["rankings"], tables["prompts"], config,
                                                     tables["responses"], weights)
        part = pairs_metrics(pairs, counts)
        for split in schema.SPLITS:
            write_part(pairs.filter(pc.equal(pairs["split"], split)), out_dir, split, part=index)
            for key in (f"pairs_{split}", f"prompts_{split}"):
                total[key] = total.get(key, 0) + part[key]
        for key in ("comparisons", "ties_dropped", "identical_texts_dropped", "pairs"):
            total[key] += part[key]
        for key in labels:
            labels[key] += part["label_distribution"][key]
        label_sum += float(np.sum(pairs["label"].to_numpy(zero_copy_only=False), dtype=np.float64))
        votes_sum += float(np.sum(pairs["n_votes"].to_numpy(zero_copy_only=False), dtype=np.float64))
        if config.targets != "none":
            targets, stats = fit_pair_targets(pairs, tables["responses"], vote_weight, config)
            write_part(targets, out_dir, TARGETS, part=index)
            fits.append(stats)
            standard_errors.append(targets["se"].to_numpy())
        del tables, pairs
    n = total["pairs"]
    metrics = {**total, "label_distribution": labels, "label_mean": round(label_sum / n, 6) if n else None,
               "votes_mean": round(votes_sum / n, 6) if n else None}
    if fits:
        se = np.concatenate(standard_errors)
        metrics["targets"] = {**fits[0], "responses": sum(f["responses"] for f in fits),
                              "iterations": max(f["iterations"] for f in fits),
                              "max_gradient": max(f["max_gradient"] for f in fits),
                              "anchored_prompts": sum(f["anchored_prompts"] for f in fits),
                              "se_median": float(np.median(se)) if se.size else None}
    return metrics


def anchor_columns(in_dir: Path) -> list[str]:
    """``response_id`` and, when the table has them, ``is_anchor`` and ``text_hash``: the responses' ids, not their
    texts."""
    names = table_schema(table_path(in_dir, "responses")).names
    return ["response_id", *(name for name in ("is_anchor", "text_hash") if name in names)]


def fit_pair_targets(pairs: pa.Table, responses: pa.Table, vote_weight: np.ndarray,
                     config: PairsConfig) -> tuple[pa.Table, dict]:
    """The per-response utilities of ``pairs`` (anchors from ``responses.is_anchor`` when present; ``Σ w`` votes
    per pair) and the fit statistics (no timings: the metrics stay byte-identical on a rerun)."""
    return fit_targets(pairs, responses, config.targets, config.target_prior_sd, config.target_prior_centre,
                       votes=vote_weight)


def write_pairs_rows(out_dir: Path, prompts: list[dict], responses: list[dict], pairs: list[dict]) -> Path:
    """A pairs directory in :func:`run_pairs`'s layout (``prompts``, ``responses``, one table per split) from
    plain rows, each conformed to its schema: synthetic preference data for tests and benchmarks."""
    write_part(schema.conform(pa.Table.from_pylist(prompts), schema.PROMPTS), out_dir, "prompts")
    write_part(schema.conform(pa.Table.from_pylist(responses), schema.RESPONSES), out_dir, "responses")
    table = schema.conform(pa.Table.from_pylist(pairs), schema.PAIRS)
    for split in schema.SPLITS:
        write_part(table.filter(pc.equal(table["split"], split)), out_dir, split)
    return out_dir
