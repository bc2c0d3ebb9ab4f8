"""Stage 1, ingest: annotator rankings from local files or ``s3://`` → canonical tables.

Output directory::

    prompts/part-NNN.parquet  responses/part-NNN.parquet  rankings/part-NNN.parquet
    solutions.parquet  quarantine.parquet  metrics.json  gates.json  report.md

The ranking tables are partitioned by prompt bucket (one part below a million ranked rows; part ``i`` of the
three tables holds the same prompts: :mod:`rewardline.data.tables`).

``solutions.parquet`` is the step-level table (:mod:`rewardline.data.steps`) from the step formats
(prm800k, math-shepherd, gsm8k, solutions); empty for ranking-only sources, as the ranking tables are
for step-only ones. ``metrics.json`` holds ``rows_in == rows_ok + rows_quarantined`` (rows = input
records, of both kinds; ``solutions_ok`` counts solution rows)
and the quarantined share ``rows_quarantined / rows_in``; the gate (:data:`INGEST_GATES`)
fails when that share exceeds ``max_quarantine_share``. ``gates.json`` and ``report.md``
(the gate, the quarantine reasons and the first quarantined records) are the gate report.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from rewardline.config import Section
from rewardline.data import adapters, limits, schema
from rewardline.data.buckets import RowSink
from rewardline.data.canonical import canonicalize, filled_prompt_ids
from rewardline.data.reasons import reason_counts
from rewardline.data.steps import SOLUTIONS_FILE, StepOptions, canonicalize_solutions, empty_rows
from rewardline.data.tables import write_json, write_part, write_table
from rewardline.errors import ConfigError, PermissionDenied, closest_sibling
from rewardline.gates import GateReport, GateSpec, evaluate_gates
from rewardline.ops import storage
from rewardline.ops.atomic import writes_output
from rewardline.paths import GATES_FILE, METRICS_FILE, REPORT_FILE
from rewardline.report import md_cell

log = logging.getLogger(__name__)
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".jsonl.gz", ".json.gz", ".csv.gz")


class Source(Section):
    """One entry of ``ingest.sources``: a file, directory or ``s3://bucket/prefix`` and its format."""

    section: ClassVar[str] = "ingest.sources"

    path: str = Field(min_length=1)
    # auto | adapters.FORMATS
    format: Literal["auto", "rankings", "hh-rlhf", "alpaca-eval", "pairwise", "trl", "rewardbench",
                    "prm800k", "math-shepherd", "gsm8k", "solutions"] = "auto"
    batch_id: str | None = None
    optional: bool = False  # a local directory that may be absent or hold no data files yet (data/raw/fresh)
    # format solutions only: unknown (every step label null) | outcome (steps labelled from the outcome, for
    # PRM training: a correct solution's steps 1, an incorrect one's last step -1, its earlier steps null)
    step_labels: Literal["unknown", "outcome"] = "unknown"


class IngestConfig(Section):
    section: ClassVar[str] = "ingest"

    sources: list[Source] = Field(min_length=1)
    max_quarantine_share: float = Field(0.05, ge=0.0, le=1.0)
    quarantine_examples: int = Field(10, ge=0)
    gsm8k_negatives: int = Field(1, ge=0, le=16)  # synthetic step-level negatives per GSM8K reference solution
    # how a negative's step goes wrong: a miscomputed result, or a wrong operator recomputed (adapters/gsm8k)
    gsm8k_negative_kind: Literal["result", "operation"] = "operation"
    seed: int = Field(0, ge=0)  # seeds the GSM8K negatives (with each question's text)
    # size bounds (rewardline.data.limits): a record over one is quarantined, naming the field and the bound
    max_record_bytes: int = Field(limits.MAX_RECORD_BYTES, ge=1)  # one raw record, checked before parsing
    max_prompt_chars: int = Field(limits.MAX_PROMPT_CHARS, ge=1)
    max_response_chars: int = Field(limits.MAX_RESPONSE_CHARS, ge=1)


INGEST_GATES: tuple[GateSpec, ...] = (
    GateSpec("max_quarantine_share", "quarantined_share", "max_quarantine_share", "<=",
             "share of input records quarantined"),
)


