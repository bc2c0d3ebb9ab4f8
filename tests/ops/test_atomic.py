"""Atomic, locked outputs with real processes: concurrent ingests never mix, a SIGKILL at any
moment leaves the old or the new complete result, concurrent ledger writers lose no event,
written files get the usual modes, a symlink loop is named."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rewardline.data import schema
from rewardline.data.synthetic import synthetic_rankings_table
from rewardline.data.tables import table_path, table_rows
from rewardline.errors import BadInput
from rewardline.ops import atomic, storage
from rewardline.retraining.ledger import Ledger

ROOT = Path(__file__).parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "REWARDLINE_LOCK_TIMEOUT": "120"}


def ingest_cmd(src: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "rewardline.cli", "ingest", str(src), "--out", str(out),
            "--set", "max_quarantine_share=1"]


def ingest(src: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(ingest_cmd(src, out), env={**ENV, **env}, capture_output=True, text=True, timeout=120)


def fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path: equal fingerprints = identical results."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_complete(folder: Path) -> None:
    """Every table readable and metrics.json consistent with the tables' row counts."""
    metrics = json.loads((folder / "metrics.json").read_text())
    rows = {name: table_rows(table_path(folder, name)) for name in schema.RANKING_TABLES}
    rows["quarantine"] = table_rows(folder / schema.QUARANTINE_FILE)
    assert (rows["prompts"], rows["responses"], rows["rankings"], rows["quarantine"]) == (
        metrics["prompts"], metrics["responses"], metrics["ranked_rows"], metrics["rows_quarantined"])
    assert json.loads((folder / "gates.json").read_text())


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and not p.name.endswith(".lock")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, str], float]]:
    """Two inputs (a: 20k rankings, b: 40k, ~1-3 s to ingest): each one's uninterrupted result and wall time."""
    root = tmp_path_factory.mktemp("inputs")
    out: dict[str, tuple[Path, dict[str, str], float]] = {}
    for name, n, seed in (("a", 20_000, 1), ("b", 40_000, 2)):
        src = root / f"{name}.parquet"
        pq.write_table(synthetic_rankings_table(n, seed=seed), src)
        ref = root / f"ref-{name}"
        t0 = time.monotonic()
        done = ingest(src, ref)
        assert done.returncode == 0, done.stderr
        assert_complete(ref)
        out[name] = (src, fingerprint(ref), time.monotonic() - t0)
    assert out["a"][1] != out["b"][1]
    return out


def test_two_concurrent_ingests_into_one_out_never_mix(runs, tmp_path: Path):
    """Both start together; the second waits for the lock, then publishes its own complete result."""
    out = tmp_path / "X"
    procs = [subprocess.Popen(ingest_cmd(runs[n][0], out), env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for n in ("a", "b")]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0], [p.stderr.read() for p in procs]
    assert fingerprint(out) in (runs["a"][1], runs["b"][1])  # one complete result, not a mix
    assert_complete(out)
    assert not leftovers(out)


def test_a_held_lock_makes_the_second_writer_exit_3_naming_the_holder(runs, tmp_path: Path):
    out = tmp_path / "X"
    assert ingest(runs["a"][0], out).returncode == 0
    with atomic.exclusive(out):
        t0 = time.monotonic()
        blocked = ingest(runs["b"][0], out, REWARDLINE_LOCK_TIMEOUT="0.5")
        assert time.monotonic() - t0 < 60
    assert blocked.returncode == 3  # transient: another writer holds the output
    assert f"is locked by pid {os.getpid()} on host" in blocked.stderr and "REWARDLINE_LOCK_TIMEOUT" in blocked.stderr
    assert fingerprint(out) == runs["a"][1]  # untouched


