"""``dvc exp run`` and ``dvc push`` / ``pull`` on a fresh clone of the project (an empty DVC cache).

The clone holds what git holds: ``dvc.lock`` names outputs of every stage, none of them in the cache.
``dvc exp run -S pairs.ties=half pairs`` must run the stages up to ``pairs`` and exit 0 (it failed with
"failed to load directory ('reports', 'evaluate')" while top-level plots pointed inside that cached
directory). Then the outputs go to the shipped default remote (a local folder, ``.dvc/config``) and to
S3 (a real SeaweedFS, the remote overridden in ``.dvc/config.local``), and come back byte-identical after
the data and the cache are deleted. Slow: it runs ingest, validate and pairs through DVC."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rewardline.paths import INGESTED_DIR, PAIRS_DIR, VALIDATED_DIR

ROOT = Path(__file__).parents[1]
DATA_OUTS = (INGESTED_DIR, VALIDATED_DIR, PAIRS_DIR)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for out in DATA_OUTS for p in sorted((root / out).rglob("*")) if p.is_file()}


def _dvc(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {}), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=repo, env=full,
                          capture_output=True, text=True, timeout=900)


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"{done.args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git clone of the committed project plus the work tree's changes (tracked and untracked, not ignored)."""
    dest = tmp_path_factory.mktemp("fresh") / "repo"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=test"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "clone"], cwd=dest, check=True)
    assert not (dest / ".dvc" / "cache").exists()
    return dest


@pytest.mark.slow
def test_exp_run_up_to_a_stage_on_a_fresh_clone_then_push_and_pull(fresh_clone: Path, s3_server) -> None:
    ran = _dvc(fresh_clone, "exp", "run", "-S", "pairs.ties=half", "-n", "ties-half", "pairs")
    _ok(ran)
    assert "failed to load directory" not in ran.stderr
    shown = json.loads(_ok(_dvc(fresh_clone, "exp", "show", "--json")))
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    params = {exp["name"]: exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["pairs"]["ties"]
              for exp in experiments}
    assert params == {"ties-half": "half"}, params
    pairs = json.loads((fresh_clone / "metrics" / "pairs.json").read_text())
    assert pairs["pairs_train"] > 0
    produced = _files(fresh_clone)
    assert any(name.startswith(PAIRS_DIR.as_posix()) for name in produced)

    # the shipped default remote: a folder under the project, offline
    _ok(_dvc(fresh_clone, "push", "--with-deps", "pairs"))
    assert (fresh_clone / "dvc-remote" / "files" / "md5").is_dir()
    _round_trip(fresh_clone, produced)

    # S3 (SeaweedFS), set as the default in .dvc/config.local: .dvc/config stays as shipped
    shipped = (fresh_clone / ".dvc" / "config").read_text()
    _ok(_dvc(fresh_clone, "remote", "add", "--local", "-d", "s3", f"s3://{s3_server.bucket}/dvc-exp"))
    _ok(_dvc(fresh_clone, "remote", "modify", "--local", "s3", "endpointurl", s3_server.endpoint_url))
    assert (fresh_clone / ".dvc" / "config").read_text() == shipped
    env = {k: v for k, v in s3_server.env.items() if k != "AWS_ENDPOINT_URL"}
    _ok(_dvc(fresh_clone, "push", "--with-deps", "pairs", env=env))
    shutil.rmtree(fresh_clone / "dvc-remote")  # the pull below can only come from S3
    _round_trip(fresh_clone, produced, env)


def _round_trip(repo: Path, produced: dict[str, bytes], env: dict[str, str] | None = None) -> None:
    """Delete the data outputs and the cache, ``dvc pull`` them back, compare bytes."""
    for out in DATA_OUTS:
        shutil.rmtree(repo / out)
    shutil.rmtree(repo / ".dvc" / "cache")
    _ok(_dvc(repo, "pull", "--with-deps", "pairs", env=env))
    assert _files(repo) == produced