def check_source_paths(config: IngestConfig, where: str = "params.yaml") -> None:
    """Each local source that must be there exists; else a :class:`ConfigError` (exit 2) naming ``where``,
    ``ingest.sources[i].path`` and the closest name in its folder (listing it failed naming neither). An
    ``optional`` source may be absent. An ``s3://`` one gets one ``HeadBucket`` (:func:`_check_bucket`; the key or
    prefix is checked when it is listed), other remote ones none; a local one no request."""
    for i, source in enumerate(config.sources):
        path = Path(source.path.removeprefix("file://"))
        if storage.is_remote(source.path):
            _check_bucket(source.path, f"{where}: ingest.sources[{i}].path")
            continue
        if source.optional or path.exists() or path.is_symlink():
            continue  # a broken symlink: listing it says where it points
        close = closest_sibling(path)
        hint = f"did you mean {str(close)!r}? " if close else ""
        raise ConfigError(f"{where}: ingest.sources[{i}].path: {source.path!r}: no such file or directory; {hint}"
                          "expected a file, a directory or s3://bucket/prefix (optional: true for one that may be "
                          "absent)")


def _check_bucket(uri: str, key: str) -> None:
    """:func:`rewardline.ops.storage.check_bucket` with ``key`` (``params.yaml: ingest.sources[i].path``) in front of
    its message, the exit code kept: a missing bucket is a :class:`ConfigError` (2), a refused caller
    :class:`PermissionDenied` (2), an outage a :class:`~rewardline.ops.storage.StorageError` (3, retried)."""
    try:
        storage.check_bucket(uri)
    except storage.StorageNotFound as err:
        raise ConfigError(f"{key}: {uri!r}: {err}") from err
    except PermissionDenied as err:
        raise PermissionDenied(key, detail=str(err)) from err
    except storage.StorageError as err:
        raise storage.StorageError(f"{key}: {err}") from err


def _expand(sources: list[Source], ignored: list[str]) -> list[tuple[str, Source]]:
    """The data files of every source, each once: a file named twice (or by a directory and on its own) is read
    once, by the first source naming it (its records are one file's: accounting counts them once). Files of a
    source whose names end in none of :data:`DATA_SUFFIXES` (``batch.tsv``) are not read: each is named in a
    warning and appended to ``ignored`` (hidden files, ``.gitkeep``, are not data and pass unnamed)."""
    files: list[tuple[str, Source]] = []
    seen: set[str] = set()
    for source in sources:
        if source.format != "auto" and source.format not in adapters.FORMATS:
            raise ValueError(
                f"ingest source {source.path!r}: unknown format {source.format!r}; "
                f"expected one of auto, {', '.join(adapters.FORMATS)}"
            )
        if source.optional and not storage.is_remote(source.path) and not Path(source.path).exists():
            continue
        every = storage.list_files(source.path)
        found = [uri for uri in every if uri.endswith(DATA_SUFFIXES)]
        for uri in every:
            if not uri.endswith(DATA_SUFFIXES) and not uri.rsplit("/", 1)[-1].startswith(".") and uri not in seen:
                log.warning("ingest: ignoring %s: not a data file (expected a name ending in %s)", uri,
                            ", ".join(DATA_SUFFIXES))
                seen.add(uri)
                ignored.append(uri)
        if not found and source.optional:
            continue
        if not found:
            raise FileNotFoundError(
                f"ingest source {source.path!r} holds no data files (looked for {', '.join(DATA_SUFFIXES)})"
            )
        for uri in found:
            key = uri if storage.is_remote(uri) else str(Path(uri.removeprefix("file://")).resolve())
            if key in seen:
                log.warning("ingest: %s is named by more than one source; read once", uri)
                continue
            seen.add(key)
            files.append((uri, source))
    return files


@dataclass
class SourcesRead:
    """What :func:`_read_sources` took from the sources besides the ranked rows (those went into the sink)."""

    records_in: int = 0
    formats: Counter[str] = field(default_factory=Counter)  # records read per format
    solution_parts: list[pa.Table] = field(default_factory=list)
    quarantine_parts: list[pa.Table] = field(default_factory=list)  # the adapters' record faults
    empty_files: list[str] = field(default_factory=list)  # skipped, each named in a warning
    ignored_files: list[str] = field(default_factory=list)  # not of a data file type, each named in a warning


