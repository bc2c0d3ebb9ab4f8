"""`rewardline score` in a subprocess: malformed rows and broken model directories exit 2 with one line;
the model loading checks of RewardModel.load (score, evaluate and the pyfunc model share them)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny_reward_model
from safetensors.torch import load_file, save_file

from rewardline.errors import ModelLoadError, NonFiniteError
from rewardline.modeling.model import RewardModel
from rewardline.modeling.score import score_texts

ROOT = Path(__file__).parents[2]
GOOD_ROW = {"prompt": "what is a cat", "response": "a small animal"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_reward_model(tmp_path_factory.mktemp("score-cli"), max_length=40)


def broken_copy(model_dir: Path, dest: Path) -> Path:
    shutil.copytree(model_dir, dest)
    return dest


def score_cli(model: Path, rows: Path, out: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HOME": str(out.parent)}
    return subprocess.run([sys.executable, "-m", "rewardline.cli", "--json", "score", "--model", str(model),
                           "--input", str(rows),
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)


MALFORMED = {
    "missing field": ('{"prompt": "hi"}', "field 'response': missing; expected a string"),
    "null response": ('{"prompt": "hi", "response": null}', "field 'response': expected a string, got null"),
    "number response": ('{"prompt": "hi", "response": 3}', "field 'response': expected a string, got a number"),
    "non-object line": ("[1, 2]", "expected a JSON object {prompt, response}, got an array"),
    "invalid JSON": ('{"prompt": "hi",',
                     "not valid JSON (Expecting property name enclosed in double quotes at column 17)"),
    "null prompt": ('{"prompt": null, "response": "x"}',
                    "field 'prompt': expected a string or a list of {role, content} messages, got null"),
    "message without content": ('{"prompt": [{"role": "user"}], "response": "x"}',
                                "field 'prompt[0].content': expected a string, got nothing (missing)"),
    "unknown role": ('{"prompt": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}], '
                     '"response": "x"}',  # was scored, rendered as a "Robot:" turn; ingest quarantines it
                     "field 'prompt[1].role': expected one of assistant, system, user, got 'robot'"),
    # a JSON \\u escape of half a surrogate pair: was "internal error: TypeError: TextEncodeInput ...", exit 3
    "lone surrogate in the response": ('{"prompt": "hi", "response": "ab\\ud800"}',
                                       "field 'response': not valid Unicode (a lone surrogate \\ud800 at character "
                                       "2); expected text that UTF-8 can encode"),
    "lone surrogate in a message": ('{"prompt": [{"role": "user", "content": "\\udfff"}], "response": "x"}',
                                    "field 'prompt[0].content': not valid Unicode (a lone surrogate \\udfff at "
                                    "character 0); expected text that UTF-8 can encode"),
    # were scored (the server refused ""): an empty prompt, as ingest quarantines it and the server refuses it
    "empty prompt": ('{"prompt": "", "response": "x"}',
                     "field 'prompt': empty prompt text; expected a non-empty string"),
    "blank prompt": ('{"prompt": " \\n ", "response": "x"}',
                     "field 'prompt': empty prompt text; expected a non-empty string"),
    "empty message": ('{"prompt": [{"role": "user", "content": ""}], "response": "x"}',
                      "field 'prompt': empty prompt text; expected a non-empty string"),
    "lone surrogate in the prompt": ('{"prompt": "\\ud83d", "response": "x"}',
                                     "field 'prompt': not valid Unicode (a lone surrogate \\ud83d at character 0); "
                                     "expected text that UTF-8 can encode"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_row_exits_2_naming_file_line_and_field(model_dir: Path, tmp_path: Path, case: str):
    line, message = MALFORMED[case]
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps(GOOD_ROW) + "\n\n" + line + "\n" + json.dumps(GOOD_ROW) + "\n")  # line 3
    run = score_cli(model_dir, rows, tmp_path / "out.jsonl")
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [f"error: {rows}:3: {message}"]  # one line, no traceback
    assert not (tmp_path / "out.jsonl").exists()


def test_broken_model_directories_exit_2_naming_the_file(model_dir: Path, tmp_path: Path):
    no_tokenizer = broken_copy(model_dir, tmp_path / "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (no_tokenizer / name).unlink(missing_ok=True)
    pickle_only = broken_copy(model_dir, tmp_path / "pickle-only")
    torch.save(load_file(pickle_only / "model.safetensors"), pickle_only / "pytorch_model.bin")
    (pickle_only / "model.safetensors").unlink()
    truncated = broken_copy(model_dir, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps(GOOD_ROW) + "\n")
    expected = {
        no_tokenizer: f"error: {no_tokenizer}: no tokenizer files; expected one of tokenizer.json, vocab.txt",
        pickle_only: f"error: {pickle_only}/model.safetensors: missing (only pickle weights (pytorch_model.bin), "
                     "which are never loaded); expected safetensors weights",
        truncated: f"error: {weights}: unreadable (Error while deserializing header",
    }
    for model, start in expected.items():
        run = score_cli(model, rows, tmp_path / "out.jsonl")
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(start), run.stderr
    good = score_cli(model_dir, rows, tmp_path / "out.jsonl")  # the same rows score with the intact directory
    assert good.returncode == 0, good.stderr
    [scored] = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert np.isfinite(scored["reward"]) and json.loads(good.stdout)["rows_scored"] == 1


def test_a_model_reference_that_is_neither_a_directory_nor_a_hub_model_says_so(tmp_path: Path):
    """A path that does not exist used to surface the Hub's repo-id validation ("Repo id must use
    alphanumeric chars ...") or its connection error as if a file were unreadable; a mistyped registry URI
    (``model:/``) was called "no such directory"."""
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps(GOOD_ROW) + "\n")
    expected = "expected a model directory (the output of `rewardline train` or `rewardline export`), a " \
               "Hugging Face model id (org/name) or a registry URI (models:/NAME@ALIAS, models:/NAME/VERSION)"
    not_an_id = tmp_path / "no-such-model"  # absolute: no Hub id has that shape
    run = score_cli(not_an_id, rows, tmp_path / "out.jsonl")
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [f"error: {not_an_id}: no such directory; {expected}"]
    id_shaped = Path("models/no-such-model")  # relative, and a valid Hub id: tried there (offline in tests)
    run = score_cli(id_shaped, rows, tmp_path / "out.jsonl")
    assert run.returncode == 2, run.stderr
    [line] = run.stderr.strip().splitlines()
    assert line.startswith(f"error: {id_shaped}: no such directory, and not in the local Hugging Face cache, and "
                           "HF_HUB_OFFLINE is set") and line.endswith(expected), line
    mistyped = "model:/reward-model@champion"  # a URI in a scheme the registry does not read: no "no such directory"
    run = score_cli(Path(mistyped), rows, tmp_path / "out.jsonl")
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"error: {mistyped}: 'model' is not a scheme rewardline reads; {expected}"]
    assert not (tmp_path / "out.jsonl").exists()


def test_a_hub_model_that_cannot_be_fetched_says_why_with_the_contract_exit_code(model_dir: Path, tmp_path: Path):
    """A Hub id with no cached copy: offline (HF_HUB_OFFLINE) is bad input (exit 2) saying so, for `score --model`
    and for `train`'s backbone; the Hub unreachable (a closed local port as HF_ENDPOINT: a real refused connection)
    is transient (exit 3: the flows retry it). Both used to exit 2 with the Hub's "couldn't connect" text."""
    import socket

    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps(GOOD_ROW) + "\n")
    offline = score_cli(Path("org/no-such-model"), rows, tmp_path / "out.jsonl")
    assert offline.returncode == 2, offline.stderr
    assert offline.stderr.strip().splitlines()[-1].startswith(
        "error: org/no-such-model: no such directory, and not in the local Hugging Face cache, and HF_HUB_OFFLINE is "
        "set (`hf download org/no-such-model` once online); expected a model directory"), offline.stderr
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    train = subprocess.run([sys.executable, "-m", "rewardline.cli", "train", "--data", str(tmp_path / "pairs"),
                            "--out", str(tmp_path / "model"), "--set", "backbone=org/no-such-model"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert train.returncode == 2 and train.stderr.strip().splitlines()[-1].startswith(
        "error: field 'backbone': expected a model directory, a Hugging Face model id (org/name) or one of "), \
        train.stderr
    assert "got 'org/no-such-model': not in the local Hugging Face cache, and HF_HUB_OFFLINE is set" in train.stderr
    with socket.socket() as probe:  # a local port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**env, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{port}",
           "HF_HOME": str(tmp_path / "hf")}
    down = subprocess.run([sys.executable, "-m", "rewardline.cli", "score", "--model", "org/no-such-model", "--input",
                           str(rows), "--out", str(tmp_path / "out.jsonl")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert down.returncode == 3, down.stderr
    last = down.stderr.strip().splitlines()[-1]
    assert last.startswith("error: org/no-such-model: the Hugging Face Hub could not be reached and no copy is "
                           "cached (")
    assert last.endswith("); retry") and f"127.0.0.1:{port}" in last, last
    assert not (tmp_path / "out.jsonl").exists()


def test_an_input_that_is_not_a_rows_file_exits_2_saying_what_it_is(model_dir: Path, tmp_path: Path):
    """`--input` given a directory used to end in "[Errno 21] Is a directory"; a pairs directory now points to
    the commands that read it."""
    pairs = tmp_path / "pairs"
    (pairs / "train").mkdir(parents=True)  # a pairs directory: its train split's partitioned table
    plain = tmp_path / "plain"
    plain.mkdir()
    rows_file = "expected a rows file: JSONL (one JSON object per line), Parquet, CSV or TSV"
    expected = {
        pairs: f"error: {pairs}: a pairs directory (`rewardline evaluate --data` scores its splits; "
               f"`rewardline export-pairs` writes its texts as JSONL); {rows_file}",
        plain: f"error: {plain}: a directory; {rows_file}",
        tmp_path / "absent.jsonl": f"error: {tmp_path / 'absent.jsonl'}: missing; {rows_file}",
    }
    for given, message in expected.items():
        run = score_cli(model_dir, given, tmp_path / "out.jsonl")
        assert run.returncode == 2, run.stderr
        assert run.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "out.jsonl").exists()


def test_a_json_array_given_as_rows_is_named(tmp_path: Path):
    """A pretty-printed JSON array used to fail as "line 1: not valid JSON" alone: the message now says what the
    file is and how to make JSONL of it (Parquet, CSV and TSV are read: test_rows_files.py); a bad line after good
    rows stays a plain JSON error."""
    from conftest import read_score_rows

    from rewardline.errors import BadInput

    (tmp_path / "rows.json").write_text(json.dumps([GOOD_ROW], indent=1))
    with pytest.raises(BadInput, match=r"rows\.json:1: not valid JSON .*: a JSON array, not JSONL; expected one JSON "
                                       r"object per line \(`jq -c '\.\[\]' FILE`\), or a Parquet, CSV or TSV file"):
        read_score_rows(tmp_path / "rows.json")
    (tmp_path / "later.jsonl").write_text(json.dumps(GOOD_ROW) + "\n[\n")
    with pytest.raises(BadInput) as later:
        read_score_rows(tmp_path / "later.jsonl")
    assert str(later.value).endswith("later.jsonl:2: not valid JSON (Expecting value at column 2)")


@pytest.mark.parametrize(("content", "message"), [
    ('{"pooling": "first",', "reward_config.json:1: not valid JSON"),
    ("[1]", "reward_config.json: expected a JSON object, got an array"),
    ('{"pooling": "max"}',
     "reward_config.json: field 'pooling': expected one of ['first', 'last', 'mean', 'model'], got 'max'"),
    ('{"poolin": "first"}', "reward_config.json: field 'poolin': unknown key"),
    ('{"format": {"max_len": 3}}', "reward_config.json: field 'format': "),
])
def test_a_bad_reward_config_is_a_model_load_error(model_dir: Path, tmp_path: Path, content: str, message: str):
    broken = broken_copy(model_dir, tmp_path / "m")
    (broken / "reward_config.json").write_text(content)
    with pytest.raises(ModelLoadError, match="^" + str(broken).replace(".", r"\.") + "/") as info:
        RewardModel.load(broken)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_weights_missing_from_the_safetensors_file_are_refused(model_dir: Path, tmp_path: Path):
    broken = broken_copy(model_dir, tmp_path / "m")
    tensors = load_file(broken / "model.safetensors")
    dropped = sorted(k for k in tensors if "encoder.layer.1" in k)
    save_file({k: v for k, v in tensors.items() if k not in dropped}, broken / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=f"{len(dropped)} weights missing or of the wrong shape"):
        RewardModel.load(broken)
    model, tokenizer = RewardModel.load(model_dir)
    head = tmp_path / "h"
    model._save_old_layout(head, tokenizer)  # the older layout: backbone + reward_head.safetensors ...
    config = json.loads((head / "config.json").read_text())
    config.pop("rewardline", None)  # ... whose config.json has no rewardline object
    (head / "config.json").write_text(json.dumps(config))
    (head / "reward_head.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ModelLoadError, match="reward_head.safetensors: unreadable"):
        RewardModel.load(head)


def test_a_tokenizer_that_does_not_fit_the_embedding_is_refused(model_dir: Path, tmp_path: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", *(f"w{i}" for i in range(28))]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    broken = broken_copy(model_dir, tmp_path / "m")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (broken / name).unlink(missing_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(broken)
    with pytest.raises(ModelLoadError, match="field 'tokenizer': expected the vocabulary of the model's "
                                             "30522-row embedding \\(config.json\\), got 30 tokens"):
        RewardModel.load(broken)


def test_non_finite_rewards_are_refused(model_dir: Path):
    model, tokenizer = RewardModel.load(model_dir)
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"2 of 2 rewards are not finite \(first: row 1, nan\)"):
        score_texts(model_dir, ["a", "b"], ["c", "d"], model=model, tokenizer=tokenizer)


def test_an_aggregate_for_an_outcome_model_is_refused(model_dir: Path, tmp_path: Path):
    """Was: `score --aggregate mean` with an outcome model exited 0 and ignored the flag."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps(GOOD_ROW) + "\n")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "rewardline.cli", "score", "--model", str(model_dir), "--input",
                           str(rows), "--out", str(tmp_path / "out.jsonl"), "--aggregate", "mean"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "an outcome reward model; --aggregate mean combines a process reward model's step scores" in done.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_a_lone_surrogate_in_a_process_models_step_is_refused_naming_the_step():
    from rewardline.errors import BadInput
    from rewardline.modeling.step_scores import check_step_row

    with pytest.raises(BadInput) as err:
        check_step_row({"prompt": "p", "steps": ["3 + 4 = 7", "so \ud800"]}, {"file": "rows.jsonl", "line": 4})
    assert str(err.value) == ("rows.jsonl:4: field 'steps[1]': not valid Unicode (a lone surrogate \\ud800 at "
                              "character 3); expected text that UTF-8 can encode")
