"""The champion gate end to end, through the CLI (ingest → validate → pairs → train → evaluate --champion)
with seeded tiny-bert models on rankings with a learnable rule (more "good" than "bad" words wins):

* a challenger of the champion's quality (same data, another seed) passes: non-inferior, or
  ``inconclusive (needs N test pairs)`` with the power analysis;
* a clearly worse challenger (the same recipe on flipped rankings) fails the gate: exit 1,
  verdict ``worse``, the message naming ``champion_non_inferiority``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "rewardline.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
TOPICS = ["cat", "dog", "bird", "fish", "horse", "cow", "sheep", "goat", "tree", "river"]
FILLER = ["the", "a", "it", "is", "on", "and", "then", "so", "very", "quite"]

pytestmark = pytest.mark.slow


def write_rankings(path: Path, n_prompts: int = 150, flip: bool = False, seed: int = 0) -> Path:
    """K = 4 responses per prompt; response quality q ∈ {0..3} has q "good" and 3 − q "bad" words among
    filler; rank 1 = best (``flip``: rank 1 = worst). One annotator, as a judge would be."""
    rng = np.random.default_rng(seed)
    with path.open("w") as f:
        for p in range(n_prompts):
            quality = rng.permutation(4)
            responses = []
            for j, q in enumerate(quality):
                words = ["good"] * int(q) + ["bad"] * int(3 - q) + list(rng.choice(FILLER, rng.integers(2, 8)))
                rng.shuffle(words)
                rank = int(q) + 1 if flip else 4 - int(q)
                responses.append({"response_id": f"r{j}", "text": " ".join(words), "rank": rank})
            f.write(json.dumps({"prompt_id": f"p{p}", "prompt": f"tell me about the {TOPICS[p % 10]} ({p})",
                                "category": "syn", "annotator_id": "judge", "responses": responses}) + "\n")
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=ENV, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from rewardline.modeling.tiny import build_tiny_bert

    root = tmp_path_factory.mktemp("champion-gate")
    params = root / "none.yaml"
    params.write_text("{}\n")
    backbone = build_tiny_bert(root / "backbone")
    out: dict[str, Path] = {"root": root, "params": params}
    for name, flip in (("true", False), ("flipped", True)):
        src = write_rankings(root / f"{name}.jsonl", flip=flip)
        for stage, data, dst in (("ingest", src, f"{name}-ingested"), ("validate", root / f"{name}-ingested",
                                 f"{name}-validated"), ("pairs", root / f"{name}-validated", f"{name}-pairs")):
            done = cli(stage, str(data), "--out", str(root / dst), "--params", str(params))
            assert done.returncode == 0, done.stderr[-3000:]
        out[f"{name}-pairs"] = root / f"{name}-pairs"
    sets = (f"backbone={backbone}", "max_length=48", "batch_tokens=2048", "epochs=4", "lr=3e-3", "progress=false",
            "checkpoint_every=0")
    for name, data, seed in (("champion", "true-pairs", 0), ("peer", "true-pairs", 1), ("worse", "flipped-pairs", 0)):
        done = cli("train", "--data", str(out[data]), "--out", str(root / name), "--params", str(params),
                   *(f"--set={kv}" for kv in (*sets, f"seed={seed}")))
        assert done.returncode == 0, done.stderr[-3000:]
        out[name] = root / name
    return out


def evaluate(models: dict[str, Path], challenger: str) -> tuple[subprocess.CompletedProcess, dict]:
    """The challenger on the true pairs' test split, against the champion; only the champion gate
    matters here (the others are opened up)."""
    out = models["root"] / f"eval-{challenger}"
    done = cli("evaluate", "--model", str(models[challenger]), "--data", str(models["true-pairs"]), "--out", str(out),
               "--champion", str(models["champion"]), "--params", str(models["params"]),
               *(f"--set={kv}" for kv in ("min_accuracy=0", "max_ece_calibrated=1", "max_length_bias=1",
                                          "bootstrap_samples=500")))
    return done, json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}


def test_a_challenger_of_the_champions_quality_passes_the_champion_gate(models):
    done, metrics = evaluate(models, "peer")
    assert done.returncode == 0, done.stderr[-3000:]
    assert metrics["champion_accuracy"] > 0.7 and metrics["accuracy"] > 0.7, metrics  # the rule was learned
    assert metrics["champion_verdict"] in ("non-inferior", "inconclusive"), metrics
    gate = json.loads((models["root"] / "eval-peer" / "gates.json").read_text())["gates"]["champion_non_inferiority"]
    assert gate["passed"], gate
    if metrics["champion_verdict"] == "inconclusive":
        assert "needs " in metrics["champion_power_note"] and "test pairs" in metrics["champion_power_note"]


def test_a_clearly_worse_challenger_fails_the_champion_gate(models):
    done, metrics = evaluate(models, "worse")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "champion_non_inferiority" in done.stderr or "champion_non_inferiority" in done.stdout, done.stderr
    assert metrics["champion_verdict"] == "worse" and metrics["accuracy"] < 0.5 < metrics["champion_accuracy"], metrics
    assert metrics["champion_diff_ci_high"] < -metrics["champion_delta"]
    gate = json.loads((models["root"] / "eval-worse" / "gates.json").read_text())["gates"]["champion_non_inferiority"]
    assert not gate["passed"], gate
