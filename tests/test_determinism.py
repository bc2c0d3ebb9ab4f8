"""Same inputs → byte-identical outputs for the data stages, so a re-run changes no DVC hash.

The stage scripts ingest, validate and pairs run (as ``dvc repro`` runs them: ``__main__``, cwd =
project root) twice on the shipped sample, each time in a fresh directory at a different absolute
path and at a different wall-clock time; every file they write must have the same md5 both times.
A differing file names its cause: a timestamp, a random run id, an absolute path in an output.
"""

from __future__ import annotations

import hashlib
import runpy
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
STAGES = ("ingest", "validate", "pairs")
OUTPUTS = ("data/ingested", "data/validated", "data/pairs", "metrics")


def run_data_stages(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Run the data stages in ``workdir`` (sample data linked in); {relative path: md5} of every output file."""
    (workdir / "data").mkdir(parents=True)
    (workdir / "data" / "raw").symlink_to(ROOT / "data" / "raw", target_is_directory=True)
    shutil.copy2(ROOT / "params.yaml", workdir / "params.yaml")
    with monkeypatch.context() as patch:
        patch.chdir(workdir)
        for stage in STAGES:
            runpy.run_path(str(ROOT / "stages" / f"{stage}.py"), run_name="__main__")
    files = sorted(p for out in OUTPUTS for p in (workdir / out).rglob("*") if p.is_file())
    assert files, f"the stages wrote nothing under {OUTPUTS}"
    return {str(p.relative_to(workdir)): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def test_the_data_stages_write_identical_bytes_on_a_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = run_data_stages(tmp_path / "first", monkeypatch)
    validated = tmp_path / "first" / "data" / "validated"  # the report links its Data Docs relatively
    assert "](data_docs/index.html)" in (validated / "report.md").read_text()
    assert (validated / "data_docs" / "index.html").is_file()
    time.sleep(1.1)  # a second-resolution timestamp in an output would differ too
    second = run_data_stages(tmp_path / "second-run", monkeypatch)
    only_first, only_second = sorted(first.keys() - second.keys()), sorted(second.keys() - first.keys())
    differing = sorted(name for name in first.keys() & second.keys() if first[name] != second[name])
    assert not (only_first or only_second or differing), (
        f"two identical runs differ: content of {differing}; "
        f"written by the first run only: {only_first}; by the second only: {only_second}"
    )
