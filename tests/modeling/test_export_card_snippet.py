"""The exported model card's "How to load" snippet, run as written, gives the rewards ``rewardline score`` gives, for
reward models trained elsewhere (``save_pretrained`` folders, pooling ``model``): an encoder, whose tokenizer has a
separator and no EOS (rewardline reads it in the pair layout), and a decoder (prompt + separator + response + EOS)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rewardline.cli import app

runner = CliRunner()
ROWS = [{"prompt": "Name a prime number.", "response": "7"}, {"prompt": "Name a prime number.", "response": "8"},
        {"prompt": "Say hi.", "response": "Hello there, how are you?"}]


def foreign_model(kind: str, out: Path) -> Path:
    """A seeded tiny backbone with a fresh one-output head and its tokenizer, saved as transformers saves any model."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rewardline.modeling.tiny import tiny_bert_path, tiny_qwen2_path

    backbone = tiny_bert_path() if kind == "encoder" else tiny_qwen2_path()
    torch.manual_seed(5)
    AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1).save_pretrained(out)
    AutoTokenizer.from_pretrained(backbone).save_pretrained(out)
    return out


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_the_cards_snippet_reproduces_the_scores(kind: str, tmp_path: Path) -> None:
    model = foreign_model(kind, tmp_path / "rm")
    result = runner.invoke(app, ["export", "--model", str(model), "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "hf" / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    scope = {"MODEL": str(tmp_path / "hf"), "prompts": [r["prompt"] for r in ROWS],
             "responses": [r["response"] for r in ROWS]}
    exec(snippet, scope)  # noqa: S102 - the card's own code, as a user runs it

    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    result = runner.invoke(app, ["score", "--model", str(tmp_path / "hf"), "--input", str(tmp_path / "in.jsonl"),
                                 "--out", str(tmp_path / "scored.jsonl"), "--params", "absent.yaml"])
    assert result.exit_code == 0, result.output
    scored = [json.loads(line)["reward"] for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert scope["rewards"].tolist() == pytest.approx(scored, abs=1e-5)


def test_the_card_of_a_model_trained_elsewhere_does_not_claim_rewardline_trained_it(tmp_path: Path) -> None:
    model = foreign_model("encoder", tmp_path / "rm")
    result = runner.invoke(app, ["export", "--model", str(model), "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "trained by rewardline" not in card  # was: "... trained by rewardline on annotator rankings with a BT ..."
    assert "trained elsewhere" in card and "exported by rewardline" in card
