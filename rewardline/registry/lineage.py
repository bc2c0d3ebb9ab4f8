"""Lineage as tags: git, DVC hashes, dataset sizes, backbone and gates of a project's stage outputs.

With ``git_commit`` and the ``dvc.<path>.md5`` hashes a registered version names exactly the code
and data it came from: ``git checkout <git_commit> && dvc pull`` (the ``reproduce`` tag).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rewardline.config import load_params
from rewardline.data.tables import read_json
from rewardline.errors import ConfigError
from rewardline.paths import EVALUATE_DIR, GATES_FILE, MODEL_DIR, stage_metrics
from rewardline.registry.mlflow_values import tag_value
from rewardline.registry.names import TAGS_ENV


def git_info(project_dir: Path | str = ".") -> dict[str, str]:
    """``git_commit`` (HEAD, or "unknown" outside a repository) and ``git_dirty`` ("true"/"false")."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit or "unknown", "git_dirty": "unknown" if status is None else tag_value(bool(status))}


def dvc_hashes(project_dir: Path | str = ".") -> dict[str, str]:
    """``{"dvc.<path>.md5": hash}`` of every stage output in ``dvc.lock`` and of the raw data
    (dependencies under ``data/``): with the git commit, enough to ``dvc pull`` the exact data."""
    import yaml

    lock_path = Path(project_dir) / "dvc.lock"
    if not lock_path.exists():
        return {}
    lock = yaml.safe_load(lock_path.read_text()) or {}
    out: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        entries = list(stage.get("outs") or []) + [d for d in stage.get("deps") or [] if d["path"].startswith("data/")]
        for entry in entries:
            if entry.get("md5"):
                out[f"dvc.{entry['path']}.md5"] = entry["md5"]
    return out


def gate_tags(gates: Mapping[str, Any]) -> dict[str, str]:
    """``gate.<name>.value/threshold/passed/skipped`` and ``gates_passed`` from a ``gates.json`` dict."""
    tags = {"gates_passed": tag_value(bool(gates.get("passed", False)))}
    for name, gate in (gates.get("gates") or {}).items():
        for field in ("value", "threshold", "passed", "skipped"):
            tags[f"gate.{name}.{field}"] = tag_value(gate.get(field))
    return tags


def lineage_tags(project_dir: Path | str = ".") -> dict[str, str]:
    """Tags for the pipeline run and the model version: git, DVC hashes, dataset sizes, backbone, gates."""
    root = Path(project_dir)
    git = git_info(root)
    tags: dict[str, str] = {**git, "mlflow.source.git.commit": git["git_commit"]}
    tags.update(dvc_hashes(root))
    pairs = read_json(root / stage_metrics("pairs"))
    for key in ("pairs_train", "pairs_val", "pairs_test", "prompts_train", "prompts_val", "prompts_test"):
        if key in pairs:
            tags[f"dataset.{key}"] = tag_value(pairs[key])
    ingest = read_json(root / stage_metrics("ingest"))
    for key in ("rows_ok", "rows_quarantined", "annotators"):
        if key in ingest:
            tags[f"dataset.ingest_{key}"] = tag_value(ingest[key])
    backbone = read_json(root / MODEL_DIR / "reward_config.json").get("backbone")
    if backbone is None and (root / "params.yaml").exists():
        backbone = (load_params(root / "params.yaml").get("train") or {}).get("backbone")
    tags["backbone"] = tag_value(backbone)
    tags.update(gate_tags(read_json(root / EVALUATE_DIR / GATES_FILE)))
    if git["git_commit"] != "unknown":
        tags["reproduce"] = f"git checkout {git['git_commit']} && dvc pull"
    return tags


def extra_tags_from_env() -> dict[str, str]:
    """Parent-run tags from ``REWARDLINE_MLFLOW_TAGS`` (a JSON object), e.g. set by a Prefect flow."""
    raw = os.environ.get(TAGS_ENV, "").strip()
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{TAGS_ENV} is not valid JSON: {err}") from None
    if not isinstance(tags, dict):
        raise ConfigError(f"{TAGS_ENV} must be a JSON object, got {type(tags).__name__}")
    return {str(k): tag_value(v) for k, v in tags.items()}
