"""In-process rerank on real AlpacaEval candidates: grouping, order = sorting by reward, top-k,
beats_others, the JSONL command and its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, save_tiny_reward_model
from scipy.special import expit

from rewardline.modeling.score import score_texts
from rewardline.serving.rerank import RewardScorer, group_by_prompt, rank_group, rerank_rows

ROOT = Path(__file__).parents[2]


def alpaca_candidates() -> list[dict]:
    """Reference + 3 samples for each of 20 AlpacaEval instructions, interleaved across prompts."""
    records = json.loads((FIXTURES / "alpacaeval_20x3.json").read_text())
    rows = [{"prompt": r["instruction"], "response": r["output_2"], "id": f"{r['id']}-{r['generator_2']}"}
            for r in records]
    refs = {r["instruction"]: r["output_1"] for r in records}
    return rows + [{"prompt": p, "response": text, "id": f"ref-{i}"} for i, (p, text) in enumerate(refs.items())]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_reward_model(tmp_path_factory.mktemp("rerank"), max_length=64, reward_mean=0.25)


def test_scorer_equals_score_texts(model_dir: Path):
    rows = alpaca_candidates()
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    expected = score_texts(model_dir, prompts, responses)
    scorer = RewardScorer(model_dir, batch_tokens=512)  # several forward batches
    np.testing.assert_allclose(scorer.score(prompts, responses), expected, atol=1e-5)
    assert np.ptp(expected) > 0  # the tiny model separates candidates, so the order below means something


def test_rerank_groups_by_prompt_and_orders_by_reward(model_dir: Path):
    rows = alpaca_candidates()
    expected = score_texts(model_dir, [r["prompt"] for r in rows], [r["response"] for r in rows])
    reward_of = {r["id"]: float(x) for r, x in zip(rows, expected, strict=True)}
    out = rerank_rows(RewardScorer(model_dir), rows)
    assert len(out) == len(rows) == 80
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    for i, prompt in enumerate(prompts):
        group = out[4 * i : 4 * i + 4]
        assert {r["prompt"] for r in group} == {prompt}
        ids_by_reward = sorted((r["id"] for r in rows if r["prompt"] == prompt), key=lambda k: -reward_of[k])
        assert [r["id"] for r in group] == ids_by_reward
        assert [r["rank"] for r in group] == [1, 2, 3, 4]
        np.testing.assert_allclose([r["reward"] for r in group], [reward_of[k] for k in ids_by_reward], atol=1e-5)
        assert all("win_prob" not in r for r in group)  # a BT model has no absolute scale
    top = rerank_rows(RewardScorer(model_dir), rows, top_k=2)
    assert len(top) == 40 and [r["rank"] for r in top[:4]] == [1, 2, 1, 2]


def test_a_decoder_reranks_with_each_prompt_encoded_once_and_the_same_rewards(tmp_path: Path):
    """A tiny Qwen2 reward model: rerank (and the server's concatenated batches) run each group's prompt once
    (prompt KV reuse) and give per-response encoding's rewards (fp32, 1e-5)."""
    from transformers import AutoTokenizer

    from rewardline.modeling.backbones import resolve_backbone
    from rewardline.modeling.formatting import FormatConfig
    from rewardline.modeling.model import RewardModel
    from rewardline.serving.rerank import Encoded

    model = RewardModel.from_backbone("tiny-qwen2", format_config=FormatConfig(max_length=96))
    model.save(tmp_path / "decoder", AutoTokenizer.from_pretrained(resolve_backbone("tiny-qwen2")))
    rows = alpaca_candidates()[:40] + alpaca_candidates()[60:70]  # groups of 1 to 3 candidates, interleaved
    scorer = RewardScorer(tmp_path / "decoder", batch_tokens=512)
    assert scorer.shared_prefix
    shared = {r["id"]: r["reward"] for r in rerank_rows(scorer, rows)}
    scorer.shared_prefix = False
    per_response = {r["id"]: r["reward"] for r in rerank_rows(scorer, rows)}
    assert shared.keys() == per_response.keys() and len(shared) == len(rows)
    np.testing.assert_allclose([shared[k] for k in per_response], list(per_response.values()), atol=1e-5)
    parts = [scorer.encode_group("a prompt", ["x", "y"]), scorer.encode_rows(["b", "c"], ["z", "w"]),
             scorer.encode_group("d", ["v"])]
    assert Encoded.concat(parts).group == [0, 0, 1, 2, 3]  # groups stay apart across a micro-batch


def test_rank_group_beats_others_is_the_mean_pairwise_bt_probability():
    r = np.array([0.3, -1.0, 2.0, 0.3])
    rank, beats = rank_group(r, temperature=2.0)
    assert rank.tolist() == [2, 4, 1, 3]  # the tie keeps input order
    expected = [np.mean([expit((r[i] - r[j]) / 2.0) for j in range(4) if j != i]) for i in range(4)]
    np.testing.assert_allclose(beats, expected, atol=1e-12)
    assert beats.sum() == pytest.approx(2.0)  # k/2: every pair's two probabilities sum to 1
    assert rank_group(np.array([1.0]))[1].tolist() == [0.5]


def test_group_by_prompt_keeps_first_seen_order_and_messages():
    msgs = [{"role": "user", "content": "hi"}]
    groups = group_by_prompt(["b", "a", msgs, "b", [dict(m) for m in msgs], "a"])
    assert [g.tolist() for g in groups] == [[0, 3], [1, 5], [2, 4]]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "rewardline.cli", "--json", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_rerank_command_writes_ranked_rows_and_rejects_a_malformed_line(model_dir: Path, tmp_path: Path):
    rows = alpaca_candidates()[:12]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = _cli("rerank", "--model", str(model_dir), "--input", str(src), "--out", str(tmp_path / "out.jsonl"),
                "--top-k", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["candidates"] == 12 and result["rows_written"] == result["prompts"]
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(r["rank"] == 1 and {"reward", "beats_others", "id"} <= r.keys() for r in out)
    src.write_text(json.dumps(rows[0]) + "\n" + '{"prompt": "hi", "response": 7}\n')
    bad = _cli("rerank", "--model", str(model_dir), "--input", str(src), "--out", str(tmp_path / "o.jsonl"),
               cwd=tmp_path)
    assert bad.returncode == 2
    assert f"{src}:2" in bad.stderr and "field 'response': expected a string, got a number" in bad.stderr


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_rerank_file_in_chunks_equals_rerank_in_memory(model_dir: Path, tmp_path: Path, suffix: str):
    """The file command streams (chunks of 7 rows here, so every prompt's candidates span chunks: they are
    interleaved across prompts) and writes what the in-memory rerank gives: same rows, order, ranks, rewards."""
    import pyarrow.parquet as pq

    from rewardline.modeling.rows_files import write_rows
    from rewardline.serving.rerank_file import rerank_jsonl

    rows = [{**r, "n": i} for i, r in enumerate(alpaca_candidates())]  # 80 rows, 20 prompts
    rows[-1]["only_here"] = "a key only the last row has"
    write_rows(rows, tmp_path / f"in{suffix}")
    expected = rerank_rows(RewardScorer(model_dir), rows, top_k=3)
    counts = rerank_jsonl(model_dir, tmp_path / f"in{suffix}", tmp_path / f"out{suffix}", top_k=3, chunk_rows=7)
    assert counts == {"candidates": 80, "prompts": 20, "rows_written": 60, "output": str(tmp_path / f"out{suffix}")}
    out = pq.read_table(tmp_path / "out.parquet").to_pylist() if suffix == ".parquet" else \
        [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["id"], r["rank"]) for r in out] == [(r["id"], r["rank"]) for r in expected]
    np.testing.assert_allclose([r["reward"] for r in out], [r["reward"] for r in expected], atol=1e-5)
    np.testing.assert_allclose([r["beats_others"] for r in out], [r["beats_others"] for r in expected], atol=1e-5)
    assert [r.get("only_here") for r in out] == [r.get("only_here") for r in expected]
    if suffix == ".parquet":  # the table's columns are every key of any row, the last chunk's included
        assert "only_here" in pq.read_schema(tmp_path / "out.parquet").names
    assert not list(tmp_path.glob(".*.part"))


def test_rerank_command_bounds_rows_by_the_params_file_as_score_does(model_dir: Path, tmp_path: Path):
    """``rerank`` reads the row bounds of ``params.yaml``'s ingest section, as ``score`` does (it used the defaults
    whatever the params said, so one file could pass ``score`` and fail ``rerank``, or the other way round)."""
    rows = alpaca_candidates()[:4]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "params.yaml").write_text("ingest:\n  max_response_chars: 20\n")
    for command in ("rerank", "score"):
        done = _cli(command, "--model", str(model_dir), "--input", str(src), "--out", str(tmp_path / "o.jsonl"),
                    cwd=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        assert f"{src}:1: field 'response': too large" in done.stderr and "max_response_chars=20" in done.stderr
    assert not (tmp_path / "o.jsonl").exists()
