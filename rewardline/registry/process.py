"""Registering a process reward model (PRM): the ``prm_register`` stage.

When every gate of ``reports/prm-evaluate/gates.json`` passed, the PRM directory (plus the evaluation's
``metrics.json`` and an empty calibration: a PRM's step scores are probabilities already) is registered as
a new version of ``prm.model_name`` (``process-reward-model``) with the alias ``challenger``, tagged
``model_type=prm``, ``step_aggregate``, ``gates_passed``, each gate's value and the lineage tags (git,
DVC hashes). People promote it like the outcome model:
``rewardline promote --name process-reward-model --version N``. Its pyfunc model takes ``{prompt, steps}``
rows and returns ``step_scores`` and ``reward`` (:class:`rewardline.registry.pyfunc.RewardScorer`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rewardline.data.tables import read_json
from rewardline.errors import ConfigError
from rewardline.paths import GATES_FILE, METRICS_FILE, PRM_EVALUATE_DIR, PRM_MODEL_DIR, REPORT_FILE, REPORTS_DIR
from rewardline.registry.base import ModelRegistry
from rewardline.registry.bundle import register_once
from rewardline.registry.lineage import git_info
from rewardline.registry.names import CHALLENGER, MODEL_TYPE_TAG, PRM_MODEL_NAME, model_uri

PRM_REGISTRATION = REPORTS_DIR / "prm-register" / "registration.json"


def prm_tags(gates: dict[str, Any], model_dir: Path) -> dict[str, str]:
    """``model_type=prm``, the step aggregate, ``gates_passed`` and ``gate.<name>.{passed,value}``."""
    config = read_json(model_dir / "reward_config.json")
    tags = {MODEL_TYPE_TAG: "prm", "step_aggregate": str(config.get("step_aggregate")),
            "step_separator": str(config.get("step_separator")), "backbone": str(config.get("backbone")),
            "gates_passed": "true" if gates.get("passed") else "false"}
    for name, gate in (gates.get("gates") or {}).items():
        tags[f"gate.{name}.passed"] = "true" if gate.get("passed") else "false"
        tags[f"gate.{name}.value"] = str(gate.get("value"))
    return tags


def register_prm(project_dir: Path | str, registry: ModelRegistry, name: str = PRM_MODEL_NAME,
                 alias: str = CHALLENGER) -> dict[str, Any]:
    """Register the PRM when its gates passed (never otherwise; a PRM registered before: its version gets the
    alias, ``already_registered``); write and return ``registration.json``."""
    root = Path(project_dir).resolve()
    gates = read_json(root / PRM_EVALUATE_DIR / GATES_FILE)
    if not gates:
        raise ConfigError(f"{root / PRM_EVALUATE_DIR / GATES_FILE} not found: run the prm_evaluate stage first")
    result: dict[str, Any] = {"model_name": name, "version": None, "aliases": [], "registered": False,
                              "tracking_uri": registry.tracking_uri}
    if gates.get("passed"):
        tags = {**prm_tags(gates, root / PRM_MODEL_DIR), **git_info(root)}
        with tempfile.TemporaryDirectory() as tmp:
            bundle = Path(tmp) / "bundle"
            shutil.copytree(root / PRM_MODEL_DIR, bundle)
            (bundle / "calibration.json").write_text("{}\n")
            shutil.copyfile(root / PRM_EVALUATE_DIR / METRICS_FILE, bundle / "evaluate_metrics.json")
            report = (root / PRM_EVALUATE_DIR / REPORT_FILE).read_text()
            version, reused = register_once(registry, name, bundle, tags, report)
        registry.set_alias(name, alias, version.version)
        result.update(version=version.version, aliases=[alias], registered=True, already_registered=reused,
                      model_uri=model_uri(name, version=version.version))
    else:
        failed = [n for n, g in (gates.get("gates") or {}).items() if not g.get("passed")]
        result["reason"] = f"gates failed: {', '.join(failed) or 'passed=false'}"
    out = root / PRM_REGISTRATION
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result