def _kill_at(cmd: list[str], out: Path, delay: float, after_first_table: bool) -> None:
    """Start ``cmd``; SIGKILL it ``delay`` s after start, or after its staging folder holds a table."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while after_first_table and proc.poll() is None and time.monotonic() - t0 < 60:
        # a part of the first partitioned table (prompts/part-000.parquet) or a one-file table
        if any(any(p.rglob("*.parquet")) for p in out.parent.glob(f".{out.name}.staging-*")):
            break
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def test_sigkill_at_any_moment_leaves_the_old_or_the_new_complete_result(runs, tmp_path: Path):
    """8 kills: 4 at random times around 0.15, 0.45, 0.75 and 1.5 x an uninterrupted run's time,
    4 at random times in [0, 0.3] s once the staging folder holds a table (mid-write)."""
    out = tmp_path / "X"
    (src_a, old, _), (src_b, new, duration) = runs["a"], runs["b"]
    rng = random.Random(12)
    outcomes = []
    assert ingest(src_a, out).returncode == 0  # an old complete result to protect
    for i in range(8):
        mid_write = i % 2 == 1
        delay = rng.uniform(0, 0.3) if mid_write else (0.15, 0.45, 0.75, 1.5)[i // 2] * rng.uniform(0.8, 1.2) * duration
        _kill_at(ingest_cmd(src_b, out), out, delay, mid_write)
        result = fingerprint(out)
        assert result in (old, new), f"kill {i} after {delay:.2f} s: a mixed result"
        assert_complete(out)
        outcomes.append((mid_write, bool(leftovers(out)), result == new))
        if result == new:
            assert ingest(src_a, out).returncode == 0  # back to the old result for the next kill
    rerun = ingest(src_b, out)
    assert rerun.returncode == 0, rerun.stderr
    assert fingerprint(out) == new  # identical to an uninterrupted run
    assert not leftovers(out)  # the killed runs' staging folders were removed
    assert any(mid and staged and not published for mid, staged, published in outcomes), outcomes


def test_a_killed_run_between_the_fallback_renames_is_put_back(tmp_path: Path):
    """Without RENAME_EXCHANGE, out is renamed aside then replaced; a kill in between leaves only the
    aside folder: the next writer renames it back before anything else (and removes stale staging)."""
    out = tmp_path / "X"
    aside, staging = tmp_path / ".X.old-dead", tmp_path / ".X.staging-dead"
    aside.mkdir()
    (aside / "metrics.json").write_text("{}")
    staging.mkdir()
    with atomic.exclusive(out):
        atomic.clean_leftovers(out)
    assert (out / "metrics.json").read_text() == "{}" and not aside.exists() and not staging.exists()
    for exchange in (True, False):
        new = tmp_path / f".X.staging-{exchange}"
        new.mkdir()
        (new / "metrics.json").write_text(json.dumps({"exchange": exchange}))
        atomic.publish(new, out, exchange=exchange)
        assert json.loads((out / "metrics.json").read_text()) == {"exchange": exchange}
        assert sorted(p.name for p in tmp_path.iterdir()) == [".X.lock", "X"]  # nothing else left


def test_a_failed_stage_leaves_the_old_output_untouched(tmp_path: Path):
    out = tmp_path / "X"
    with atomic.staged_output(out) as staging:
        (staging / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic.staged_output(out) as staging:
        (staging / "a.txt").write_text("half")
        raise RuntimeError("stage failed")
    assert (out / "a.txt").read_text() == "old" and not leftovers(out)


def test_an_out_that_is_a_file_is_refused_and_left_in_place(runs, tmp_path: Path):
    """``--out`` naming an existing file: exit 2 naming it, before any work; the file keeps its name and content
    (publishing used to swap it into a hidden ``.<name>.staging-*`` and then fail on it: exit 2, the file hidden)."""
    out = tmp_path / "scores.jsonl"
    out.write_text('{"keep": 1}\n')
    with pytest.raises(BadInput, match="scores.jsonl: exists and is not a directory"), \
            atomic.staged_output(out) as staging:
        (staging / "metrics.json").write_text("{}")
    done = ingest(runs["a"][0], out)
    assert done.returncode == 2, done.stderr
    assert f"{out}: exists and is not a directory; expected an output directory" in done.stderr
    assert out.read_text() == '{"keep": 1}\n' and not leftovers(out)


def test_the_working_directory_or_a_folder_holding_it_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Was: `--out $PWD` replaced the working directory with the output, its files gone (exit 0); `--out .` ran the
    stage and failed to publish, exit 3 '[Errno 16] Device or resource busy: '..staging-XXXX' -> '.''."""
    here = tmp_path / "work"
    here.mkdir()
    (here / "notes.txt").write_text("mine")
    monkeypatch.chdir(here)
    for out in (Path("."), here, tmp_path):
        with pytest.raises(BadInput, match="is or holds the working directory"), atomic.staged_output(out):
            pass
    assert (here / "notes.txt").read_text() == "mine" and sorted(p.name for p in here.iterdir()) == ["notes.txt"]
    with atomic.staged_output(here / "out") as staging:  # below it: fine
        (staging / "a.txt").write_text("new")
    assert (here / "out" / "a.txt").read_text() == "new"


