"""Environment faults on real processes: a full disk under ``ingest`` (a 6 MiB tmpfs in a user +
mount namespace; RLIMIT_FSIZE as well), and the S3 server stopped in the middle of an inbox
batch's multipart upload, then restarted.

The contract: exit 3 (transient / environment, rewardline/errors.py), the previous output left
whole, nothing half-written visible to readers, and a re-run once the fault is gone completes.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import S3_BUCKET, WeedProcess
from fault_log import record

from rewardline.data.synthetic import synthetic_rankings_table
from rewardline.ops import storage
from rewardline.retraining import inbox

ROOT = Path(__file__).parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "REWARDLINE_LOCK_TIMEOUT": "60"}


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def ingest_cmd(src: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "rewardline.cli", "ingest", str(src), "--out", str(out),
            "--params", str(ROOT / "nonexistent-params.yaml"), "--set", "max_quarantine_share=1"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, str]]]:
    """A small input (8k rankings, ~2 MB ingested) and a large one (20k, ~5 MB), each ingested once without faults."""
    root = tmp_path_factory.mktemp("disk")
    out = {}
    for name, n in (("small", 8_000), ("large", 20_000)):
        src = root / f"{name}.parquet"
        pq.write_table(synthetic_rankings_table(n, seed=n), src)
        done = subprocess.run(ingest_cmd(src, root / f"ref-{name}"), env=ENV, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        out[name] = (src, fingerprint(root / f"ref-{name}"))
    return out


FULL_DISK = r"""
import hashlib, json, os, shutil, subprocess, sys
disk, small, large, cmd = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", disk], check=True)
out = os.path.join(disk, "out")
def run(src):
    done = subprocess.run([a.replace("SRC", src).replace("OUT", out) for a in cmd], capture_output=True, text=True)
    return done.returncode, done.stderr.strip().splitlines()[-1:] if done.stderr.strip() else []
def fp():
    return {os.path.relpath(os.path.join(d, f), out): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, fs in os.walk(out) for f in fs}
