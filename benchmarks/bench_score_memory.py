"""Peak memory and time of `rewardline score` (or `rerank`) against the size of its input file: this checkout, and
another checkout (the code before streaming) in the same run.

    python benchmarks/bench_score_memory.py --rows 20000 100000 300000 [--base /tmp/rl-base] [--layout jsonl]
        [--command score|rerank] [--dir /tmp/score-mem] [--results benchmarks/results/score_memory.jsonl]

Writes ``rows`` synthetic ``{prompt, response, id}`` rows (seeded: 20–120-word prompts, 20–200-word responses,
about 1.2 kB a row) as JSONL or Parquet, trains a tiny-bert reward model once (2 steps: the model's quality is
beside the point, a small model keeps the run short so that the rows, not the forward passes, dominate memory),
then runs ``python -m rewardline.cli score`` on each file in a fresh process per checkout under
``/usr/bin/time -v`` and records wall seconds and peak RSS. With ``--base``, the same command runs with
``PYTHONPATH`` at that checkout (``git worktree add /tmp/rl-base COMMIT``), and the two outputs' rewards are
compared (max |Δ|). ``--command rerank`` runs ``rewardline rerank`` instead, on rows whose prompts repeat: 16
candidates per prompt, interleaved (row i has prompt i mod rows/16, so every prompt's candidates span the file);
its comparison also checks that both outputs list the same ids with the same ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parents[1]
WORDS = ("the", "a", "reward", "model", "scores", "prompt", "response", "with", "scalar", "trained", "on", "preference",
         "pairs", "signal", "optimise", "annotators", "rank", "answers", "judge", "helpful", "harmless")


def write_rows(path: Path, n: int, seed: int = 0, per_prompt: int = 1) -> None:
    """``n`` rows, each prompt shared by ``per_prompt`` of them (row i: prompt i mod n/per_prompt)."""
    rng = random.Random(seed)
    prompts = [" ".join(rng.choices(WORDS, k=rng.randint(20, 120))) for _ in range(max(1, n // per_prompt))]
    rows = [{"prompt": prompts[i % len(prompts)], "response": " ".join(rng.choices(WORDS, k=rng.randint(20, 200))),
             "id": i} for i in range(n)]
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))


#: ``python -c`` this, then the CLI's arguments: the CLI run as ``python -m rewardline.cli`` is, then the peak RSS of
#: this process alone (with ``--engine ray`` the tree ``/usr/bin/time`` measures includes Ray's daemons and actors).
DRIVER = """import resource, runpy, sys
sys.argv = ["rewardline", *sys.argv[1:]]
try:
    runpy.run_module("rewardline.cli", run_name="__main__", alter_sys=True)
finally:
    sys.stderr.write(f"driver peak RSS kB: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n")
"""


def run_score(checkout: Path, model: Path, source: Path, out: Path, cli_command: str = "score",
              engine: str = "local") -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = ["/usr/bin/time", "-v", sys.executable, "-c", DRIVER, "-q", cli_command, "--model", str(model),
               "--input", str(source), "--out", str(out)]
    if engine == "ray":
        command += ["--engine", "ray", "--actors", "2"]
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=checkout)
    if run.returncode != 0:
        return {"returncode": run.returncode, "error": run.stderr.strip().splitlines()[-3:]}
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", run.stderr)
    hours, minutes, seconds = (float(g or 0) for g in wall.groups())
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
    driver_kb = int(re.search(r"driver peak RSS kB: (\d+)", run.stderr).group(1))
    return {"returncode": 0, "wall_s": round(hours * 3600 + minutes * 60 + seconds, 1),
            "peak_rss_mb": round(rss_kb / 1024), "driver_peak_rss_mb": round(driver_kb / 1024)}


def output_columns(path: Path, names: tuple[str, ...]) -> list[tuple]:
    """The ``names`` columns of an output file, row by row."""
    if path.suffix == ".parquet":
        table = pq.read_table(path, columns=list(names))
        return list(zip(*(table[name].to_pylist() for name in names), strict=True))
    return [tuple(row[name] for name in names) for row in map(json.loads, path.read_text().splitlines())]


def compare(this: Path, base: Path, cli_command: str) -> dict:
    """max |Δ reward| between two outputs (row by row, by ``id``), and for ``rerank`` the rows whose (id, rank)
    differ, with the largest reward gap between the two candidates swapped there (a gap within the rounding
    between the runs is a near-tie ordered either way; a larger one would be a wrong order)."""
    names = ("id", "reward", "rank") if cli_command == "rerank" else ("id", "reward")
    ours, theirs = output_columns(this, names), output_columns(base, names)
    reward_of, base_reward_of = {row[0]: row[1] for row in ours}, {row[0]: row[1] for row in theirs}
    result = {"same_rows": sorted(reward_of) == sorted(base_reward_of),
              "max_abs_reward_diff": max(abs(reward_of[key] - base_reward_of[key]) for key in reward_of)}
    if cli_command == "score":
        result["same_order"] = [row[0] for row in ours] == [row[0] for row in theirs]
    if cli_command == "rerank":
        swapped = [(a[0], b[0]) for a, b in zip(ours, theirs, strict=True) if (a[0], a[2]) != (b[0], b[2])]
        result["rows_ranked_differently"] = len(swapped)
        result["max_reward_gap_where_ranked_differently"] = max(
            (abs(reward_of[x] - reward_of[y]) for x, y in swapped), default=0.0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--base", type=Path, help="another checkout to run the same command with, in the same run")
    parser.add_argument("--layout", choices=("jsonl", "parquet"), default="jsonl")
    parser.add_argument("--command", choices=("score", "rerank"), default="score")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: a local 2-actor Ray cluster; driver_peak_rss_mb is then the figure to read")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/score-mem"))
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    model = args.dir / "tiny-rm"
    if not model.exists():
        subprocess.run([sys.executable, "-m", "rewardline.cli", "-q", "train", "--data", str(HERE / "data" / "pairs"),
                        "--out", str(model), "--set", "backbone=tiny-bert", "--set", "freeze_layers=0",
                        "--set", "max_steps=2", "--set", f"checkpoint_dir={args.dir / 'checkpoints'}"],
                       check=True, cwd=HERE, env={**os.environ, "PYTHONPATH": str(HERE)})
    checkouts = {"this": HERE, **({"base": args.base.resolve()} if args.base else {})}
    for n in args.rows:
        per_prompt = 16 if args.command == "rerank" else 1
        source = args.dir / f"rows{n}{'-grouped' if per_prompt > 1 else ''}.{args.layout}"
        if not source.exists():
            write_rows(source, n, per_prompt=per_prompt)
        outputs = {}
        for name, checkout in checkouts.items():
            outputs[name] = args.dir / f"{args.command}d{n}-{args.engine}-{name}.{args.layout}"
            result = {"command": args.command, "engine": args.engine, "rows": n, "layout": args.layout,
                      "file_mb": round(source.stat().st_size / 1e6, 1), "checkout": name,
                      **run_score(checkout, model, source, outputs[name], args.command, args.engine)}
            if name == "base" and result["returncode"] == 0:
                result.update(compare(outputs["this"], outputs["base"], args.command))
            print(json.dumps(result), flush=True)
            if args.results:
                with args.results.open("a") as sink:
                    sink.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
