"""flows/train_distributed.py: the torchrun command of one node, and a real 2-"node" c10d
rendezvous on localhost (two torchrun launchers, one worker each, gloo all-reduce)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import _free_ports

from flows.train_distributed import torchrun_command

WORKER = """
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
print(f"rank={dist.get_rank()} world={dist.get_world_size()} sum={t.item():g}", flush=True)
dist.destroy_process_group()
"""


def _flow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.train_distributed", *args], capture_output=True, text=True,
                          timeout=120)


def test_help_and_the_command_of_one_node_of_a_multi_node_run():
    help_ = _flow("--help")
    assert help_.returncode == 0 and "--nnodes" in help_.stdout and "--rdzv-endpoint" in help_.stdout
    cmd = _flow("--print-command", "--nnodes", "2", "--nproc-per-node", "8", "--rdzv-endpoint", "node0:29500")
    assert cmd.returncode == 0, cmd.stderr
    assert cmd.stdout.split()[1:] == ["-m", "torch.distributed.run", "--nproc-per-node=8", "--nnodes=2",
                                      "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29500", "--rdzv-id=rewardline",
                                      "stages/train.py"]
    single = _flow("--print-command", "--nproc-per-node", "2")
    assert single.stdout.split()[-2:] == ["--standalone", "stages/train.py"]
    missing = _flow("--nnodes", "2")
    assert missing.returncode == 2 and "needs rdzv_endpoint" in missing.stderr


def test_two_launchers_meet_at_the_c10d_rendezvous_and_all_reduce(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = torchrun_command(2, 1, f"127.0.0.1:{_free_ports(1)[0]}", "test", script=str(script))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=180)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outputs
    lines = sorted(line for out in outputs for line in out.splitlines() if line.startswith("rank="))
    assert lines == ["rank=0 world=2 sum=3", "rank=1 world=2 sum=3"]


def test_a_failed_worker_s_own_exit_decides_the_contract_error(tmp_path):
    """torchrun exits 1 whatever its worker did (read from a real torchrun run here), which the flow used to raise
    as a RuntimeError (exit 3, retried) even for bad input; the root cause's exit code now decides."""
    from flows.train_distributed import worker_failure
    from rewardline.errors import exit_code

    script = tmp_path / "worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for worker_exit, said, expected in ((2, "error: data/pairs: missing", 2), (3, "error: s3 down", 3),
                                        (1, "evaluate gate failed (1 of 5)", 1)):
        script.write_text(f"import sys\nprint({said!r}, file=sys.stderr)\nsys.exit({worker_exit})\n")
        command = torchrun_command(1, 1, script=str(script))
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 1, run.stdout + run.stderr  # torchrun's own exit, whatever the worker's
        err = worker_failure((run.stdout + run.stderr).splitlines(), run.returncode, command)
        assert exit_code(err) == expected and str(err) == f"torchrun: worker exited with {worker_exit}: {said}"
    killed = worker_failure(["torchrun: some launcher failure"], 1, ["torchrun"])
    assert type(killed) is RuntimeError and exit_code(killed) == 3  # no root cause: an internal error, retried


def test_the_flow_command_outside_a_project_exits_2():
    run = _flow("--project", "/nonexistent-project")
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1] == (
        "error: /nonexistent-project: not a rewardline project (no params.yaml); run the flow in the project or pass "
        "--project DIR"), run.stderr
