"""The retrain fault hooks (rewardline.retraining.cycle.checkpoint): SIGKILL or an exception where
the environment names the point, nothing otherwise (docs/reliability.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
CALL = "from rewardline.retraining.cycle import checkpoint; checkpoint('appended'); print('alive')"


def run(**env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REWARDLINE_RETRAIN_")}
    return subprocess.run([sys.executable, "-c", CALL], env={**base, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=120)


def test_kill_at_the_named_point_sigkills_the_process():
    done = run(REWARDLINE_RETRAIN_KILL_AT="appended")
    assert done.returncode == -signal.SIGKILL and "alive" not in done.stdout


def test_fail_at_the_named_point_raises_injected_failure():
    done = run(REWARDLINE_RETRAIN_FAIL_AT="appended")
    assert done.returncode == 1 and "InjectedFailure: injected failure after ledger state 'appended'" in done.stderr


def test_the_hooks_are_inert_unset_or_at_another_point():
    for env in ({}, {"REWARDLINE_RETRAIN_KILL_AT": "decided"}, {"REWARDLINE_RETRAIN_FAIL_AT": "started"}):
        done = run(**env)
        assert done.returncode == 0 and done.stdout.strip() == "alive", (env, done.stderr)