def _read_sources(config: IngestConfig, sink: RowSink, bounds: limits.Limits) -> SourcesRead:
    """Read every file of every source through its adapter: ranked rows into ``sink``, the rest returned. An empty
    file is skipped unless named on its own; sources whose files are all empty are a ValueError (exit 2)."""
    read = SourcesRead()
    step_options = StepOptions(gsm8k_negatives=config.gsm8k_negatives,
                               gsm8k_negative_kind=config.gsm8k_negative_kind, seed=config.seed)
    for uri, source in _expand(config.sources, read.ignored_files):
        data = adapters.local_parquet(uri) or storage.read_bytes(uri)  # a local Parquet file: read by row group
        if adapters.is_empty(uri, data):  # no records: skipped (noted in metrics) unless named on its own
            if uri in (source.path, str(Path(source.path))):
                raise ValueError(f"{uri}: the file is empty (no records); expected records of format {source.format}")
            log.warning("ingest: skipping empty file %s (no records)", uri)
            read.empty_files.append(uri)
            continue
        fmt = adapters.detect_format(uri, data) if source.format == "auto" else source.format
        if source.step_labels != "unknown" and fmt != "solutions":
            raise ValueError(f"{uri}: step_labels: {source.step_labels} applies to format solutions only, not {fmt}")
        options = replace(step_options, step_labels=source.step_labels)
        for result in adapters.read_file_batches(data, uri, fmt=fmt, batch_id=source.batch_id,
                                                 step_options=options, limits=bounds):
            read.formats[fmt] += result.records_in
            read.records_in += result.records_in
            read.solution_parts.append(result.solutions)
            read.quarantine_parts.append(schema.conform(result.quarantine, schema.QUARANTINE))
            sink.add(schema.conform(result.ranked, schema.RANKED_RESPONSES))
            del result  # not held while the next batch is read
        del data  # parsed: the raw bytes are not held through the content checks
    if read.records_in == 0 and read.empty_files:  # as an empty folder or an empty file named on its own
        raise ValueError(f"the sources hold no records: every data file is empty ({len(read.empty_files)}, e.g. "
                         f"{read.empty_files[0]}); expected records of format {config.sources[0].format}")
    return read


# locked; written to a staging folder, published whole; an --out holding a source is refused
@writes_output("out_dir", inputs=lambda args: [source.path for source in args["config"].sources])
def run_ingest(config: IngestConfig, out_dir: Path, shards: int | None = None) -> dict:
    """Read every source, validate, write the canonical tables, ``metrics.json`` and the gate report.

    Returns the metrics (with ``gates_passed``); a failed gate does not raise here:
    the caller checks (:func:`rewardline.gates.check`). Out of core past ``buckets.ROWS_PER_BUCKET`` ranked
    rows (:func:`_canonical_tables`); ``shards`` forces that mode with that many one-shard buckets (tests).
    """
    sink = RowSink(schema.RANKED_RESPONSES, filled_prompt_ids, shards=shards)
    bounds = limits.Limits.of(config)
    read = _read_sources(config, sink, bounds)
    records_in, formats, empty_files = read.records_in, read.formats, read.empty_files

    out_dir.mkdir(parents=True, exist_ok=True)
    tables = _canonical_tables(sink, bounds, out_dir)
    steps = canonicalize_solutions(pa.concat_tables(read.solution_parts) if read.solution_parts else empty_rows())
    quarantine = pa.concat_tables([*read.quarantine_parts, tables.quarantine, steps.quarantine])
    rows_quarantined = quarantine.num_rows
    rows_ok = tables.records_ok + steps.records_ok
    if rows_ok + rows_quarantined != records_in:
        raise AssertionError(
            f"ingest accounting broke: rows_in={records_in} but rows_ok={rows_ok} + "
            f"rows_quarantined={rows_quarantined}"
        )

    write_table(steps.solutions, out_dir / SOLUTIONS_FILE)
    write_table(quarantine, out_dir / schema.QUARANTINE_FILE)

    share = rows_quarantined / records_in if records_in else 0.0
    metrics = {
        "rows_in": records_in,
        "rows_ok": rows_ok,
        "rows_quarantined": rows_quarantined,
        "quarantined_share": round(share, 6),
        "max_quarantine_share": config.max_quarantine_share,
        "rows_in_by_format": dict(formats),
        "quarantine_reasons": reason_counts(quarantine["reason"]),  # <= 50 categories; detail in quarantine
        "empty_files": len(empty_files),  # skipped, each named in a warning on stderr
        "ignored_files": len(read.ignored_files),  # not of a data file type, each named in a warning on stderr
        "prompts": tables.prompts,
        "responses": tables.responses,
        "rankings": tables.rankings,
        "ranked_rows": tables.ranked_rows,
        "annotators": len(tables.annotators),
        "solutions_ok": steps.solutions.num_rows,
        "solutions_synthetic": int(pc.sum(steps.solutions["synthetic"]).as_py() or 0),
        "solution_problems": pc.count_distinct(steps.solutions["prompt_id"]).as_py(),
        "labelled_steps": pc.count(pc.list_flatten(steps.solutions["step_labels"])).as_py(),  # non-null labels
    }
    report = evaluate_gates(INGEST_GATES, metrics, config, stage="ingest")
    metrics.update(report.metrics_entries())
    write_json(metrics, out_dir / METRICS_FILE)
    report.write_json(out_dir / GATES_FILE)
    examples = quarantine.slice(0, config.quarantine_examples).to_pylist()
    (out_dir / REPORT_FILE).write_text(_markdown(metrics, report, examples))
    return metrics


