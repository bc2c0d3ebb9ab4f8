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