def unwritable_places(tmp_path: Path) -> list[tuple[Path, str]]:
    """Folders this user cannot create files in, each with the reason the message gives: below a regular file, /proc
    (ENOENT, root included) and, when not root (root ignores modes), a folder of mode 0500."""
    (tmp_path / "a-file").write_text("")
    places = [(tmp_path / "a-file" / "sub", f"{tmp_path / 'a-file'} is not a directory")]
    if Path("/proc/self").is_dir():
        places.append((Path("/proc"), "cannot create files in /proc (No such file or directory)"))
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o500)
        places.append((tmp_path / "ro", f"cannot create files in {tmp_path / 'ro'} (Permission denied)"))
    return places


def test_an_out_this_user_cannot_write_exits_2_at_once_naming_it(tmp_path: Path):
    """Was: `rewardline ingest SRC --out /proc/x` waited out the lock timeout, then exited 3 'locked by an unknown
    process'; an --out below a file or in a folder without write permission exited 3 with a bare '[Errno 17] File
    exists' / '[Errno 13] Permission denied' (transient: a retry fails the same). Now exit 2 before any work."""
    from rewardline.errors import exit_code

    src = tmp_path / "src.jsonl"
    src.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")  # never read
    expected = "expected a directory this user can write"
    for folder, why in unwritable_places(tmp_path):
        out = folder / "rl-out"
        t0 = time.monotonic()
        with pytest.raises(BadInput, match=re.escape(f"output {out}: {why}; {expected}")), \
                atomic.staged_output(out, timeout=5):
            pass
        lock_refused = f"ledger {re.escape(str(out))}: cannot create its lock file .*; {expected}"
        with pytest.raises(BadInput, match=lock_refused), atomic.exclusive(out, timeout=5, what="ledger"):
            pass
        with pytest.raises(BadInput, match=re.escape(f"output {out}.jsonl: {why}; {expected}")) as caught:
            storage.write_bytes(f"{out}.jsonl", b"{}\n")  # score's, rerank's files
        assert exit_code(caught.value) == 2 and time.monotonic() - t0 < 4  # no wait for a lock
        done = ingest(src, out)
        assert done.returncode == 2, done.stderr
        assert f"error: output {out}: {why}; {expected}" in done.stderr


def test_an_s3_out_of_a_stage_exits_2_naming_the_url_and_makes_no_local_folder(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch):
    """Was: `rewardline ingest SRC --out s3://bucket/out/ing` (the CLI's Path made it s3:/bucket/out/ing) created
    ./s3:/bucket/out/.ing.lock in the working directory, ingested, then exited 2 with pyarrow's 'Missing bucket name
    in S3 URI'. A stage's --out is a local directory: a URL is refused before any work, naming it."""
    monkeypatch.chdir(tmp_path)  # the old code made ./s3:/bucket/out/ here
    src = tmp_path / "src.jsonl"
    src.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    expected = ("output s3://bucket/out/ing is a URL: a stage writes a local directory (published by a rename; "
                "`dvc push` copies stage outputs to the S3 remote); expected a local --out")
    for given in ("s3://bucket/out/ing", Path("s3://bucket/out/ing")):
        with pytest.raises(BadInput, match=re.escape(expected)), atomic.staged_output(given, timeout=5):
            pass
    cmd = [arg if arg != str(tmp_path / "unused") else "s3://bucket/out/ing" for arg in ingest_cmd(src, tmp_path /
                                                                                                    "unused")]
    done = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"error: {expected}" in done.stderr
    assert not (tmp_path / "s3:").exists()
    with atomic.staged_output(tmp_path / "s3-out" / "x", timeout=5) as staging:  # a local name is still fine
        (staging / "f").write_text("x")


