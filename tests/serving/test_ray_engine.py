"""``--engine ray``: score and rerank on a local 2-CPU Ray cluster (loopback) equal in-process scoring.

Equal means: the same rows in the same order with the same columns, rewards within 1e-6 (batches differ
only in padding, which the attention mask removes), and the same errors (exit codes) for bad rows and
bad models."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import save_tiny_reward_model
from typer.testing import CliRunner

from rewardline.cli import app
from rewardline.errors import BadInput, ConfigError, ModelLoadError
from rewardline.modeling.model import RewardModel
from rewardline.modeling.score import score_jsonl, score_texts
from rewardline.serving.ray_engine import RayOptions, rerank_jsonl_ray, score_jsonl_ray
from rewardline.serving.rerank_file import rerank_jsonl

MESSAGES = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "what is a cat"}]


def candidate_rows() -> list[dict]:
    """36 candidates of 9 prompts (one a message list), interleaved, of varied length, with extra fields."""
    rng = np.random.default_rng(0)
    prompts = [f"question {i}: " + "why is the sky blue " * int(rng.integers(1, 5)) for i in range(8)] + [MESSAGES]
    return [{"id": f"{p}-{k}", "prompt": prompt, "response": "because of light " * int(rng.integers(1, 9)) + str(k)}
            for k in range(4) for p, prompt in enumerate(prompts)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_output(local: list[dict], distributed: list[dict], float_keys: tuple[str, ...]) -> None:
    """Same rows, order and columns; the float columns within 1e-6."""
    assert len(local) == len(distributed) > 0
    for a, b in zip(local, distributed, strict=True):
        assert list(a) == list(b)  # columns, in order
        exact = [k for k in a if k not in float_keys]
        assert [a[k] for k in exact] == [b[k] for k in exact]
    for key in float_keys:
        delta = np.abs(np.array([a[key] for a in local]) - np.array([b[key] for b in distributed]))
        assert delta.max() <= 1e-6, (key, delta.max())


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Bradley-Terry model (reward_mean 0.25: shifted rewards) and an absolute-scale one (win_prob)."""
    root = tmp_path_factory.mktemp("ray-models")
    bt = save_tiny_reward_model(root, max_length=48, reward_mean=0.25)
    model, tokenizer = RewardModel.load(bt)
    model.config.objective, model.config.link, model.config.anchored = "thurstone", "logit", True
    model.save(root / "absolute", tokenizer)
    return {"bt": bt, "absolute": root / "absolute"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    """A local Ray cluster on 127.0.0.1 with 2 CPU slots (so 2 model actors), shut down after the module."""
    ray = pytest.importorskip("ray", reason="the ray extra: pip install 'rewardline[ray]'")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_score_on_two_ray_actors_equals_in_process_scoring(models, cluster, tmp_path):
    from rewardline.serving.ray_engine import _actor_resources

    assert _actor_resources(cluster, None) == (2, {"num_cpus": 1.0})  # one actor per CPU slot
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in candidate_rows()))
    assert score_jsonl(models["bt"], src, tmp_path / "local.jsonl") == 36
    # 8-row batches over 2 actors: rows come back out of order and are put back; the file streamed to the cluster
    # in two chunks (a Ray dataset each), so the driver never holds the whole file
    options = RayOptions(batch_rows=8, chunk_rows=20)
    assert score_jsonl_ray(models["bt"], src, tmp_path / "ray.jsonl", options=options) == 36
    local, distributed = read_jsonl(tmp_path / "local.jsonl"), read_jsonl(tmp_path / "ray.jsonl")
    assert_same_output(local, distributed, ("reward",))
    assert [r["id"] for r in distributed] == [r["id"] for r in candidate_rows()]
    assert np.ptp([r["reward"] for r in local]) > 0  # the rewards differ, so order and equality mean something


@pytest.mark.slow
def test_rerank_on_ray_equals_in_process_rerank_with_win_probabilities(models, cluster, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in candidate_rows()))
    counts = rerank_jsonl(models["absolute"], src, tmp_path / "local.jsonl", top_k=3)
    options = RayOptions(actors=2, batch_rows=5, chunk_rows=10)  # 4 chunks: every prompt's candidates span them
    assert rerank_jsonl_ray(models["absolute"], src, tmp_path / "ray.jsonl", top_k=3, options=options) == {
        **counts, "output": str(tmp_path / "ray.jsonl")}
    local, distributed = read_jsonl(tmp_path / "local.jsonl"), read_jsonl(tmp_path / "ray.jsonl")
    assert len(distributed) == 27 and all("win_prob" in r for r in distributed)
    assert_same_output(local, distributed, ("reward", "beats_others", "win_prob"))


