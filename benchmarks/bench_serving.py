"""Serving throughput and latency on the same inputs: in-process ``rerank``, ``rewardline serve`` with 1 and
16 concurrent clients, and ``mlflow models serve`` (the registered pyfunc) with 1 and 16 clients.

Inputs: AlpacaEval prompts × K candidates. With ``--alpaca-dir`` (the shared ``alpacaeval_bon`` extract:
``model_outputs/tulu-2-dpo-13b.{0..15}.json.gz``) the first ``--prompts`` instructions with all 16
policy samples each; without it, the project's ``data/raw/alpacaeval_bon_k4.json`` (reference + 3 samples).
The model: ``--model DIR``, or an untrained all-MiniLM-L6-v2 reward model (fresh seeded head; throughput
does not depend on the weights) built into ``--out``.

One request = one prompt with its K candidates (``/rerank``; ``/invocations`` with K dataframe records).
Candidates/s = all candidates / wall time of the whole run; latency = per request, client side. The
server check at the end sends an oversize body (over ``serve.max_request_bytes``) and too many candidates,
expects 413 for both, then a normal request still answered 200.

    python benchmarks/bench_serving.py --alpaca-dir /work/shared/data/alpacaeval_bon --prompts 32 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_groups(alpaca_dir: Path | None, prompts: int) -> list[tuple[str, list[str]]]:
    """``[(instruction, [candidate, ...])]`` for the first ``prompts`` instructions."""
    groups: dict[str, list[str]] = defaultdict(list)
    if alpaca_dir is not None:
        files = sorted((alpaca_dir / "model_outputs").glob("*.json.gz"), key=lambda p: int(p.name.split(".")[-3]))
        for path in files:
            for record in json.loads(gzip.decompress(path.read_bytes())):
                groups[record["instruction"]].append(record["output"])
    else:
        for record in json.loads((ROOT / "data/raw/alpacaeval_bon_k4.json").read_text()):
            if record["instruction"] not in groups:
                groups[record["instruction"]].append(record["output_1"])
            groups[record["instruction"]].append(record["output_2"])
    return list(groups.items())[:prompts]


def build_model(out: Path, max_length: int) -> Path:
    import torch
    from transformers import AutoTokenizer

    from rewardline.modeling.backbones import DEFAULT_BACKBONE, resolve_backbone
    from rewardline.modeling.formatting import FormatConfig
    from rewardline.modeling.model import RewardModel

    torch.manual_seed(0)
    model = RewardModel.from_backbone(DEFAULT_BACKBONE, format_config=FormatConfig(max_length=max_length))
    model.save(out, AutoTokenizer.from_pretrained(resolve_backbone(DEFAULT_BACKBONE)))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def process(args: list[str], ready_url: str, log: Path, env: dict[str, str] | None = None, timeout: float = 600):
    """A server process in its own group, yielded once ``ready_url`` answers 200; stopped after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[:4]} exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ready_url} not ready after {timeout} s")
            time.sleep(0.5)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def summary(name: str, candidates: int, wall: float, latencies: list[float], clients: int) -> dict:
    lat = np.array(latencies) * 1000
    return {"mode": name, "clients": clients, "requests": len(latencies), "candidates": candidates,
            "wall_s": round(wall, 2), "candidates_per_s": round(candidates / wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1)}


REPEATS = 3  # rounds; each round runs every mode once (interleaved, so load changes hit all modes alike)


def run_once(name: str, groups: list, clients: int, send) -> dict:
    """One request per group from ``clients`` threads: wall time and per-request latency."""
    def one(group):
        started = time.perf_counter()
        send(group)
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, groups))
    return summary(name, sum(len(c) for _, c in groups), time.perf_counter() - started, latencies, clients)


def median_run(runs: list[dict]) -> dict:
    """The run with the median throughput, with every run's throughput beside it."""
    ordered = sorted(runs, key=lambda r: r["candidates_per_s"])
    return {**ordered[len(ordered) // 2], "runs_candidates_per_s": [r["candidates_per_s"] for r in runs]}


def log_mlflow_model(model: Path, out: Path) -> tuple[str, str]:
    """The model as the registered pyfunc is (bundle = model dir + calibration.json), logged into a throwaway
    local MLflow store; returns (model URI, tracking URI)."""
    import shutil

    import mlflow

    from rewardline.registry.pyfunc import log_model_bundle

    bundle = out / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    shutil.copytree(model, bundle)
    (bundle / "calibration.json").write_text("{}\n")
    tracking = f"sqlite:///{out / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking)
    mlflow.set_experiment("bench-serving")
    with mlflow.start_run():
        info = log_model_bundle(bundle)
    return info.model_uri, tracking


def server_check(client: httpx.Client, url: str, group: tuple[str, list[str]]) -> dict:
    """Oversize body and too many candidates → 413; the server still healthy and answering after."""
    metrics = client.get(f"{url}/metrics").text
    big = client.post(f"{url}/rerank", content=b'{"prompt": "p", "candidates": ["' + b"x" * (17 << 20) + b'"]}',
                      headers={"Content-Type": "application/json"})
    many = client.post(f"{url}/rerank", json={"prompt": "p", "candidates": ["a"] * 300})
    health = client.get(f"{url}/healthz").status_code
    after = client.post(f"{url}/rerank", json={"prompt": group[0], "candidates": group[1]}).status_code

    def total(name: str) -> float:
        return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name))

    return {"oversize_body_status": big.status_code, "oversize_body_error": big.json().get("error"),
            "too_many_candidates_status": many.status_code, "too_many_candidates_error": many.json().get("error"),
            "healthz_after": health, "rerank_after": after,
            "mean_requests_per_batch": round(total("rewardline_batch_requests_sum")
                                             / max(total("rewardline_batch_requests_count"), 1), 2)}


