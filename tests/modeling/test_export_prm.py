"""A process reward model is saved as a standard ``*ForTokenClassification`` (labels incorrect, correct):
``softmax(logits)[1]`` at each step separator is rewardline's P(step correct), for an encoder and a decoder;
``rewardline export`` writes a PRM model card whose loading example gives the same numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.modeling.backbones import resolve_backbone
from rewardline.modeling.formatting import FormatConfig, Formatter
from rewardline.modeling.model import RewardModel
from rewardline.modeling.step_scores import score_steps
from rewardline.modeling.steps import StepFormatter, choose_separator

PROMPTS = ["What is 3 + 4, times 2?", "Tom has 5 apples and eats 2. How many are left? " * 3, "Name a prime."]
STEPS = [["3 + 4 = 7", "7 * 2 = 14", "The answer is 14"], ["5 - 2 = 3", "A: 3"], ["7 is prime"]]


def trained_looking_prm(backbone: str) -> tuple[RewardModel, object]:
    """A PRM (step separator set) with a non-trivial head: N(0, 1) weights, bias 0.3."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(backbone))
    model = RewardModel.from_backbone(backbone, format_config=FormatConfig(max_length=64)).eval()
    separator, added = choose_separator(tokenizer)
    assert not added  # the tiny vocabularies have [unused0]: no embedding resize
    model.config.step_separator, model.config.objective = separator, "prm"
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=generator))
        model.head.bias.fill_(0.3)
    return model, tokenizer


def token_classifier_step_probabilities(model_dir: Path, prompts: list[str], steps: list[list[str]]) -> list:
    """``softmax(logits)[1]`` of ``AutoModelForTokenClassification`` at the separator positions of rewardline's
    encoding of each solution (one unpadded forward pass per solution)."""
    hf = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    section = json.loads((model_dir / "config.json").read_text())["rewardline"]
    enc = StepFormatter(tokenizer, Formatter(tokenizer, FormatConfig(**section["format"])),
                        section["step_separator"]).encode(prompts, steps)
    out = []
    for ids, types, positions in zip(enc.input_ids, enc.token_type_ids, enc.positions, strict=True):
        kwargs = {"input_ids": torch.tensor([ids])}
        if hf.config.model_type == "bert":
            kwargs["token_type_ids"] = torch.tensor([types])
        with torch.no_grad():
            out.append(hf(**kwargs).logits[0].softmax(-1)[positions, 1].numpy())
    return out


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-qwen2"])
def test_auto_model_for_token_classification_gives_rewardline_step_scores(tmp_path, backbone):
    model, tokenizer = trained_looking_prm(backbone)
    model.save(tmp_path / "prm", tokenizer)
    config = json.loads((tmp_path / "prm" / "config.json").read_text())
    assert config["architectures"][0].endswith("ForTokenClassification")
    assert config["id2label"] == {"0": "incorrect", "1": "correct"}
    assert config["rewardline"]["layout"] == "token" and config["rewardline"]["step_separator"] == "[unused0]"

    in_memory = score_steps(model, tokenizer, PROMPTS, STEPS)
    loaded, loaded_tokenizer = RewardModel.load(tmp_path / "prm")
    assert loaded.config.is_process
    reloaded = score_steps(loaded, loaded_tokenizer, PROMPTS, STEPS)
    hf = token_classifier_step_probabilities(tmp_path / "prm", PROMPTS, STEPS)
    for mine, again, theirs in zip(in_memory, reloaded, hf, strict=True):
        np.testing.assert_allclose(again, mine, atol=1e-6)  # save + load keeps the step head
        assert np.abs(theirs - mine).max() <= 1e-5
    spread = np.concatenate(in_memory)
    assert spread.max() - spread.min() > 0.05  # the steps' probabilities differ by far more than the tolerance


def test_export_of_a_prm_writes_a_token_classification_card_whose_example_runs(tmp_path):
    model, tokenizer = trained_looking_prm("tiny-bert")
    model.save(tmp_path / "prm", tokenizer)
    result = CliRunner().invoke(app, ["export", "--model", str(tmp_path / "prm"), "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "hf" / "README.md").read_text()
    front = card.split("---")[1]
    assert "pipeline_tag: token-classification" in front and "- process-reward-model" in front
    assert "# Process reward model" in card and "AutoModelForTokenClassification" in card
    example = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    namespace: dict = {"MODEL": str(tmp_path / "hf")}
    exec(example, namespace)  # the card's own example: its prompt and steps
    prompt, steps = namespace["prompt"], namespace["steps"]
    expected = score_steps(*RewardModel.load(tmp_path / "prm"), [prompt], [steps])[0]
    np.testing.assert_allclose(namespace["p_correct"].numpy(), expected, atol=1e-5)