def test_carried_entries_of_the_old_output_move_into_the_new_one(tmp_path: Path):
    """Training keeps its checkpoints inside the model dir (keep_checkpoints) across the swap."""
    out = tmp_path / "model"
    (out / "checkpoints" / "step-00000002").mkdir(parents=True)
    (out / "old-weights.bin").write_text("old")
    with atomic.staged_output(out, carry=(out / "checkpoints", tmp_path / "elsewhere")) as staging:
        (staging / "weights.bin").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "weights.bin"]
    assert (out / "checkpoints" / "step-00000002").is_dir()


LEDGER_WRITER = """
import sys
from pathlib import Path
from rewardline.retraining.ledger import Ledger
ledger = Ledger(Path(sys.argv[1]))
for i in range(200):
    ledger.record(f"writer-{sys.argv[2]}", "hash", "started", seq=i)
"""


def test_two_processes_appending_200_ledger_events_each_keep_all_400(tmp_path: Path):
    path = tmp_path / "retrain" / "ledger.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", LEDGER_WRITER, str(path), w], env=ENV, stderr=subprocess.PIPE)
             for w in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    events = Ledger(path).events()
    assert len(events) == 400
    for w in ("a", "b"):
        assert [e["seq"] for e in events if e["batch_id"] == f"writer-{w}"] == list(range(200))


@pytest.fixture
def umask() -> Iterator[None]:
    before = os.umask(0o022)
    yield
    os.umask(before)


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_written_files_get_the_umask_mode_not_0600(tmp_path: Path, mask: int):
    os.umask(mask)
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    storage.write_bytes(str(tmp_path / "a" / "ledger.jsonl"), b"{}\n")
    storage.upload_file(tmp_path / "a" / "ledger.jsonl", str(tmp_path / "b.jsonl"))
    storage.download_file(str(tmp_path / "b.jsonl"), tmp_path / "c.jsonl")
    for name in ("a/ledger.jsonl", "b.jsonl", "c.jsonl"):
        assert (tmp_path / name).stat().st_mode & 0o777 == file_mode, name
    Ledger(tmp_path / "d" / "ledger.jsonl").record("batch-1", "h", "started")
    assert (tmp_path / "d" / "ledger.jsonl").stat().st_mode & 0o777 == file_mode
    with atomic.staged_output(tmp_path / "out") as staging:
        (staging / "metrics.json").write_text("{}")
    assert (tmp_path / "out").stat().st_mode & 0o777 == dir_mode


def test_a_symlink_loop_is_named(tmp_path: Path):
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(storage.StorageError, match="symlink loop at .*loop"):
        storage.list_files(str(tmp_path / "loop"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_text("{}\n")
    (tmp_path / "d" / "self").symlink_to("self")
    with pytest.raises(storage.StorageError, match="symlink loop at .*self"):
        storage.list_files(str(tmp_path / "d"))
    (tmp_path / "d" / "self").unlink()
    (tmp_path / "d" / "dangling").symlink_to("nowhere")  # skipped, as before
    assert storage.list_files(str(tmp_path / "d")) == [str(tmp_path / "d" / "a.jsonl")]
    with pytest.raises(storage.StorageError, match="no such file or directory"):
        storage.list_files(str(tmp_path / "absent"))
