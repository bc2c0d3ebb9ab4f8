"""params.yaml overlays (CI's small parameter set)."""

from pathlib import Path

import pytest
import yaml

from rewardline.config import merge_params, write_overlaid_params
from rewardline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_merge_is_deep_and_replaces_leaves_and_lists():
    base = {"train": {"lr": 1e-4, "epochs": 1}, "ingest": {"sources": [1, 2]}}
    merged = merge_params(base, {"train": {"lr": 2e-3}, "ingest": {"sources": [3]}})
    assert merged == {"train": {"lr": 2e-3, "epochs": 1}, "ingest": {"sources": [3]}}
    assert base["train"]["lr"] == 1e-4  # the input is not modified


def test_ci_overlay_applies_to_the_shipped_params(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    merged = write_overlaid_params(ROOT / ".ci" / "params.yaml", params)
    on_disk = yaml.safe_load(params.read_text())
    assert on_disk == merged and on_disk["train"]["backbone"] == "tiny-bert" and on_disk["train"]["max_steps"] > 0
    assert on_disk["pairs"] == yaml.safe_load((ROOT / "params.yaml").read_text())["pairs"]


def test_overlay_with_an_unknown_key_names_it(tmp_path):
    params, overlay = tmp_path / "params.yaml", tmp_path / "overlay.yaml"
    params.write_text("train:\n  lr: 0.1\n")
    overlay.write_text("train:\n  learning_rate: 0.2\n")
    with pytest.raises(ConfigError, match="'learning_rate' is not a key of params.yaml"):
        write_overlaid_params(overlay, params)
    assert params.read_text() == "train:\n  lr: 0.1\n"  # untouched
