"""Faults injected into real ``rewardline`` processes on the shipped synthetic sample (tiny-bert):
SIGKILL of train and evaluate at seeded random moments then a re-run, two concurrent writers on
each stage output, a diverging loss, corrupt model folders.

"Identical" means the sha256 of every file (``fingerprint``) equals an uninterrupted run's; a
model's ``metrics.json`` (wall-clock throughput, ``resumed_from_step``) and its ``checkpoints/``
are left out of the comparison. Ingest kills and concurrent ingests are in tests/ops/test_atomic.py.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_log import record

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "data" / "raw" / "synthetic_multiannotator.jsonl"
CLI = [sys.executable, "-m", "rewardline.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "REWARDLINE_LOCK_TIMEOUT": "600", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1"}
RUN_ONLY = ("metrics.json", "checkpoints/")  # of a model dir: wall-clock numbers, resumable state

pytestmark = pytest.mark.slow


def fingerprint(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path, minus paths starting with ``skip``."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_file() and not rel.startswith(skip):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def leftovers(out: Path) -> list[str]:
    """Staging / aside folders of killed runs beside ``out`` (the lock file does not count)."""
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and not p.name.endswith(".lock")]


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=ENV, capture_output=True, text=True, timeout=timeout)


class Project:
    """The sample ingested, validated and expanded to pairs through the CLI; a seeded tiny-bert on disk."""

    def __init__(self, root: Path) -> None:
        from rewardline.modeling.tiny import build_tiny_bert

        self.root = root
        self.params = root / "none.yaml"  # no project params: only the --set values below
        self.params.write_text("{}\n")
        self.backbone = build_tiny_bert(root / "backbone")
        for stage, src, out in (("ingest", str(SAMPLE), "ingested"), ("validate", "ingested", "validated"),
                                ("pairs", "validated", "pairs")):
            done = cli(stage, src if stage == "ingest" else str(root / src), "--out", str(root / out),
                       "--params", str(self.params))
            assert done.returncode == 0, done.stderr
        self.pairs = root / "pairs"

    def train_args(self, out: Path, *sets: str) -> list[str]:
        base = (f"backbone={self.backbone}", "max_length=96", "batch_tokens=4096", "epochs=2", "lr=1e-3",
                "progress=false", "checkpoint_every=2", f"cache_dir={self.root / 'cache'}")
        return ["train", "--data", str(self.pairs), "--out", str(out), "--params", str(self.params),
                *(f"--set={kv}" for kv in (*base, *sets))]

    def evaluate_args(self, model: Path, out: Path, *sets: str) -> list[str]:
        base = ("min_accuracy=0", "max_ece_calibrated=1", "max_ece_absolute=1", "max_length_bias=1")
        return ["evaluate", "--model", str(model), "--data", str(self.pairs), "--out", str(out),
                "--params", str(self.params), *(f"--set={kv}" for kv in (*base, *sets))]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return Project(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def refs(project: Project) -> dict[str, tuple[Path, dict[str, str], float]]:
    """Uninterrupted runs: two trainings (seed 0, 1) and two evaluations of the first (200 / 100
    bootstrap samples): name -> (folder, fingerprint, seconds)."""
    out: dict[str, tuple[Path, dict[str, str], float]] = {}
    for name, args, skip in (
        ("train0", project.train_args(project.root / "ref-train0", "seed=0"), RUN_ONLY),
        ("train1", project.train_args(project.root / "ref-train1", "seed=1"), RUN_ONLY),
        ("eval200", project.evaluate_args(project.root / "ref-train0", project.root / "ref-eval200",
                                          "bootstrap_samples=200"), ()),
        ("eval100", project.evaluate_args(project.root / "ref-train0", project.root / "ref-eval100",
                                          "bootstrap_samples=100"), ()),
    ):
        t0 = time.monotonic()
        done = cli(*args)
        assert done.returncode == 0, done.stderr[-3000:]
        folder = Path(args[args.index("--out") + 1])
        out[name] = (folder, fingerprint(folder, skip), time.monotonic() - t0)
    assert out["train0"][1] != out["train1"][1] and out["eval200"][1] != out["eval100"][1]
    return out


def kill_at(args: list[str], delay: float) -> int:
    """Start the CLI with ``args``, SIGKILL it after ``delay`` s (if still running); its exit status."""
    proc = subprocess.Popen([*CLI, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    return proc.returncode


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_sigkill_at_random_moments_then_a_rerun_gives_the_uninterrupted_result(project, refs, tmp_path, stage):
    """3 kills at seeded random moments in [0.3, 1.0] x an uninterrupted run's wall time, each run
    picking up after the previous kill (training resumes from its checkpoints), then a run to
    the end. After each kill the output is absent or the previous complete one; at the end it is
    identical to the uninterrupted run's. The evaluate output starts out holding another complete
    result (100 bootstrap samples), which a kill must leave in place."""
    out = tmp_path / "out"
    if stage == "train":
        args, (_, expected, seconds), skip, old = project.train_args(out, "seed=0"), refs["train0"], RUN_ONLY, None
    else:
        shutil.copytree(refs["eval100"][0], out)
        args, (_, expected, seconds) = project.evaluate_args(refs["train0"][0], out, "bootstrap_samples=200"), \
            refs["eval200"]
        skip, old = (), refs["eval100"][1]
    rng = random.Random(f"{stage}-kills")
    kills, intact = 0, 0
    for _ in range(3):
        status = kill_at(args, rng.uniform(0.3, 1.0) * seconds)
        kills += status == -signal.SIGKILL
        now = fingerprint(out, skip) if out.exists() else {}
        intact += now in ({}, old, expected)  # a model dir holding only checkpoints/ counts as absent
    final = cli(*args)
    same = final.returncode == 0 and fingerprint(out, skip) == expected
    record(f"SIGKILL {stage}", "SIGKILL at seeded random moments (3 per run, then a re-run)",
           "output absent or the previous one after each kill; the re-run's identical to an uninterrupted run"
           if same else "output differs",
           kills, kills if same and intact == 3 else 0, (3 - intact) + (not same))
    assert kills >= 1, "every run finished before its kill: raise the delays"
    assert intact == 3, "a kill left a partial output"
    assert final.returncode == 0, final.stderr[-3000:]
    assert fingerprint(out, skip) == expected
    assert not leftovers(out)


def concurrent(args_a: list[str], args_b: list[str]) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([*CLI, *a], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for a in (args_a, args_b)]
    outs = [p.communicate(timeout=900) for p in procs]
    return [subprocess.CompletedProcess(p.args, p.returncode, o, e) for p, (o, e) in zip(procs, outs, strict=True)]


def stage_pair(project: Project, refs, stage: str, out: Path) -> tuple[list[str], list[str], list[dict], tuple]:
    """Two different runs of ``stage`` into ``out`` and their uninterrupted results."""
    root = project.root
    if stage in ("validate", "pairs"):
        src = root / ("ingested" if stage == "validate" else "validated")
        key = "min_alpha" if stage == "validate" else "split_salt"
        values = ("0.3", "0.35") if stage == "validate" else ("a", "b")
        runs = [[stage, str(src), "--out", str(p), "--params", str(project.params), f"--set={key}={v}"]
                for p, v in ((out, values[0]), (out, values[1]))]
        expected = []
        for i, run in enumerate(runs):
            ref = root / f"ref-{stage}-{i}"
            if not ref.exists():
                done = cli(*[ref.as_posix() if a == str(out) else a for a in run])
                assert done.returncode == 0, done.stderr[-3000:]
            expected.append(fingerprint(ref))
        return runs[0], runs[1], expected, ()
    if stage == "train":
        return (project.train_args(out, "seed=0"), project.train_args(out, "seed=1"),
                [refs["train0"][1], refs["train1"][1]], RUN_ONLY)
    model = refs["train0"][0]
    return (project.evaluate_args(model, out, "bootstrap_samples=200"),
            project.evaluate_args(model, out, "bootstrap_samples=100"), [refs["eval200"][1], refs["eval100"][1]], ())


@pytest.mark.parametrize("stage", ["validate", "pairs", "train", "evaluate"])
def test_two_concurrent_writers_on_one_output_leave_one_complete_result(project, refs, tmp_path, stage):
    """Two runs with different settings start together on one --out: both succeed (the second waits
    for the lock) and the output is one run's complete result, not a mix."""
    out = tmp_path / "out"
    args_a, args_b, expected, skip = stage_pair(project, refs, stage, out)
    assert expected[0] != expected[1]
    done = concurrent(args_a, args_b)
    result = fingerprint(out, skip)
    whole = result in expected
    codes = [d.returncode for d in done]
    record(f"two concurrent {stage} writers", "two processes, different settings, one --out",
           f"exit codes {codes}; " + ("one complete result" if whole else "mixed result"),
           1, int(whole and codes == [0, 0]), int(not whole))
    assert whole, "the output mixes the two runs"
    assert [d.returncode for d in done] == [0, 0], [d.stderr.strip().splitlines()[-3:] for d in done]
    assert not leftovers(out)


