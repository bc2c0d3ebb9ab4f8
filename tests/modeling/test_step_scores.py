"""Process reward model scoring: the four step-score aggregates, `rewardline score` on {prompt, steps}
rows (step_scores + reward), bad rows, and the pyfunc model's step path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import save_tiny_reward_model
from transformers import AutoTokenizer
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.modeling.formatting import FormatConfig
from rewardline.modeling.model import RewardModel
from rewardline.modeling.step_scores import aggregate_steps, is_process_model
from rewardline.modeling.tiny import tiny_bert_path
from rewardline.registry.pyfunc import RewardScorer


@pytest.mark.parametrize(("how", "expected"), [("min", [0.2, 0.9, np.nan]), ("prod", [0.9 * 0.2 * 0.5, 0.9, np.nan]),
                                               ("last", [0.5, 0.9, np.nan]), ("mean", [1.6 / 3, 0.9, np.nan])])
def test_aggregates(how, expected):
    scores = [np.array([0.9, 0.2, 0.5]), np.array([0.9, np.nan]), np.array([np.nan])]  # nan: step not scored
    np.testing.assert_allclose(aggregate_steps(scores, how), expected)


def test_unknown_aggregate_is_refused():
    with pytest.raises(ValueError, match="aggregate must be one of"):
        aggregate_steps([np.array([0.5])], "max")


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory) -> Path:
    """An (untrained) tiny-bert PRM saved as training saves one."""
    root = tmp_path_factory.mktemp("prm")
    model = RewardModel.from_backbone(str(tiny_bert_path()), format_config=FormatConfig(max_length=64))
    model.config.step_separator, model.config.objective = "[unused0]", "prm"
    model.save(root / "model", AutoTokenizer.from_pretrained(tiny_bert_path()))
    (root / "model" / "calibration.json").write_text("{}")
    return root / "model"


def test_score_cli_writes_step_scores_and_each_aggregate(prm_dir, tmp_path):
    assert is_process_model(prm_dir)
    rows = [{"prompt": "What is 3 plus 4, times 2?", "steps": ["3 + 4 = 7", "7 * 2 = 14", "The answer is 14"]},
            {"prompt": "Name a prime.", "steps": ["7 is prime"], "id": 2}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {}
    for how in ("min", "prod", "last", "mean", None):
        out = tmp_path / f"{how}.jsonl"
        result = CliRunner().invoke(app, ["score", "--model", str(prm_dir), "--input", str(src), "--out", str(out),
                                          *(["--aggregate", how] if how else [])])
        assert result.exit_code == 0, result.output
        results[how] = [json.loads(line) for line in out.read_text().splitlines()]
    first = results["min"][0]
    assert len(first["step_scores"]) == 3 and all(0 < s < 1 for s in first["step_scores"])
    assert results["min"][1]["id"] == 2  # the input row's fields are kept
    for how in ("min", "prod", "last", "mean"):
        for row in results[how]:
            assert row["reward"] == pytest.approx(aggregate_steps([np.array(row["step_scores"])], how)[0])
    assert results[None][0]["reward"] == results["min"][0]["reward"]  # the model's default: min


def _strict_json(line: str) -> dict:
    """``json.loads`` that refuses NaN / Infinity (Python's default accepts them; JSON has neither)."""
    return json.loads(line, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name} in {line[:80]}"))


def test_steps_past_max_length_are_null_in_strict_json(prm_dir, tmp_path):
    """max_length 64: a solution of 40 long steps has steps that are never scored: null (not NaN) in the output;
    a solution with no scored step at all gets reward null; a warning counts both."""
    long_steps = [f"step {k}: we add {k} apples to the basket and count them all again" for k in range(40)]
    rows = [{"prompt": "Count.", "steps": long_steps},
            {"prompt": "Count.", "steps": ["apple " * 200]}]  # one step longer than max_length
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["score", "--model", str(prm_dir), "--input", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    long_row, no_step = [_strict_json(line) for line in out.read_text().splitlines()]
    scores = long_row["step_scores"]
    assert len(scores) == 40 and scores[0] is not None and scores[-1] is None  # the tail was cut
    assert long_row["reward"] == pytest.approx(min(x for x in scores if x is not None))
    assert no_step["step_scores"] == [None] and no_step["reward"] is None
    dropped = 1 + sum(x is None for x in scores)
    assert (f"2 of 2 solutions pass max_length=64: {dropped} tail steps not scored (null in step_scores); 1 with no "
            "step scored (reward null") in result.output


def test_score_cli_names_line_and_field_of_a_bad_step_row(prm_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "p", "steps": ["ok"]}\n{"prompt": "p", "steps": ["ok", ""]}\n')
    result = CliRunner().invoke(app, ["score", "--model", str(prm_dir), "--input", str(src), "--out",
                                      str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2 and ":2" in result.output and "steps[1]" in result.output


def test_score_cli_says_an_empty_step_list_is_empty(prm_dir, tmp_path):
    """Was: `steps: []` exited 2 with "expected a non-empty list of step strings, got an array", which reads as if
    a list were not what was expected. Now it says the array is empty."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "p", "steps": []}\n')
    result = CliRunner().invoke(app, ["score", "--model", str(prm_dir), "--input", str(src), "--out",
                                      str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2
    assert "in.jsonl:1: field 'steps': expected a non-empty list of step strings, got an empty array" in result.output


def test_score_says_a_row_of_the_other_kind_of_model_is_for_that_kind(prm_dir, tmp_path):
    """Was: step rows {prompt, steps} given to an outcome model failed with "field 'response': missing; expected a
    string", and {prompt, response} rows given to a PRM with "field 'steps': ... got nothing (missing)": neither
    said that the rows suit the other kind of model. Now each says which kind reads the field the row has (the
    PRM's check runs for a PRM only, so it also says what the model is)."""
    outcome_dir = save_tiny_reward_model(tmp_path / "orm", max_length=64)
    cases = [(outcome_dir, '{"prompt": "p", "steps": ["2 + 2 = 4"]}',
              "in.jsonl:1: field 'response': missing; expected a string; the row has 'steps', which a process "
              "reward model reads"),
             (prm_dir, '{"prompt": "p", "response": "4"}',
              "in.jsonl:1: field 'steps': expected a non-empty list of step strings, got nothing (missing); the row "
              "has 'response', which an outcome reward model reads, and this is a process reward model")]
    for model, row, message in cases:
        src = tmp_path / "in.jsonl"
        src.write_text(row + "\n")
        result = CliRunner().invoke(app, ["score", "--model", str(model), "--input", str(src), "--out",
                                          str(tmp_path / "o.jsonl")])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


def test_pyfunc_scores_steps(prm_dir):
    scorer = RewardScorer(prm_dir)
    out = scorer.predict(pd.DataFrame({"prompt": ["2+2?"], "steps": [["2 + 2 = 4", "The answer is 4"]]}),
                         {"aggregate": "last"})
    assert list(out.columns) == ["step_scores", "reward"] and out["reward"][0] == out["step_scores"][0][-1]


def test_bon_cli_scores_a_prm_by_its_step_aggregate(prm_dir, tmp_path):
    """`rewardline bon` with a PRM: each candidate's reward is the model's step aggregate (``min``) over the
    solution's lines as steps, as `rewardline score` gives for {prompt, steps}, not a pooled sequence score."""
    from rewardline.modeling.step_scores import score_steps

    problems = [(f"Tom has {a} apples and buys {b} more. How many?",
                 [f"Tom starts with {a}.\n\nHe buys {b}: {a} + {b} = {a + b + d}.\nA: {a + b + d}" for d in (0, 1, 2)])
                for a, b in ((3, 4), (10, 5), (7, 8))]
    model, tokenizer = RewardModel.load(prm_dir)
    steps = [[line.strip() for line in s.split("\n") if line.strip()] for _, sols in problems for s in sols]
    prompts = [q for q, sols in problems for _ in sols]
    expected = aggregate_steps(score_steps(model, tokenizer, prompts, steps), "min").reshape(3, 3)
    assert all(len(s) == 3 for s in steps)  # the blank line is not a step
    records = [{"question": q, "solutions": [{"solution": s, "is_correct": bool(j == expected[i].argmax())}
                                             for j, s in enumerate(sols)]} for i, (q, sols) in enumerate(problems)]
    src = tmp_path / "cands.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "bon"
    result = CliRunner().invoke(app, ["bon", "--model", str(prm_dir), "--data", str(src), "--format", "gsm8k",
                                      "--out", str(out), "--params", str(tmp_path / "none.yaml"),
                                      "--set", "bootstrap_samples=50"])
    assert result.exit_code in (0, 1), result.output  # 1: a gate failed; the metrics are written either way
    m = json.loads((out / "metrics.json").read_text())
    assert m["proxy_by_n"]["1"] == pytest.approx(expected.mean(), abs=1e-6)  # mean reward of a random pick
    assert m["proxy_by_n"]["3"] == pytest.approx(expected.max(1).mean(), abs=1e-6)
    assert m["gold_by_n"]["3"] == pytest.approx(1.0)  # the highest min-aggregate is the correct one: picked


@pytest.mark.parametrize("command", ["rerank", "evaluate"])
def test_rerank_and_evaluate_refuse_a_process_reward_model(prm_dir: Path, tmp_path: Path, command: str):
    """rerank / serve / evaluate read a pooled forward: for a PRM that is not its reward, so they refuse it
    (exit 2) before reading any data."""
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"prompt": "2+2?", "response": "2+2=4\nThe answer is 4"}) + "\n")
    data = ["--input", str(rows)] if command == "rerank" else ["--data", str(rows)]
    result = CliRunner().invoke(app, [command, "--model", str(prm_dir), *data, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert f"{prm_dir}: a process reward model; {command}" in result.output


def test_step_scores_are_the_same_chunk_by_chunk_and_into_a_table(prm_dir, tmp_path):
    """`score` streams a PRM's rows in chunks too: one row per chunk gives the scores of one chunk, and a Parquet
    output holds the step scores as a list column (a solution with no scored step: [null], reward null)."""
    import pyarrow.parquet as pq

    from rewardline.modeling.score import score_jsonl

    rows = [{"prompt": "What is 3 plus 4?", "steps": ["3 + 4 = 7", "The answer is 7"]},
            {"prompt": "Count.", "steps": ["apple " * 200]},  # longer than max_length: never scored
            {"prompt": "Name a prime.", "steps": ["7 is prime"], "id": 3}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert score_jsonl(prm_dir, src, tmp_path / "whole.jsonl") == 3
    assert score_jsonl(prm_dir, src, tmp_path / "chunked.parquet", chunk_rows=1) == 3
    whole = [json.loads(line) for line in (tmp_path / "whole.jsonl").read_text().splitlines()]
    chunked = pq.read_table(tmp_path / "chunked.parquet").to_pylist()
    assert [r["id"] for r in chunked] == [None, None, 3]  # a key of a later chunk's row is a column
    assert chunked[1]["step_scores"] == [None] and chunked[1]["reward"] is None and whole[1]["reward"] is None
    for i in (0, 2):
        assert chunked[i]["step_scores"] == pytest.approx(whole[i]["step_scores"], abs=1e-6)
        assert chunked[i]["reward"] == pytest.approx(whole[i]["reward"], abs=1e-6)


def test_a_prompt_of_messages_scores_as_the_text_ingest_stores(prm_dir, tmp_path):
    """Was: `rewardline score` on a PRM refused a prompt of messages ('field prompt: expected a string'), which an
    outcome model takes, and `bon` with a PRM rendered one as 'System: ...\\n\\nUser: ...', a text ingest never stores
    (train != serve). Now both read the messages as the text ingest stores for them (messages.render_one)."""
    from rewardline.data.messages import render_one
    from rewardline.modeling.step_scores import score_solution_texts

    messages = [{"role": "system", "content": "Be exact."}, {"role": "User", "content": "What is 3 plus 4?"}]
    stored = render_one([{**m, "role": m["role"].lower()} for m in messages])
    steps = ["3 + 4 = 7", "The answer is 7"]
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": messages, "steps": steps}) + "\n" + json.dumps({"prompt": stored,
                                                                                          "steps": steps}) + "\n")
    result = CliRunner().invoke(app, ["score", "--model", str(prm_dir), "--input", str(src), "--out",
                                      str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    as_messages, as_text = (json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines())
    assert as_messages["prompt"] == messages and as_messages["step_scores"] == pytest.approx(as_text["step_scores"])
    by_bon = score_solution_texts(prm_dir, [messages, stored], ["\n".join(steps)] * 2)
    assert by_bon[0] == pytest.approx(by_bon[1]) and by_bon[1] == pytest.approx(as_text["reward"])