def bench(model: Path, groups: list, out: Path, with_mlflow: bool) -> tuple[list[dict], dict]:  # long: every mode
    """Both servers up, then :data:`REPEATS` rounds of every mode; the median run of each mode."""
    from rewardline.serving.rerank import RewardScorer, rerank_rows

    scorer = RewardScorer(model)
    rows = [{"prompt": p, "response": c} for p, cands in groups for c in cands]
    rerank_rows(scorer, rows[: len(groups[0][1])])  # warm-up
    port, env = free_port(), {"PYTHONPATH": str(ROOT)}
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "rewardline.cli", "serve", "--model", str(model), "--port", str(port)]
    with contextlib.ExitStack() as stack:
        stack.enter_context(process(serve, f"{url}/readyz", out / "serve.log", env))
        client = stack.enter_context(httpx.Client(timeout=600, limits=httpx.Limits(max_connections=32)))
        modes = {
            ("in-process rerank, one call", 1): None,
            ("in-process rerank, one call per prompt", 1):
                lambda g: rerank_rows(scorer, [{"prompt": g[0], "response": c} for c in g[1]]),
        }

        def served(g):
            r = client.post(f"{url}/rerank", json={"prompt": g[0], "candidates": g[1]})
            assert r.status_code == 200, r.text

        modes[("rewardline serve /rerank", 1)] = modes[("rewardline serve /rerank", 16)] = served
        if with_mlflow:
            model_uri, tracking = log_mlflow_model(model, out)
            mport = free_port()
            murl = f"http://127.0.0.1:{mport}"
            args = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager",
                    "local", "--host", "127.0.0.1", "--port", str(mport), "--workers", "1"]
            stack.enter_context(process(args, f"{murl}/ping", out / "mlflow-serve.log",
                                        {**env, "MLFLOW_TRACKING_URI": tracking}))

            def invoked(g):
                records = [{"prompt": g[0], "response": c} for c in g[1]]
                r = client.post(f"{murl}/invocations", json={"dataframe_records": records})
                assert r.status_code == 200, r.text

            modes[("mlflow models serve /invocations", 1)] = modes[("mlflow models serve /invocations", 16)] = invoked
        for send in {id(f): f for f in modes.values() if f is not None}.values():
            send(groups[0])  # warm-up each server
        runs: dict[tuple[str, int], list[dict]] = defaultdict(list)
        for round_ in range(REPEATS):
            for (name, clients), send in modes.items():
                if send is None:
                    started = time.perf_counter()
                    rerank_rows(scorer, rows)
                    wall = time.perf_counter() - started
                    runs[(name, clients)].append(summary(name, len(rows), wall, [wall], 1))
                else:
                    runs[(name, clients)].append(run_once(name, groups, clients, send))
                print(f"round {round_ + 1}: {runs[(name, clients)][-1]}", flush=True)
        check = server_check(client, url, groups[0])
    return [median_run(r) for r in runs.values()], check


def main() -> None:
    global REPEATS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alpaca-dir", type=Path, help="the shared alpacaeval_bon directory (16 samples/prompt)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--model", type=Path, help="reward model directory (default: untrained MiniLM)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="runs per measurement (median reported)")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="intra-op threads for every mode (OMP_NUM_THREADS of the servers too); 0: torch's "
                             "default. On an oversubscribed machine 1 avoids OpenMP barrier stalls")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    REPEATS = args.repeats
    if args.torch_threads > 0:  # before torch is imported here; the servers inherit the environment
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.torch_threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.model or build_model(args.out / "model", args.max_length)
    groups = load_groups(args.alpaca_dir, args.prompts)
    print(f"{len(groups)} prompts x {len(groups[0][1])} candidates; model {model}; load {os.getloadavg()}",
          flush=True)
    results, check = bench(model, groups, args.out, not args.skip_mlflow)
    in_process = max(r["candidates_per_s"] for r in results if r["mode"].startswith("in-process"))
    ratio = next(r for r in results if r["mode"].startswith("rewardline serve") and r["clients"] == 16)[
        "candidates_per_s"] / in_process
    report = {"torch_threads": args.torch_threads or "default",
              "prompts": len(groups), "candidates_per_prompt": len(groups[0][1]), "model": str(model),
              "loadavg_end": os.getloadavg(), "results": results, "server_check": check,
              "server16_over_in_process": round(ratio, 3)}
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print("| mode | clients | candidates/s | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['mode']} | {r['clients']} | {r['candidates_per_s']} | {r['p50_ms']} | {r['p99_ms']} |")
    print(f"server (16 clients) / best in-process rerank mode: {ratio:.3f}; 413 check: {check}")


if __name__ == "__main__":
    main()
