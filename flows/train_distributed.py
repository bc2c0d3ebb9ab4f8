"""Prefect flow ``train-distributed``: the train stage under ``torchrun`` on this node, one of ``nnodes``.

Multi-node training starts the same command on every node; torchrun's c10d rendezvous at
``rdzv_endpoint`` (``host:port`` of any one node, reachable from all) gathers ``nnodes`` of them,
assigns ranks and starts ``nproc_per_node`` workers each. With ``nnodes=1`` the rendezvous is
local (``--standalone``). DDP or FSDP comes from ``params.yaml: train.strategy``. See
docs/distributed.md for the Slurm and Prefect recipes.

    python -m flows.train_distributed --nnodes 2 --nproc-per-node 8 --rdzv-endpoint node0:29500 --rdzv-id run42

The stage script writes ``models/reward-model`` as ``dvc repro train`` would, but outside DVC:
record the result with ``dvc commit train`` afterwards (rank 0's node holds it on shared storage).
Exit status: the contract's, from the failed worker's own exit (:func:`worker_failure`; torchrun exits 1 for any).
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.command_line import require_project, run_flow_command
from rewardline.errors import ConfigError, GateFailed, TransientError

#: The worker exit that torchrun reports as the root cause of its failure (torchrun itself exits 1 whatever it was).
_ROOT_CAUSE_EXIT = re.compile(r"Root Cause \(first observed failure\):.*?exitcode\s*:\s*(-?\d+)", re.DOTALL)


def torchrun_command(nnodes: int, nproc_per_node: int, rdzv_endpoint: str | None = None, rdzv_id: str = "rewardline",
                     script: str = "stages/train.py") -> list[str]:
    """The ``torchrun`` command line of one node: c10d rendezvous at ``rdzv_endpoint`` for
    ``nnodes > 1``, ``--standalone`` (a local rendezvous on a free port) for one node."""
    if nnodes < 1 or nproc_per_node < 1:
        raise ValueError(f"nnodes={nnodes} and nproc_per_node={nproc_per_node}: expected both >= 1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if nnodes == 1:
        return [*cmd, "--standalone", script]
    if not rdzv_endpoint:
        raise ValueError(f"nnodes={nnodes} needs rdzv_endpoint (host:port of one node, reachable from all)")
    return [*cmd, f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
            f"--rdzv-id={rdzv_id}", script]


@task(cache_policy=NO_CACHE)
def launch_torchrun(project: str, command: list[str]) -> int:
    """Run ``command`` in ``project``, its output in the task log; raises on a non-zero exit."""
    log = get_run_logger()
    log.info("%s", " ".join(command))
    proc = subprocess.Popen(command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: collections.deque[str] = collections.deque(maxlen=500)
    for line in proc.stdout or ():
        log.info("%s", line.rstrip())
        tail.append(line.rstrip())
    if proc.wait() != 0:
        raise worker_failure(list(tail), proc.returncode, command)
    return proc.returncode


def worker_failure(output: list[str], returncode: int, command: list[str]) -> Exception:
    """The contract's error for a failed torchrun (its last output lines ``output``): the first failed worker's
    exit (torchrun's root cause) decides, as a stage's would (:mod:`rewardline.ops.dvc_run`): 1 a gate
    (:class:`GateFailed`), 2 bad input (:class:`ConfigError`), 3 transient; with the worker's ``error:`` line as
    the message. Anything else (torchrun itself failed, a signal) is a RuntimeError: an internal error, retried."""
    found = _ROOT_CAUSE_EXIT.search("\n".join(output))
    worker_exit = int(found.group(1)) if found else None
    said = next((line for line in output if "gate failed" in line or line.startswith(("error:", "internal error:"))),
                None)
    message = f"torchrun: worker exited with {worker_exit}: {said}" if said else \
        f"torchrun exited with {returncode} (worker exit {worker_exit}): {' '.join(command)}"
    kind = {1: GateFailed, 2: ConfigError, 3: TransientError}.get(worker_exit, RuntimeError)
    return kind(message)


@flow(name="train-distributed")
def train_distributed(nnodes: int = 1, nproc_per_node: int = 1, rdzv_endpoint: str | None = None,
                      rdzv_id: str = "rewardline", project: str = ".") -> int:
    """Train on this node as one of ``nnodes`` (run the flow on each node with the same parameters)."""
    return launch_torchrun(str(Path(project).resolve()),
                           torchrun_command(nnodes, nproc_per_node, rdzv_endpoint, rdzv_id))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.train_distributed", description=__doc__.split("\n")[0])
    parser.add_argument("--nnodes", type=int, default=1, help="nodes taking part (each runs this command)")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="worker processes (GPUs) on each node")
    parser.add_argument("--rdzv-endpoint", default=None, help="host:port of the c10d rendezvous (nnodes > 1)")
    parser.add_argument("--rdzv-id", default="rewardline", help="the run's id, the same on every node")
    parser.add_argument("--project", default=".", help="project directory (params.yaml, data/pairs)")
    parser.add_argument("--print-command", action="store_true", help="print this node's torchrun command and exit")
    args = parser.parse_args(argv)
    try:
        command = torchrun_command(args.nnodes, args.nproc_per_node, args.rdzv_endpoint, args.rdzv_id)
    except ValueError as err:
        parser.error(str(err))  # exit 2 with the usage
    if args.print_command:
        print(" ".join(command))
        return
    run_flow_command(lambda: train_distributed(args.nnodes, args.nproc_per_node, args.rdzv_endpoint, args.rdzv_id,
                                               str(require_project(args.project, "params.yaml"))))


if __name__ == "__main__":
    main()
