"""The project's stage outputs the registry reads, and the *bundle*: the one directory a version holds.

The bundle is the trained model directory (a valid rewardline model dir: ``score_texts`` works on
it) with the evaluate stage's ``calibration.json`` (temperature, reward normalisation; also written
into its ``reward_config.json``), ``reference_rewards.json`` and ``evaluate_metrics.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rewardline.data.tables import content_digest, read_json
from rewardline.modeling.hf_format import RL_KEY, write_rewardline_section
from rewardline.paths import EVALUATE_DIR, METRICS_FILE, MODEL_DIR
from rewardline.registry.base import ModelRegistry, ModelVersion

#: The version tag holding :func:`bundle_digest`: registering the same bundle again reuses that version.
BUNDLE_DIGEST_TAG = "bundle_sha256"
#: The calibration a registered version carries as tags ``calibration.<key>`` (``rewardline registry`` shows them).
CALIBRATION_KEYS = ("objective", "link", "anchored", "residual_sd", "temperature")


def calibration_tags(bundle_dir: Path) -> dict[str, Any]:
    """``calibration.objective`` / ``.link`` / ``.anchored`` / ``.residual_sd`` (``reward_config.json``: the
    training objective; link probit | logit = absolute-scale rewards, served with ``win_prob`` =
    Φ(r/√(1+s²)); utilities anchored; s = residual_sd, the val rmse of the pointwise fit) and
    ``calibration.temperature`` (``calibration.json``: T of σ((r_a − r_b) / T)); absent values are left out."""
    config = read_json(bundle_dir / "reward_config.json") if (bundle_dir / "reward_config.json").exists() else {}
    calibration = read_json(bundle_dir / "calibration.json") if (bundle_dir / "calibration.json").exists() else {}
    values = {**{k: config.get(k) for k in ("objective", "link", "anchored")},
              "residual_sd": config.get("residual_sd") if config.get("link") else None,
              "temperature": calibration.get("temperature")}
    return {f"calibration.{k}": v for k, v in values.items() if v is not None}


def build_bundle(project_dir: Path | str, dst: Path) -> Path:
    """``dst`` = the trained model directory + ``calibration.json``, ``reference_rewards.json`` (when
    present) and ``evaluate_metrics.json``; ``reward_config.json`` gets the calibration's reward
    mean and std, so ``score_texts(dst)`` returns exactly what the pyfunc model serves."""
    root = Path(project_dir)
    shutil.copytree(root / MODEL_DIR, dst)
    calibration = read_json(root / EVALUATE_DIR / "calibration.json")
    (dst / "calibration.json").write_text(json.dumps(calibration, indent=2) + "\n")
    if (root / EVALUATE_DIR / "reference_rewards.json").exists():
        shutil.copyfile(root / EVALUATE_DIR / "reference_rewards.json", dst / "reference_rewards.json")
    shutil.copyfile(root / EVALUATE_DIR / METRICS_FILE, dst / "evaluate_metrics.json")
    config = json.loads((dst / "reward_config.json").read_text())
    for key in ("reward_mean", "reward_std"):
        if calibration.get(key) is not None:
            config[key] = calibration[key]
    (dst / "reward_config.json").write_text(json.dumps(config, indent=2) + "\n")
    hf_section = json.loads((dst / "config.json").read_text()).get(RL_KEY)
    if hf_section is not None:  # the standard transformers config: normalisation of the logit r − c, and T
        offset = float(hf_section.get("logit_offset") or 0.0)
        write_rewardline_section(dst, {"reward_mean": config["reward_mean"] - offset,
                                       "reward_std": config["reward_std"],
                                       "temperature": calibration.get("temperature")})
    return dst


def bundle_digest(bundle_dir: Path) -> str:
    """sha256 over the bundle's files (relative names and contents): the same trained model and evaluation give
    the same digest, whichever run built the bundle."""
    digest = hashlib.sha256()
    for file in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(bundle_dir).as_posix()}\0{content_digest(file)}\0".encode())
    return digest.hexdigest()


def register_once(registry: ModelRegistry, name: str, bundle: Path, tags: Mapping[str, Any], report: str,
                  run_id: str | None = None) -> tuple[ModelVersion, bool]:
    """``(the version, whether it was there already)``: the version of ``name`` that holds this very bundle
    (:data:`BUNDLE_DIGEST_TAG`), so that registering again (by hand, or a retried stage) adds no duplicate;
    else ``bundle`` registered as a new version with ``tags`` and ``report`` as its description."""
    digest = bundle_digest(bundle)
    found = next((v for v in registry.list_versions(name) if v.tags.get(BUNDLE_DIGEST_TAG) == digest), None)
    if found is not None:
        return found, True
    return registry.register(name, bundle, {**tags, BUNDLE_DIGEST_TAG: digest}, report, run_id=run_id), False
