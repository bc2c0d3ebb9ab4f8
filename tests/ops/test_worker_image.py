"""The worker image is a checkout of the repository (Docker does not run here: the Dockerfile and the
build context's ``.dockerignore`` are checked, not built): ``.git`` and ``.dvc/config`` are in, every file
``dvc repro`` reads is in, environments, caches and pipeline outputs are out."""

from __future__ import annotations

import fnmatch
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "infra" / "docker" / "worker.Dockerfile"


def _ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _excluded(path: str, patterns: list[str]) -> bool:
    """Docker's rule for these patterns: a pattern matches the path or one of its parent folders."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.rstrip("/")
        if bare.startswith("**/"):
            if any(fnmatch.fnmatch(p, bare[3:]) for p in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, bare) for prefix in prefixes):
            return True
    return False


def test_the_image_copies_the_whole_checkout_with_git():
    text = DOCKERFILE.read_text()
    assert "\nCOPY . .\n" in text
    assert "install -y --no-install-recommends git" in text
    assert "git rev-parse --verify HEAD" in text and "test -f .dvc/config" in text  # the build fails without them
    compose = yaml.safe_load((ROOT / "infra" / "docker-compose.yml").read_text())
    build = compose["x-worker"]["build"]
    assert (ROOT / "infra" / build["context"]).resolve() == ROOT
    assert build["dockerfile"] == "infra/docker/worker.Dockerfile"


def test_dockerignore_keeps_what_dvc_repro_needs_and_drops_local_state():
    patterns = _ignore_patterns()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    kept = {".git/HEAD", ".dvc/config", "dvc.yaml", "dvc.lock", "params.yaml", "prefect.yaml", "pyproject.toml",
            "requirements/constraints.txt"}
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    outputs = {next(iter(o)) if isinstance(o, dict) else o for s in spec["stages"].values() for o in s.get("outs", [])}
    deps = {d for s in spec["stages"].values() for d in s["deps"]} - outputs
    needed = kept | {f for f in tracked for d in deps if f == d or f.startswith(d.rstrip("/") + "/")}
    assert not [f for f in sorted(needed) if _excluded(f, patterns)]
    assert {"data/raw/hh_rlhf_harmless.jsonl", "stages/train.py", "rewardline/training/loop.py"} <= needed
    assert not _excluded("flows/retrain.py", patterns)
    dropped = [".venv/bin/python", ".dvc/cache/files/md5/00/x", ".dvc/config.local", "dvc-remote/files/md5/00/x",
               "mlflow.db", "data/pairs/train.parquet", "models/reward-model/model.safetensors", ".stack/x",
               "rewardline/__pycache__/x.pyc", "infra/.env"]
    assert [f for f in dropped if not _excluded(f, patterns)] == []
