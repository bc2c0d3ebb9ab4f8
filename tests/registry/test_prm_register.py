"""Registering a process reward model: a real sqlite MLflow store in a temp project; a PRM whose gates
passed becomes process-reward-model @challenger tagged model_type=prm, its pyfunc model serves step scores
from the registry, it is promotable by alias; a PRM with a failed gate is not registered."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoTokenizer

from rewardline.modeling.formatting import FormatConfig
from rewardline.modeling.model import RewardModel
from rewardline.modeling.tiny import tiny_bert_path
from rewardline.paths import GATES_FILE, METRICS_FILE, PRM_EVALUATE_DIR, PRM_MODEL_DIR, REPORT_FILE
from rewardline.registry import open_registry
from rewardline.registry.base import promote
from rewardline.registry.names import PRM_MODEL_NAME
from rewardline.registry.process import register_prm


def _project(root: Path, passed: bool) -> Path:
    model = RewardModel.from_backbone(str(tiny_bert_path()), format_config=FormatConfig(max_length=64))
    model.config.step_separator, model.config.objective = "[unused0]", "prm"
    model.save(root / PRM_MODEL_DIR, AutoTokenizer.from_pretrained(tiny_bert_path()))
    out = root / PRM_EVALUATE_DIR
    out.mkdir(parents=True)
    gate = {"passed": passed, "value": 0.7, "threshold": 0.6, "op": ">=", "skipped": False, "description": "auroc",
            "reason": ""}
    (out / GATES_FILE).write_text(json.dumps({"stage": "prm_evaluate", "passed": passed,
                                              "gates": {"min_step_auroc": gate}}))
    (out / METRICS_FILE).write_text(json.dumps({"step_auroc": 0.7}))
    (out / REPORT_FILE).write_text("# PRM\n")
    return root


def test_a_passing_prm_is_registered_served_and_promotable_a_failing_one_is_not(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    root = _project(tmp_path / "project", passed=True)
    registry = open_registry(root)
    result = register_prm(root, registry)
    assert result["registered"] and result["aliases"] == ["challenger"]
    version = registry.get_version(PRM_MODEL_NAME, result["version"])
    assert version.tags["model_type"] == "prm" and version.gates_passed and version.tags["step_aggregate"] == "min"
    assert promote(registry, PRM_MODEL_NAME, result["version"]) is None
    assert registry.resolve_alias(PRM_MODEL_NAME, "champion") == result["version"]
    repeated = register_prm(root, registry)  # the same PRM again: no second version
    assert [v.version for v in registry.list_versions(PRM_MODEL_NAME)] == [result["version"]]
    assert (repeated["version"], repeated["already_registered"]) == (result["version"], True)

    import mlflow

    served = mlflow.pyfunc.load_model(f"models:/{PRM_MODEL_NAME}@champion")
    out = served.predict(pd.DataFrame({"prompt": ["2+3?"], "steps": [["2 + 3 = 5", "A: 5"]]}))
    assert len(out["step_scores"][0]) == 2 and out["reward"][0] == pytest.approx(min(out["step_scores"][0]))

    shutil.rmtree(root / PRM_EVALUATE_DIR)
    _project(tmp_path / "failing", passed=False)
    shutil.copytree(tmp_path / "failing" / PRM_EVALUATE_DIR, root / PRM_EVALUATE_DIR)
    again = register_prm(root, registry)
    assert not again["registered"] and "min_step_auroc" in again["reason"]
    assert [v.version for v in registry.list_versions(PRM_MODEL_NAME)] == [result["version"]]
