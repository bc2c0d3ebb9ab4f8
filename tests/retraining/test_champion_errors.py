"""A champion the drift check cannot use exits 2 naming the champion and its file, not a vanished temporary path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import register_tiny_bundle, save_tiny_reward_model

from rewardline.errors import EXIT_BAD_INPUT, ModelLoadError, exit_code
from rewardline.retraining import cycle as rt
from rewardline.retraining import inbox

BATCH = Path(__file__).parents[1] / "fixtures" / "fresh_batches" / "batch-01-in-distribution"


def test_a_registered_champion_without_the_register_stages_records_names_itself(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    """A bundle registered without reference_rewards.json failed with "error: [Errno 2] No such file or directory:
    '/tmp/rewardline-champion-.../registry/data/bundle/reference_rewards.json'" (exit 2 but no champion named)."""
    from rewardline.registry import open_registry
    from rewardline.registry.names import CHAMPION, MODEL_NAME

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    register_tiny_bundle(tmp_path, seed=3)
    open_registry().set_alias(MODEL_NAME, CHAMPION, "1")
    with pytest.raises(ModelLoadError) as err:
        rt.load_champion(tmp_path, {}, rt.RetrainConfig(), tmp_path / "download")
    assert str(err.value) == ("champion models:/reward-model@champion (version 1) is not usable: no "
                              "reference_rewards.json; move the alias to a version that is (rewardline promote "
                              "--version N)")
    assert exit_code(err.value) == EXIT_BAD_INPUT


def test_champion_weights_that_do_not_load_name_the_champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The project's model as champion (nothing registered), its weights truncated: the scoring's ModelLoadError
    named only the copy in the run's temporary directory."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")  # never written: nothing registered
    project = tmp_path / "project"
    model = save_tiny_reward_model(tmp_path, max_length=64)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    (project / "models").mkdir(parents=True)
    model.rename(project / "models/reward-model")
    report = project / "reports/evaluate"
    report.mkdir(parents=True)
    (report / "reference_rewards.json").write_text(json.dumps({"rewards": [0.1, 0.2, 0.3]}))
    (report / "metrics.json").write_text(json.dumps({"accuracy": 0.6}))
    champion = rt.load_champion(project, {}, rt.RetrainConfig(), tmp_path / "download")
    batch = inbox.write_batch(str(tmp_path / "inbox"), "b1", (BATCH / "samples.jsonl").read_bytes())
    with pytest.raises(ModelLoadError) as err:
        rt.check_drift(batch, champion, None, rt.RetrainConfig(drift_permutations=0))
    message = str(err.value)
    assert message.startswith("champion models/reward-model (no models:/reward-model@champion registered) is not "
                              "usable: model.safetensors: unreadable"), message
    assert str(tmp_path / "download") not in message and message.endswith("(rewardline promote --version N)")