report = {"first": run(small)}
report["old"] = fp()
report["full"] = run(large)  # the large result does not fit beside the small one
report["after_full"] = fp()
report["leftovers"] = sorted(n for n in os.listdir(disk) if n.startswith(".out.") and not n.endswith(".lock"))
shutil.rmtree(out)  # free the space: the large result alone fits
report["rerun"] = run(large)
report["final"] = fp()
print(json.dumps(report))
"""


def test_a_full_tmpfs_exits_3_and_leaves_the_previous_output(inputs, tmp_path: Path):
    """ingest into a 6 MiB tmpfs (mounted in an unprivileged user + mount namespace: ``unshare -rm``)
    that holds the small result but not the large one beside it."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unprivileged user namespaces are not available here (the RLIMIT_FSIZE test still runs)")
    disk = tmp_path / "disk"
    disk.mkdir()
    cmd = ingest_cmd(Path("SRC"), Path("OUT"))
    done = subprocess.run(["unshare", "-rm", sys.executable, "-c", FULL_DISK, str(disk), str(inputs["small"][0]),
                           str(inputs["large"][0]), json.dumps(cmd)], env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    ok = (report["full"][0] == 3 and report["after_full"] == report["old"] == inputs["small"][1]
          and not report["leftovers"])
    record("disk full (tmpfs)", "ingest into a 6 MiB tmpfs (unshare -rm) holding the old result",
           f"exit {report['full'][0]}; old output intact; re-run after freeing space completes",
           1, int(ok and report["final"] == inputs["large"][1]), int(report["after_full"] != report["old"]))
    assert report["first"][0] == 0, report
    assert report["full"][0] == 3, report  # transient / environment: retried by the flows
    assert report["full"][1][0].startswith("error: ") and "No space left on device" in report["full"][1][0], report
    assert report["after_full"] == report["old"] == inputs["small"][1]  # the previous output, whole
    assert report["leftovers"] == []  # the staging folder was removed
    assert report["rerun"][0] == 0 and report["final"] == inputs["large"][1]


def _limit_file_size(max_bytes: int):  # noqa: ANN202
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write() fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def test_a_file_size_limit_exits_3_and_leaves_the_previous_output(inputs, tmp_path: Path):
    """RLIMIT_FSIZE = 256 KiB in the child (no root, no namespace needed): its large tables fail with EFBIG."""
    out = tmp_path / "out"
    assert subprocess.run(ingest_cmd(inputs["small"][0], out), env=ENV, capture_output=True).returncode == 0
    old = fingerprint(out)
    limited = subprocess.run(ingest_cmd(inputs["large"][0], out), env=ENV, capture_output=True, text=True,
                             timeout=300, preexec_fn=_limit_file_size(256 * 1024))
    kept = fingerprint(out) == old == inputs["small"][1]
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.") and not p.name.endswith(".lock")]
    rerun = subprocess.run(ingest_cmd(inputs["large"][0], out), env=ENV, capture_output=True, text=True, timeout=300)
    record("file size limit", "RLIMIT_FSIZE 256 KiB on ingest (EFBIG)", f"exit {limited.returncode}; old output "
           "intact; re-run without the limit completes", 1,
           int(limited.returncode == 3 and kept and not left and fingerprint(out) == inputs["large"][1]), int(not kept))
    assert limited.returncode == 3, limited.stderr[-3000:]
    assert "File too large" in limited.stderr
    assert kept
    assert left == []  # the failed run removed its staging folder (not only the next run)
    assert rerun.returncode == 0 and fingerprint(out) == inputs["large"][1]


SUBMIT = """
import sys
from rewardline.ops import storage
from rewardline.retraining.inbox import write_batch
from rewardline.stage import stage_main

storage.configure(multipart_threshold=6 * storage.MIB, multipart_chunksize=5 * storage.MIB, max_concurrency=1,
                  max_attempts=3, connect_timeout=1, read_timeout=2)
samples = open(sys.argv[3], "rb").read()
stage_main(lambda: write_batch(sys.argv[1], sys.argv[2], samples))
"""


def test_s3_stopped_mid_upload_exits_3_shows_no_batch_and_a_rerun_completes(tmp_path: Path):
    """An inbox batch (40 MiB of samples: a multipart upload, then the manifest) is submitted to a
    real SeaweedFS by a child process; the server is stopped while the parts go up."""
    weed = WeedProcess(tmp_path / "weed")
    weed.data_dir.mkdir()
    samples = tmp_path / "samples.jsonl"
    line = json.dumps({"prompt": "Name a prime number.", "response": "7 " * 100}) + "\n"
    samples.write_text(line * (40 * storage.MIB // len(line)))
    uri, batch_id = f"s3://{S3_BUCKET}/inbox", "batch-s3-fault"
    env = {**ENV, **weed.env}
    env.pop("AWS_ENDPOINT_URL_S3", None)
    cmd = [sys.executable, "-c", SUBMIT, uri, batch_id, str(samples)]
    try:
        weed.start()
        client = weed.client()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if client.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads"):
                break
            time.sleep(0.05)
        time.sleep(0.3)  # a part or two on the wire
        stopped_mid_upload = proc.poll() is None
        weed.stop()
        _, stderr = proc.communicate(timeout=180)
        weed.start()  # same ports, same data dir
        with pytest.MonkeyPatch.context() as mp:
            for key, value in weed.env.items():
                mp.setenv(key, value)
            mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
            ready, skipped = inbox.discover(uri)
            manifest_visible = storage.exists(f"{uri}/{batch_id}/manifest.json")
            rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
            after, _ = inbox.discover(uri)
            uploaded = [b.read(inbox.SAMPLES) for b in after]
    finally:
        weed.stop()
    ok = proc.returncode == 3 and not ready and not manifest_visible
    complete = rerun.returncode == 0 and [b.batch_id for b in after] == [batch_id]
    record("S3 stopped mid-upload", "SeaweedFS stopped (SIGTERM) during a 40 MiB multipart batch upload, restarted",
           f"exit {proc.returncode}; no manifest, batch not ready; re-run completes", 1, int(ok and complete),
           int(bool(ready) or manifest_visible or not complete))
    assert stopped_mid_upload, "the upload finished before the server was stopped"
    assert proc.returncode == 3, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("error: "), stderr[-2000:]
    assert not ready and not manifest_visible  # readers see no batch: the manifest is written last
    assert [s.batch_id for s in skipped] in ([], [batch_id])  # at most a "no manifest yet" entry
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert uploaded == [samples.read_bytes()]
