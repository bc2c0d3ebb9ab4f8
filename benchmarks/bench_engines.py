"""Benchmark: the pairs step in three engines, rewardline's pyarrow buckets vs DuckDB vs Polars' streaming engine.

The step: validated rankings (``rankings.parquet``, one row per (ranking, response) with its rank) -> every
ranking broken into its C(K, 2) pairwise comparisons (tied ranks dropped: ``pairs.ties: skip``) -> the votes on
each (prompt, response a, response b) aggregated across annotators into ``n_votes`` and the vote share ``label``
(oriented so that label >= 1/2) -> the prompt's category joined -> each pair's split from a hash of
``salt + prompt_id`` (train < 0.8 <= val < 0.9 <= test) -> Parquet, one file (or partition) per split.

    python benchmarks/bench_engines.py --rankings 1000000 --workdir /tmp/rl-engines --out results.json

Preparation (untimed, a child process): the source of ``bench_data_stages.py`` (``synthetic_rankings_table``:
K = 4, ~200-character responses, 20 % of prompts ranked by 3 annotators of 50) is generated once and run through
the project's ingest and validate; the validated directory is the input of all three engines. Then each engine
runs the step in a fresh child process, one after another, timed (``wall_s``: the step alone, imports done) with
the child's own peak RSS (``VmHWM``, as ``bench_data_stages.peak_rss_gib``) and the load average at its start:

* ``rewardline``: the pipeline's own stage function, ``rewardline.pairs.expand.run_pairs`` with ``params.yaml``'s
  ``pairs`` section (built as ``stages/pairs.py`` does). Past 1M ranking rows it runs out of core (prompt buckets
  spilled to Parquet, ``rewardline/data/buckets.py``); it also copies ``prompts`` / ``responses`` into its output
  directory and writes ``metrics.json`` (``copy_s`` times that copy separately, after the peak is read);
* ``duckdb``: one ``COPY (SELECT ...) TO`` over ``read_parquet`` (self-join of the rankings within a ranking,
  ``GROUP BY`` the pair, split by DuckDB's ``hash``), ``PARTITION_BY (split)``, with ``threads`` and
  ``memory_limit`` set (``--duckdb-memory-limit``) and ``preserve_insertion_order = false``; DuckDB's JSON
  profiler reports its peak buffer memory and bytes spilled (``duckdb_system``);
* ``polars``: the same as a ``LazyFrame`` from ``scan_parquet``, ``sink_parquet(pl.PartitionBy(...))`` on the
  streaming engine, ``POLARS_MAX_THREADS`` set; the physical plan's node kinds and the number marked as an
  in-memory engine fallback are recorded (``streaming_nodes``, ``in_memory_fallback_nodes``).

The validated rankings are already flat (ingest flattens the nested source), so there is nothing to UNNEST.
DuckDB and Polars implement the step as configured here only: no soft anchor votes (``anchor_labels: score``;
the synthetic data has no anchors) and ``margin: none`` (0). Their split hash is the engine's own, not
``rewardline.data.hashing.hash64``, so their splits hold other prompts in about the same shares.

``--repeat R`` runs R rounds (each engine once per round, in ``--engines`` order). A final child (untimed) checks
the last round's outputs with DuckDB: pairs, total votes, label sum, per-split pairs and prompts, prompts in more
than one split, and the pairs as a multiset of (prompt, response a, response b, label, n_votes, margin, category):
a fingerprint (the sum of the rows' hashes) and, with ``--check full`` (the default), ``EXCEPT ALL`` both ways
against rewardline's rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rewardline.pairs.expand import PairsConfig

sys.path.insert(0, str(Path(__file__).parent))
from bench_data_stages import generate, peak_rss_gib  # noqa: E402  (sibling benchmark script)

ENGINES = ("rewardline", "duckdb", "polars")
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
SALT_NOTE = "rewardline: hash64(salt + prompt_id) (top 53 bits); duckdb: hash(salt || prompt_id); polars: Expr.hash"


def gib() -> float:
    return round(peak_rss_gib(), 3)


def pairs_config() -> PairsConfig:
    """The pipeline's pairs settings: ``params.yaml``'s ``pairs`` section, built as ``stages/pairs.py`` does."""
    from rewardline.config import build, load_params
    from rewardline.pairs.expand import PairsConfig

    return build(PairsConfig, load_params(PARAMS)["pairs"], name="pairs")


def pairs_settings() -> dict[str, Any]:
    """The settings the DuckDB and Polars queries implement (asserted: the ones they hard-code)."""
    config = pairs_config()
    assert config.ties == "skip" and config.margin == "none" and config.targets == "none", config
    return {"ties": config.ties, "margin": config.margin, "train_fraction": config.train_fraction,
            "val_fraction": config.val_fraction, "split_salt": config.split_salt}


# --- preparation -------------------------------------------------------------------------------------------


def prepare(n: int, workdir: Path) -> dict[str, Any]:
    """Generate the source and run the project's ingest + validate on it (the engines' input)."""
    from rewardline.data.ingest import IngestConfig, Source, run_ingest
    from rewardline.data.tables import table_path, table_rows
    from rewardline.validation.validate import ValidateConfig, run_validate

    source = workdir / "source" / "rankings.parquet"
    generation_s = generate(n, source)
    start = time.perf_counter()
    ingest = run_ingest(IngestConfig([Source(str(source), "rankings")]), workdir / "ingested")
    ingest_s = time.perf_counter() - start
    start = time.perf_counter()
    validate = run_validate(workdir / "ingested", workdir / "validated", ValidateConfig(min_alpha=0.0))
    validate_s = time.perf_counter() - start
    info = {"rankings": n, "generation_s": round(generation_s, 2), "ingest_s": round(ingest_s, 2),
            "validate_s": round(validate_s, 2), "rows_in": ingest["rows_in"], "rows_ok": ingest["rows_ok"],
            "rows_quarantined": ingest["rows_quarantined"], "krippendorff_alpha": validate["krippendorff_alpha"],
            "validated_rankings_rows": table_rows(table_path(workdir / "validated", "rankings")),
            "source_mb": round(source.stat().st_size / 1e6, 1)}
    shutil.rmtree(workdir / "ingested")
    (workdir / "prepared.json").write_text(json.dumps(info, indent=2))
    return info


# --- the three engines -------------------------------------------------------------------------------------


def parquet_glob(stage_dir: Path, name: str) -> str:
    """Table ``name`` of a stage directory as DuckDB's ``read_parquet`` and Polars' ``scan_parquet`` take it: the
    glob of its parts (``name/*.parquet``), or the one file of an older layout."""
    from rewardline.data.tables import table_path

    path = table_path(stage_dir, name)
    return str(path / "*.parquet") if path.is_dir() else str(path)


def run_rewardline(validated: Path, out: Path, **_: Any) -> dict[str, Any]:
    import pyarrow

    from rewardline.data.buckets import ROWS_PER_BUCKET
    from rewardline.data.tables import copy_table, table_path, table_rows
    from rewardline.pairs.expand import run_pairs

    rows = table_rows(table_path(validated, "rankings"))
    config = pairs_config()
    before = gib()
    start = time.perf_counter()
    metrics = run_pairs(validated, out, config)
    wall = time.perf_counter() - start
    peak = gib()
    start = time.perf_counter()  # the copy of prompts / responses run_pairs does, timed alone (page cache warm)
    scratch = out.parent / "rewardline-copy-check"
    scratch.mkdir(exist_ok=True)
    for name in ("prompts", "responses"):
        copy_table(validated, scratch, name)
    copy_s = time.perf_counter() - start
    shutil.rmtree(scratch)
    return {"wall_s": wall, "peak_rss_gib": peak, "rss_gib_before_step": before, "copy_s": round(copy_s, 3),
            "version": f"rewardline (pyarrow {pyarrow.__version__})",
            "settings": {"rows_per_bucket": ROWS_PER_BUCKET, "ranking_rows": rows,
                         "out_of_core": rows > ROWS_PER_BUCKET},
            "stage_metrics": {k: metrics[k] for k in ("comparisons", "ties_dropped", "pairs", "pairs_train",
                                                      "pairs_val", "pairs_test", "label_mean", "votes_mean")}}


DUCKDB_QUERY = """
COPY (
    WITH r AS (SELECT ranking_id, prompt_id, response_id, rank FROM read_parquet('{rankings}')),
    votes AS (  -- rank breaking: each unordered pair of a ranking, a = the smaller response id; tied ranks dropped
        SELECT x.prompt_id, x.response_id AS a, y.response_id AS b, CASE WHEN x.rank < y.rank THEN 1.0 ELSE 0.0 END AS v
        FROM r AS x JOIN r AS y ON x.ranking_id = y.ranking_id AND x.response_id < y.response_id
        WHERE x.rank <> y.rank
    ),
    agg AS (SELECT prompt_id, a, b, sum(v) / count(*) AS p, count(*) AS n FROM votes GROUP BY prompt_id, a, b)
    SELECT agg.prompt_id,
           CASE WHEN p < 0.5 THEN b ELSE a END AS response_a_id,
           CASE WHEN p < 0.5 THEN a ELSE b END AS response_b_id,
           CAST(greatest(p, 1 - p) AS FLOAT) AS label,
           CAST(n AS INTEGER) AS n_votes,
           CAST(0 AS FLOAT) AS margin,
           pr.category,
           CASE WHEN u < {train} THEN 'train' WHEN u < {train_val} THEN 'val' ELSE 'test' END AS split
    FROM (SELECT *, CAST(hash('{salt}' || prompt_id) AS DOUBLE) / 18446744073709551616.0 AS u FROM agg) AS agg
    LEFT JOIN read_parquet('{prompts}') AS pr ON pr.prompt_id = agg.prompt_id
) TO '{out}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (split))
"""


def run_duckdb(validated: Path, out: Path, threads: int, memory_limit: str, **_: Any) -> dict[str, Any]:
    import duckdb

    settings = pairs_settings()
    temp, profile = out.parent / "duckdb-tmp", out.parent / "duckdb-profile.json"
    query = DUCKDB_QUERY.format(
        rankings=parquet_glob(validated, "rankings"), prompts=parquet_glob(validated, "prompts"), out=out,
        salt=settings["split_salt"], train=settings["train_fraction"],
        train_val=settings["train_fraction"] + settings["val_fraction"])
    before = gib()
    start = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = '{temp}'")
    con.execute("SET enable_profiling = 'json'")  # DuckDB's own buffer-memory and spill counters, below
    con.execute(f"SET profiling_output = '{profile}'")
    con.execute(query)
    con.close()
    wall = time.perf_counter() - start
    peak = gib()
    shutil.rmtree(temp, ignore_errors=True)
    system = json.loads(profile.read_text()).get("system", {})
    profile.unlink()
    return {"wall_s": wall, "peak_rss_gib": peak, "rss_gib_before_step": before, "version": duckdb.__version__,
            "settings": {"threads": threads, "memory_limit": memory_limit, "preserve_insertion_order": False,
                         "profiling": "json (standard)"},
            "duckdb_system": {k: system.get(k) for k in ("peak_buffer_memory", "peak_temp_dir_size",
                                                         "total_bytes_spilled", "blocked_thread_time")},
            "query": " ".join(query.split())}


def run_polars(validated: Path, out: Path, threads: int, **_: Any) -> dict[str, Any]:
    import polars as pl

    settings = pairs_settings()
    train, train_val = settings["train_fraction"], settings["train_fraction"] + settings["val_fraction"]
    before = gib()
    start = time.perf_counter()
    rankings = pl.scan_parquet(parquet_glob(validated, "rankings")).select("ranking_id", "prompt_id", "response_id",
                                                                       "rank")
    other = rankings.select("ranking_id", pl.col("response_id").alias("b"), pl.col("rank").alias("rank_b"))
    votes = (
        rankings.join(other, on="ranking_id")
        .filter((pl.col("response_id") < pl.col("b")) & (pl.col("rank") != pl.col("rank_b")))
        .select("prompt_id", pl.col("response_id").alias("a"), "b",
                (pl.col("rank") < pl.col("rank_b")).cast(pl.Float64).alias("v"))
    )
    agg = votes.group_by("prompt_id", "a", "b").agg((pl.col("v").sum() / pl.len()).alias("p"), pl.len().alias("n"))
    flip = pl.col("p") < 0.5
    u = (pl.lit(settings["split_salt"]) + pl.col("prompt_id")).hash().cast(pl.Float64) / 2.0**64
    prompts = pl.scan_parquet(parquet_glob(validated, "prompts")).select("prompt_id", "category")
    pairs = (
        agg.select(
            "prompt_id",
            pl.when(flip).then(pl.col("b")).otherwise(pl.col("a")).alias("response_a_id"),
            pl.when(flip).then(pl.col("a")).otherwise(pl.col("b")).alias("response_b_id"),
            pl.max_horizontal(pl.col("p"), 1 - pl.col("p")).cast(pl.Float32).alias("label"),
            pl.col("n").cast(pl.Int32).alias("n_votes"),
            pl.lit(0.0, pl.Float32).alias("margin"),
        )
        .join(prompts, on="prompt_id", how="left")
        .with_columns(pl.when(u < train).then(pl.lit("train")).when(u < train_val).then(pl.lit("val"))
                      .otherwise(pl.lit("test")).alias("split"))
    )
    pairs.sink_parquet(pl.PartitionBy(out, key="split"), mkdir=True, maintain_order=False, engine="streaming")
    wall = time.perf_counter() - start
    peak = gib()
    # the streaming engine's physical plan: node kinds, and those it marks as an in-memory engine fallback
    graph = pairs.show_graph(engine="streaming", plan_stage="physical", raw_output=True) or ""
    nodes = re.findall(r'^\d+ \[label="([^"\\]+)', graph, flags=re.M)
    return {"wall_s": wall, "peak_rss_gib": peak, "rss_gib_before_step": before, "version": pl.__version__,
            "settings": {"POLARS_MAX_THREADS": os.environ.get("POLARS_MAX_THREADS"), "thread_pool_size":
                         pl.thread_pool_size(), "engine": "streaming", "maintain_order": False},
            "streaming_nodes": sorted(set(nodes)), "in_memory_fallback_nodes": graph.count('fillcolor="0.0 0.3 1.0"'),
            "plan": pairs.explain(engine="streaming")}


RUNNERS = {"rewardline": run_rewardline, "duckdb": run_duckdb, "polars": run_polars}


# --- agreement check (untimed) -----------------------------------------------------------------------------


def output_relation(engine: str, out: Path) -> str:
    if engine == "rewardline":
        files = ", ".join(f"'{out / split}/*.parquet'" for split in ("train", "val", "test"))
        return f"read_parquet([{files}])"
    return f"read_parquet('{out}/**/*.parquet', hive_partitioning = true)"


def output_bytes(engine: str, out: Path) -> int:
    """Bytes of the pairs files (not rewardline's copies of prompts / responses)."""
    files = [p for s in ("train", "val", "test") for p in (out / s).glob("*.parquet")] if engine == "rewardline" \
        else list(out.rglob("*.parquet"))
    return sum(path.stat().st_size for path in files)


def check(workdir: Path, engines: list[str], full: bool) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("SET memory_limit = '6GB'")
    con.execute(f"SET temp_directory = '{workdir / 'check-tmp'}'")
    rankings = parquet_glob(workdir / "validated", "rankings")
    columns = "prompt_id, response_a_id, response_b_id, label, n_votes, margin, category"
    if "rewardline" not in engines and (workdir / "out" / "rewardline" / "train").is_dir():
        engines = ["rewardline", *engines]  # the reference: rewardline's output of an earlier run in this workdir
    comparisons, = con.execute(f"SELECT sum(k * (k - 1) // 2) FROM (SELECT count(*) AS k FROM read_parquet('"
                               f"{rankings}') GROUP BY ranking_id)").fetchone()
    tied, = con.execute(f"SELECT coalesce(sum(m * (m - 1) // 2), 0) FROM (SELECT count(*) AS m FROM read_parquet('"
                        f"{rankings}') GROUP BY ranking_id, rank)").fetchone()
    result: dict[str, Any] = {"input": {"comparisons": int(comparisons), "tied_comparisons": int(tied)},
                              "engines": {}}
    result["method"] = ("fingerprint: sum over rows of DuckDB hash(" + columns + ") as HUGEINT (an order-free "
                        "multiset digest)" + ("; EXCEPT ALL both ways against rewardline's rows" if full else ""))
    for engine in engines:
        rel = output_relation(engine, workdir / "out" / engine)
        con.execute(f"CREATE OR REPLACE VIEW {engine}_pairs AS SELECT prompt_id, response_a_id, response_b_id, "
                    f"CAST(label AS FLOAT) AS label, CAST(n_votes AS INTEGER) AS n_votes, CAST(margin AS FLOAT) AS "
                    f"margin, category, split FROM {rel}")
        pairs, votes, label_sum, prompts, below_half, fingerprint = con.execute(
            f"SELECT count(*), sum(n_votes), sum(CAST(label AS DOUBLE)), count(DISTINCT prompt_id), "
            f"count(*) FILTER (WHERE label < 0.5), sum(CAST(hash({columns}) AS HUGEINT)) FROM {engine}_pairs"
        ).fetchone()
        splits = {s: {"pairs": int(p), "prompts": int(q)} for s, p, q in con.execute(
            f"SELECT split, count(*), count(DISTINCT prompt_id) FROM {engine}_pairs GROUP BY split "
            f"ORDER BY split").fetchall()}
        leaked, = con.execute(f"SELECT count(*) FROM (SELECT prompt_id FROM {engine}_pairs GROUP BY prompt_id "
                              f"HAVING count(DISTINCT split) > 1)").fetchone()
        entry: dict[str, Any] = {"pairs": int(pairs), "votes": int(votes), "label_sum": round(float(label_sum), 3),
                                 "prompts": int(prompts), "labels_below_half": int(below_half),
                                 "splits": splits, "prompts_in_two_splits": int(leaked),
                                 "fingerprint": str(fingerprint),
                                 "bytes": output_bytes(engine, workdir / "out" / engine)}
        if engine != "rewardline" and "rewardline" in engines:
            reference = result["engines"]["rewardline"]["fingerprint"]
            entry["fingerprint_equal_to_rewardline"] = entry["fingerprint"] == reference
        if full and engine != "rewardline" and "rewardline" in engines:
            only_here, = con.execute(f"SELECT count(*) FROM (SELECT {columns} FROM {engine}_pairs EXCEPT ALL "
                                     f"SELECT {columns} FROM rewardline_pairs)").fetchone()
            only_there, = con.execute(f"SELECT count(*) FROM (SELECT {columns} FROM rewardline_pairs EXCEPT ALL "
                                      f"SELECT {columns} FROM {engine}_pairs)").fetchone()
            entry["rows_not_in_rewardline"] = int(only_here)
            entry["rewardline_rows_not_here"] = int(only_there)
            entry["pairs_set_equal_to_rewardline"] = only_here == 0 and only_there == 0
        result["engines"][engine] = entry
    shutil.rmtree(workdir / "check-tmp", ignore_errors=True)
    return result


# --- driver ------------------------------------------------------------------------------------------------


def child_main(args: argparse.Namespace) -> None:
    if args.child == "prepare":
        out = prepare(args.rankings, args.workdir)
    elif args.child == "check":
        out = check(args.workdir, args.engines, args.check == "full")
    else:
        target = args.workdir / "out" / args.child
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        out = RUNNERS[args.child](args.workdir / "validated", target, threads=args.threads,
                                  memory_limit=args.duckdb_memory_limit)
        out["wall_s"] = round(out["wall_s"], 3)
    print(json.dumps(out))


def launch(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``mode`` in a fresh child; its JSON plus the load average at its start and the child's total time."""
    env = {**os.environ, "POLARS_MAX_THREADS": str(args.threads)}
    command = [sys.executable, __file__, "--child", mode, "--rankings", str(args.rankings), "--workdir",
               str(args.workdir), "--threads", str(args.threads), "--duckdb-memory-limit", args.duckdb_memory_limit,
               "--check", args.check, "--engines", *args.engines]
    load = os.getloadavg()
    start_utc = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    process_s = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"{mode} failed:\n{out.stderr[-5000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if isinstance(result, dict):
        result.update({"load_avg_at_start": [round(x, 2) for x in load], "start_utc": start_utc,
                       "process_s": round(process_s, 2)})
    print(f"{mode}: {process_s:.1f} s, load {load[0]:.2f}", file=sys.stderr)
    return result


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    mem = next((int(line.split()[1]) / 1024**2 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0.0)
    return f"{model}, {os.cpu_count()} cores, {mem:.1f} GiB RAM"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rankings", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rl-engines"))
    parser.add_argument("--out", type=Path, default=None, help="results JSON (also printed)")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads / POLARS_MAX_THREADS")
    parser.add_argument("--duckdb-memory-limit", default="2GB")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the engines (each once per round)")
    parser.add_argument("--check", choices=["full", "fingerprint"], default="full",
                        help="agreement check: a multiset fingerprint, plus EXCEPT ALL against rewardline (full)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse WORKDIR/validated when WORKDIR/prepared.json is for the same --rankings")
    parser.add_argument("--child", choices=["prepare", "check", *ENGINES], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    marker = args.workdir / "prepared.json"
    started = dt.datetime.now(dt.UTC)
    if args.reuse and marker.exists() and json.loads(marker.read_text())["rankings"] == args.rankings:
        prepared = {**json.loads(marker.read_text()), "reused": True}
    else:
        shutil.rmtree(args.workdir, ignore_errors=True)
        prepared = launch("prepare", args)
    runs: dict[str, list[dict[str, Any]]] = {engine: [] for engine in args.engines}
    for _ in range(args.repeat):  # rounds: every engine once per round, in --engines order
        for engine in args.engines:
            runs[engine].append(launch(engine, args))
    agreement = launch("check", args)  # on the last round's outputs
    versions = {engine: runs[engine][0]["version"] for engine in args.engines}
    summary = {engine: {"wall_s": [r["wall_s"] for r in rounds], "peak_rss_gib": [r["peak_rss_gib"] for r in rounds],
                        "load_1min_at_start": [r["load_avg_at_start"][0] for r in rounds]}
               for engine, rounds in runs.items()}
    result = {
        "command": " ".join(["python benchmarks/bench_engines.py", *sys.argv[1:]]),
        "date_utc": started.strftime("%Y-%m-%d"), "start_utc": started.strftime("%H:%M:%S"),
        "machine": machine(), "python": platform.python_version(), "versions": versions,
        "pairs_settings": pairs_settings(), "split_hash": SALT_NOTE,
        "peak_rss_note": "peak_rss_gib = the engine child's VmHWM (GiB) right after the step; rss_gib_before_step "
                         "= its VmHWM after imports; wall_s = the step alone; process_s = the child from exec to exit",
        "prepare": prepared, "summary": summary, "runs": runs, "check": agreement,
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
