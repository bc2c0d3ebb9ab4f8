"""``dvc repro`` on a fresh copy of the project: the stages run, metrics appear, a re-run is a no-op.

Determinism at the DVC level: a forced re-run leaves every hash in dvc.lock as it was, and editing a
module only ingest imports re-runs ingest alone (its outputs come out byte-identical, so validate
and pairs see unchanged deps)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewardline.paths import STAGE_OUT

ROOT = Path(__file__).parents[1]
STAGES = ("ingest", "validate", "pairs")
STATUS_SECONDS = 15  # `dvc status` of the data stages: a few seconds (dvc's own start-up is most of it)


def project_files() -> list[str]:
    """What a fresh clone holds: tracked files plus untracked, not-ignored ones (work in progress)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("clone")
    for name in project_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=test"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "clone"], cwd=dest, check=True)
    return dest


def dvc(clone: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_dvc_repro_runs_the_data_stages_and_is_idempotent(clone: Path):
    first = dvc(clone, "repro", *STAGES)
    assert first.returncode == 0, first.stdout + first.stderr
    metrics = {s: json.loads((clone / "metrics" / f"{s}.json").read_text()) for s in STAGES}  # headline
    full = {s: json.loads((clone / STAGE_OUT[s] / "metrics.json").read_text()) for s in STAGES}
    ingest = full["ingest"]  # the headline keeps rows_in and rows_quarantined; the accounting is in the full metrics
    assert ingest["rows_in"] == ingest["rows_ok"] + ingest["rows_quarantined"] == metrics["ingest"]["rows_in"]
    assert full["ingest"]["rows_in_by_format"] == {"alpaca-eval": 1458, "hh-rlhf": 993, "rankings": 450}
    assert full["validate"]["annotators_excluded"] == ["synth-e"] and metrics["validate"]["annotators_excluded"] == 1
    assert metrics["validate"]["gates_passed"]
    assert metrics["pairs"]["pairs_train"] > metrics["pairs"]["pairs_test"] > 0
    assert (clone / "dvc.lock").exists()

    lock = (clone / "dvc.lock").read_text()
    again = dvc(clone, "repro", *STAGES)
    output = again.stdout + again.stderr
    assert again.returncode == 0 and "Running stage" not in output, output
    assert all(f"Stage '{stage}' didn't change" in output for stage in STAGES), output
    assert (clone / "dvc.lock").read_text() == lock
    started = time.perf_counter()
    status = dvc(clone, "status", *STAGES)
    status_seconds = time.perf_counter() - started
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr
    assert status_seconds < STATUS_SECONDS, f"dvc status took {status_seconds:.1f} s"

    shown = dvc(clone, "metrics", "show", "--json")
    assert shown.returncode == 0 and "krippendorff_alpha" in shown.stdout


def ran(result: subprocess.CompletedProcess) -> list[str]:
    """The stages a ``dvc repro`` ran, in order."""
    return [s for line in (result.stdout + result.stderr).splitlines() if line.startswith("Running stage ")
            for s in STAGES if f"'{s}'" in line]


@pytest.mark.slow
def test_a_rerun_keeps_every_hash_and_an_edit_reruns_only_the_stage_that_imports_it(clone: Path):
    assert dvc(clone, "repro", *STAGES).returncode == 0  # a no-op after the test above; makes this one stand alone
    lock = (clone / "dvc.lock").read_text()
    forced = dvc(clone, "repro", "--force", *STAGES)
    assert forced.returncode == 0 and ran(forced) == list(STAGES), forced.stdout + forced.stderr
    assert (clone / "dvc.lock").read_text() == lock, "a forced re-run of the data stages changed an output hash"

    storage = clone / "rewardline" / "ops" / "storage.py"  # imported by ingest only
    storage.write_text(storage.read_text() + "\n# an edit that changes nothing\n")
    try:
        edited = dvc(clone, "repro", *STAGES)
        assert edited.returncode == 0 and ran(edited) == ["ingest"], edited.stdout + edited.stderr
    finally:
        subprocess.run(["git", "checkout", str(storage.relative_to(clone))], cwd=clone, check=True)


@pytest.mark.slow
def test_a_failed_gate_stops_dvc_repro_with_the_gate_named(clone: Path):
    params = (clone / "params.yaml").read_text().replace("min_alpha: 0.4 ", "min_alpha: 0.99 ")
    (clone / "params.yaml").write_text(params)
    try:
        failed = dvc(clone, "repro", *STAGES)
        assert failed.returncode != 0
        output = failed.stderr + failed.stdout
        assert "validate gate failed" in output and "min_alpha: Krippendorff's α" in output
        assert "is not >= 0.9900" in output
    finally:
        subprocess.run(["git", "checkout", "params.yaml"], cwd=clone, check=True)
