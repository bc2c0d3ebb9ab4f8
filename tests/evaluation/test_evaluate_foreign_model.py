"""``rewardline evaluate`` on a reward model trained elsewhere: a plain ``*ForSequenceClassification`` folder
written by ``save_pretrained`` (num_labels=1, its tokenizer, no rewardline files), as README promises; its
accuracy equals the one computed by hand from ``rewardline score`` on the same rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from rewardline.cli import app

FIXTURES = Path(__file__).parents[1] / "fixtures"
RELAXED = ["--params", "absent.yaml", "--set", "min_accuracy=0", "--set", "max_ece_calibrated=1",
           "--set", "max_length_bias=1", "--set", "bootstrap_samples=200"]  # fmt: skip
runner = CliRunner()


@pytest.fixture(scope="module")
def foreign_model(tmp_path_factory) -> Path:
    """A seeded tiny BERT with a fresh one-output head and its tokenizer, saved as transformers saves any model."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from rewardline.modeling.tiny import tiny_bert_path

    out = tmp_path_factory.mktemp("foreign") / "rm"
    torch.manual_seed(3)
    BertForSequenceClassification.from_pretrained(tiny_bert_path(), num_labels=1).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_path()).save_pretrained(out)
    assert not (out / "reward_config.json").exists()
    return out


def test_evaluate_takes_a_save_pretrained_folder_and_agrees_with_score(foreign_model: Path, tmp_path: Path) -> None:
    source = FIXTURES / "rewardbench_v1.jsonl"
    result = runner.invoke(app, ["evaluate", "--model", str(foreign_model), "--data", str(source),
                                 "--out", str(tmp_path / "eval"), *RELAXED])
    assert result.exit_code == 0, result.output  # was: exit 2, "No such file or directory: .../reward_config.json"
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    rows = [orjson.loads(line) for line in source.read_bytes().splitlines() if line.strip()]
    assert metrics["data"]["rows_evaluated"] == len(rows) and metrics["n_pairs"] == len(rows)

    scored_in = [{"prompt": r["prompt"], "response": r[side]} for r in rows for side in ("chosen", "rejected")]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scored_in))
    result = runner.invoke(app, ["score", "--model", str(foreign_model), "--input", str(tmp_path / "in.jsonl"),
                                 "--out", str(tmp_path / "scored.jsonl"), "--params", "absent.yaml"])
    assert result.exit_code == 0, result.output
    reward = [json.loads(line)["reward"] for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    credit = [0.5 * (1 + np.sign(c - r)) for c, r in zip(reward[::2], reward[1::2], strict=True)]
    assert metrics["accuracy"] == pytest.approx(float(np.mean(credit)))


def test_a_model_trained_elsewhere_is_a_champion_too(foreign_model: Path, tmp_path: Path) -> None:
    """``--champion DIR`` takes what ``--model`` takes: it refused a save_pretrained folder (exit 2, "is not a reward
    model directory (no reward_config.json)"), so a public reward model could not be the baseline of the gate."""
    source = FIXTURES / "rewardbench_v1.jsonl"
    result = runner.invoke(app, ["evaluate", "--model", str(foreign_model), "--champion", str(foreign_model),
                                 "--data", str(source), "--out", str(tmp_path / "eval"), *RELAXED])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["champion_accuracy"] == pytest.approx(metrics["accuracy"])  # the same model on both sides
    missing = runner.invoke(app, ["evaluate", "--model", str(foreign_model), "--champion", str(tmp_path / "nope"),
                                  "--data", str(source), "--out", str(tmp_path / "eval2"), *RELAXED])
    assert missing.exit_code == 2 and f"--champion: {str(tmp_path / 'nope')!r}: no such model directory" \
        in missing.output, missing.output