def test_a_diverging_loss_exits_2_and_leaves_the_previous_model(project, refs, tmp_path):
    """lr = 1e30 makes the loss non-finite within a few steps: exit 2 naming the step, nothing saved
    over the previous model (the loss check of rewardline/training/loop.py)."""
    out = tmp_path / "model"
    shutil.copytree(refs["train0"][0], out)
    before = fingerprint(out)
    done = cli(*project.train_args(out, "seed=0", "lr=1e30"))
    kept = fingerprint(out) == before
    record("non-finite loss", "train.lr = 1e30 (the loss turns inf/NaN)",
           "exit 2 naming the step; previous model kept" if done.returncode == 2 and kept else "not stopped",
           1, int(done.returncode == 2 and kept), int(not kept))
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training step ") and "expected finite values" in last, last
    assert kept and not leftovers(out)


def corrupt(model: Path, dst: Path, how: str) -> Path:
    shutil.copytree(model, dst)
    if how == "truncated weights":
        weights = dst / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "no tokenizer":
        for name in ("tokenizer.json", "vocab.txt"):
            (dst / name).unlink(missing_ok=True)
    elif how == "garbage reward_config.json":
        (dst / "reward_config.json").write_text("{not json")
    return dst


@pytest.mark.parametrize("how", ["truncated weights", "no tokenizer", "garbage reward_config.json"])
def test_a_corrupt_model_folder_exits_2_naming_it_and_leaves_the_previous_report(project, refs, tmp_path, how):
    out = tmp_path / "eval"
    shutil.copytree(refs["eval200"][0], out)
    bad = corrupt(refs["train0"][0], tmp_path / "bad-model", how)
    done = cli(*project.evaluate_args(bad, out, "bootstrap_samples=200"))
    kept = fingerprint(out) == refs["eval200"][1]
    ok = done.returncode == 2 and str(bad) in done.stderr and kept
    record(f"corrupt model folder: {how}", f"evaluate --model on a copy with {how}",
           "exit 2 naming the folder; previous report kept" if ok else "not refused", 1, int(ok), int(not kept))
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and str(bad) in done.stderr
    assert kept and not leftovers(out)