@dataclass
class CanonicalCounts:
    """What the ranking tables written by :func:`_canonical_tables` hold (sums over the buckets)."""

    quarantine: pa.Table  # the content faults, bucket after bucket
    records_ok: int = 0
    prompts: int = 0
    responses: int = 0
    rankings: int = 0
    ranked_rows: int = 0
    annotators: set = field(default_factory=set)


def _canonical_tables(sink: RowSink, bounds: limits.Limits, out_dir: Path) -> CanonicalCounts:
    """Canonicalise the ranked rows bucket by bucket (:mod:`rewardline.data.buckets`) and write the prompts,
    responses and rankings tables; returns their counts.

    One bucket (the data fit in ``ROWS_PER_BUCKET`` rows): :func:`canonicalize` on all rows, as always. Several:
    every check of :func:`canonicalize` is per prompt id (a duplicate or conflicting row has its prompt's id,
    and a record's rows share one prompt), so each bucket is canonicalised on its own and written as part ``i``
    of each table; the counts add up, a record is accounted in its one bucket
    (``run_ingest`` asserts the total), and the annotators are the union over buckets."""
    counts = CanonicalCounts(schema.empty(schema.QUARANTINE))
    quarantine_parts: list[pa.Table] = []
    try:
        for index, ranked in enumerate(sink.buckets()):
            tables = canonicalize(ranked, bounds)
            del ranked
            for name in schema.RANKING_TABLES:
                write_part(getattr(tables, name), out_dir, name, part=index)
            quarantine_parts.append(tables.quarantine)
            counts.records_ok += tables.records_ok
            counts.prompts += tables.prompts.num_rows
            counts.responses += tables.responses.num_rows
            counts.rankings += pc.count_distinct(tables.rankings["ranking_id"]).as_py()
            counts.ranked_rows += tables.rankings.num_rows
            counts.annotators.update(tables.rankings["annotator_id"].unique().to_pylist())
    finally:
        sink.close()
    counts.quarantine = pa.concat_tables([counts.quarantine, *quarantine_parts])
    return counts


def _markdown(metrics: dict, report: GateReport, examples: list[dict]) -> str:
    """``report.md``: the gate, the record accounting, the quarantine reasons and the first quarantined records."""
    lines = [
        report.to_markdown("Ingest report"),
        "| records | count |",
        "| --- | --- |",
        f"| in | {metrics['rows_in']} |",
        f"| ok | {metrics['rows_ok']} |",
        f"| quarantined | {metrics['rows_quarantined']} |",
    ]
    if metrics["solutions_ok"]:
        lines += ["", "| step-level data | count |", "| --- | --- |",
                  f"| solutions | {metrics['solutions_ok']} |",
                  f"| of them synthetic | {metrics['solutions_synthetic']} |",
                  f"| problems | {metrics['solution_problems']} |",
                  f"| labelled steps | {metrics['labelled_steps']} |"]
    if metrics["quarantine_reasons"]:
        lines += ["", "## Quarantine reasons", "", "| reason | records |", "| --- | --- |"]
        lines += [f"| {md_cell(reason)} | {count} |" for reason, count in metrics["quarantine_reasons"].items()]
    if examples:
        table = schema.QUARANTINE_FILE  # relative to report.md: no machine-specific path in the output
        lines += ["", f"## First quarantined records (all of them: [{table}]({table}))", ""]
        lines += [f"* `{e['origin_file']}:{e['origin_line']}` [{e['field']}] {e['reason']}" for e in examples]
    return "\n".join(lines) + "\n"
