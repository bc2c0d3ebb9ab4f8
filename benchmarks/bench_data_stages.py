"""Benchmark: ingest + validate + pairs on 1M synthetic rankings.

K = 4 responses of ~200 characters per ranking, 20 % of prompts ranked by 3 annotators
(pool of 50). The source is written once as native nested-rankings Parquet; then the
three stages run in a fresh child process, timed stage by stage, and the child's
peak RSS is its own ``VmHWM`` (:func:`peak_rss_gib`, GiB; ``peak_rss_gb_after``: the child's
high-water mark once each stage has run, so the stage where it rises holds the peak).

    python benchmarks/bench_data_stages.py --rankings 1000000 --workdir /tmp/rl-bench [--targets thurstone]

``--targets thurstone|bt`` runs pairs with ``pairs.targets`` set and reports the utility fit's own
time (``targets_s``, part of ``pairs_s``) and its statistics.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def generate(n: int, path: Path) -> float:
    import pyarrow.parquet as pq

    from rewardline.data.synthetic import synthetic_rankings_table

    start = time.perf_counter()
    table = synthetic_rankings_table(n_rankings=n, k=4, response_chars=200, multi_annotator_share=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return time.perf_counter() - start


def peak_rss_gib() -> float:
    """This process's peak RSS in GiB: ``VmHWM`` of ``/proc/self/status`` (the high-water mark of its own address
    space). Not ``getrusage``'s ``ru_maxrss``: Linux carries the parent's high-water mark into a child through
    fork/vfork + exec, so the child's ``ru_maxrss`` (and the parent's ``RUSAGE_CHILDREN``) was at least the
    parent's peak, i.e. the generator's memory (3M rankings: 3.79 GiB whatever the stages used)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def run_stages(source: Path, workdir: Path, targets: str = "none") -> dict:
    from rewardline.data.ingest import IngestConfig, Source, run_ingest
    from rewardline.pairs.expand import PairsConfig, run_pairs
    from rewardline.validation.validate import ValidateConfig, run_validate

    timings: dict[str, float] = {}
    peaks: dict[str, float] = {}  # the process's peak RSS (a high-water mark) once the stage has run

    def peak_gb() -> float:
        return round(peak_rss_gib(), 3)

    start = time.perf_counter()
    ingest = run_ingest(IngestConfig([Source(str(source), "rankings")]), workdir / "ingested")
    timings["ingest_s"], peaks["ingest"] = time.perf_counter() - start, peak_gb()
    start = time.perf_counter()
    validate = run_validate(workdir / "ingested", workdir / "validated", ValidateConfig(min_alpha=0.0))
    timings["validate_s"], peaks["validate"] = time.perf_counter() - start, peak_gb()
    start = time.perf_counter()
    pairs = run_pairs(workdir / "validated", workdir / "pairs", PairsConfig(targets=targets))
    timings["pairs_s"], peaks["pairs"] = time.perf_counter() - start, peak_gb()
    timings["total_s"] = sum(timings.values())
    peak = peak_gb()
    if targets != "none":
        timings["targets_s"] = time_target_fit(workdir / "pairs", targets)
    return {"timings": timings, "peak_rss_gb_after": peaks, "peak_rss_gb": peak,
            "rows_in": ingest["rows_in"], "rows_ok": ingest["rows_ok"],
            "rows_quarantined": ingest["rows_quarantined"], "rankings": ingest["rankings"],
            "krippendorff_alpha": validate["krippendorff_alpha"], "pairs": pairs["pairs"],
            **({"targets": pairs["targets"]} if targets != "none" else {})}


def time_target_fit(pairs_dir: Path, model: str) -> float:
    """Seconds of the utility fit alone (``fit_targets`` on the pairs the stage wrote), for the report."""
    import pyarrow as pa

    from rewardline.data.tables import read_split, read_table, table_path
    from rewardline.pairs.thurstone import fit_targets

    pairs = pa.concat_tables(read_split(pairs_dir, split) for split in ("train", "val", "test"))
    responses = read_table(table_path(pairs_dir, "responses"), columns=["response_id"])
    start = time.perf_counter()
    fit_targets(pairs, responses, model)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rankings", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rewardline-bench"))
    parser.add_argument("--targets", choices=["none", "thurstone", "bt"], default="none",
                        help="pairs.targets: also fit per-response utilities (targets/)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    source = args.workdir / "source" / "rankings.parquet"
    if args.child:
        print(json.dumps(run_stages(source, args.workdir, args.targets)))
        return
    generation_s = generate(args.rankings, source)
    out = subprocess.run([sys.executable, __file__, "--child", "--rankings", str(args.rankings),
                          "--workdir", str(args.workdir), "--targets", args.targets], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # the child's own VmHWM (above); getrusage's figure, which includes the generator's peak, for comparison
    result["ru_maxrss_children_gb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    result["generation_s"] = generation_s
    result["source_mb"] = source.stat().st_size / 1e6
    result["machine"] = f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