@pytest.mark.slow
def test_the_retrain_flow_scores_raw_rewards_on_ray_as_in_process(models, cluster):
    from rewardline.retraining.cycle import RetrainConfig, raw_rewards

    rows = candidate_rows()
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    local = raw_rewards(models["bt"], prompts, responses, RetrainConfig(engine="local"))
    distributed = raw_rewards(models["bt"], prompts, responses, RetrainConfig(engine="ray"))
    assert np.abs(distributed - local).max() <= 1e-6  # raw: not shifted by the stored reward_mean (0.25)
    np.testing.assert_allclose(local - np.float32(0.25), score_texts(models["bt"], prompts, responses), atol=1e-6)


@pytest.mark.slow
def test_a_bad_model_fails_on_the_cluster_with_the_in_process_error(models, cluster, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(models["bt"], bad)
    config = json.loads((bad / "reward_config.json").read_text())
    (bad / "reward_config.json").write_text(json.dumps({**config, "pooling": "nonsense"}))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    with pytest.raises(ModelLoadError, match="pooling") as local:
        score_jsonl(bad, src, tmp_path / "local.jsonl")
    with pytest.raises(ModelLoadError, match="pooling") as distributed:  # not Ray's wrapper: exit 2, not 3
        score_jsonl_ray(bad, src, tmp_path / "ray.jsonl", options=RayOptions(actors=1))
    assert str(local.value) in str(distributed.value)


def test_a_malformed_row_or_no_rows_start_no_cluster(models, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n" + json.dumps({"prompt": "p"}) + "\n")
    unreachable = RayOptions(address="127.0.0.1:1")  # connecting would fail with another error
    with pytest.raises(BadInput, match=r"in.jsonl:2: field 'response'"):
        score_jsonl_ray(models["bt"], src, tmp_path / "out.jsonl", options=unreachable)
    with pytest.raises(BadInput, match=r"in.jsonl:2: field 'response'"):
        rerank_jsonl_ray(models["bt"], src, tmp_path / "out.jsonl", options=unreachable)
    (tmp_path / "empty.jsonl").write_text("\n")  # no rows: an empty output, no cluster
    assert score_jsonl_ray(models["bt"], tmp_path / "empty.jsonl", tmp_path / "e.jsonl", options=unreachable) == 0
    assert rerank_jsonl_ray(models["bt"], tmp_path / "empty.jsonl", tmp_path / "r.jsonl", options=unreachable)[
        "rows_written"] == 0
    assert (tmp_path / "e.jsonl").read_text() == (tmp_path / "r.jsonl").read_text() == ""
    prm = tmp_path / "prm"
    prm.mkdir()
    (prm / "reward_config.json").write_text(json.dumps({"step_separator": "\n"}))
    with pytest.raises(ConfigError, match="process reward model"):
        score_jsonl_ray(prm, src, tmp_path / "out.jsonl", options=unreachable)


def test_engine_options_are_checked(models, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    runner = CliRunner()
    base = ["--model", str(models["bt"]), "--input", str(src), "--out", str(tmp_path / "out.jsonl")]
    for command in ("score", "rerank"):
        result = runner.invoke(app, [command, *base, "--engine", "spark"])
        assert result.exit_code == 2 and "local, ray" in result.output
        result = runner.invoke(app, [command, *base, "--actors", "2"])
        assert result.exit_code == 2 and "--engine ray" in result.output
        assert runner.invoke(app, [command, *base, "--engine", "ray", "--actors", "0"]).exit_code == 2
    assert not (tmp_path / "out.jsonl").exists()


def test_the_driver_reads_the_model_scale_without_importing_torch(models):
    """The Ray driver never loads the model, so it should not pay torch's import (about 300 MB of RSS: the driver
    of `score --engine ray` on 2,000 rows peaked at 561 MB with it, 251 MB without): RayScorer reads link and
    residual_sd as JSON, the values RewardModel.load gives."""
    import subprocess
    import sys

    code = ("import sys; from rewardline.serving.ray_engine import RayScorer; "
            f"s = RayScorer({str(models['absolute'])!r}); print(s.link, s.residual_sd, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(Path(__file__).parents[2]), "PATH": "/usr/bin:/bin"})
    model, _ = RewardModel.load(models["absolute"])
    assert done.stdout.split() == [model.config.link, str(float(model.config.residual_sd)), "False"]
    from rewardline.serving.rerank import read_scale

    assert read_scale(models["bt"]) == (None, 0.0)
