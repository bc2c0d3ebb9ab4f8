"""What DVC shows of a run: ``dvc metrics show`` holds the headline numbers only, and every plot of
``dvc plots show`` renders with the fields and types its spec names.

A copy of the project in which the real stage functions ran on a small sample (tiny-bert, a few
steps) into the paths of ``dvc.yaml``, then the stage scripts' publish step (headline metrics,
training curves as TSV). Slow: it trains and runs ``dvc``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rewardline import paths
from rewardline.stage import HEADLINE, publish_metrics, publish_plots

ROOT = Path(__file__).parents[1]
MAX_NUMERIC_LEAVES = 40
SMALL = {
    "validate": {"min_alpha": 0.0},
    "train": {"backbone": "tiny-bert", "max_length": 64, "batch_tokens": 1024, "max_steps": 4, "log_every": 1,
              "checkpoint_every": 0, "device": "cpu"},
    "evaluate": {"bootstrap_samples": 100, "min_accuracy": 0.0, "max_ece_calibrated": 1.0, "max_length_bias": 1.0},
}


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)


def _copy_project(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file() and not name.startswith(("metrics/", "data/raw/")) and name != "dvc.lock":
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=test"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)  # no dvc.lock: DVC reads the outputs as they are


def _run_stages(root: Path) -> None:
    """The stage functions on the shipped rankings sample, each into its dvc.yaml output, then publish."""
    from rewardline.config import build
    from rewardline.data.ingest import IngestConfig, Source, run_ingest
    from rewardline.data.tables import write_json
    from rewardline.evaluation.bon import BonConfig
    from rewardline.evaluation.bon_stage import run_bon_stage
    from rewardline.evaluation.evaluate import EvalConfig
    from rewardline.evaluation.run import run_evaluate
    from rewardline.pairs.expand import PairsConfig, run_pairs
    from rewardline.tracking import JsonlTracker, write_curves_tsv
    from rewardline.training.loop import TrainConfig, train
    from rewardline.validation.validate import ValidateConfig, run_validate

    sample = Source(path=str(ROOT / "data/raw/synthetic_multiannotator.jsonl"), format="rankings")
    run_ingest(build(IngestConfig, {"sources": [sample]}), root / paths.INGESTED_DIR)
    run_validate(root / paths.INGESTED_DIR, root / paths.VALIDATED_DIR, build(ValidateConfig, SMALL["validate"]))
    run_pairs(root / paths.VALIDATED_DIR, root / paths.PAIRS_DIR, build(PairsConfig, {}))
    metrics = train(root / paths.PAIRS_DIR, root / paths.MODEL_DIR, build(TrainConfig, SMALL["train"]),
                    JsonlTracker(root / paths.TRAIN_LOG))
    write_json(metrics, root / paths.MODEL_DIR / paths.METRICS_FILE)
    write_curves_tsv(root / paths.TRAIN_LOG, root / paths.TRAIN_CURVES)
    write_curves_tsv(root / paths.TRAIN_LOG, root / paths.VAL_CURVES, prefix="val/")
    run_evaluate(root / paths.MODEL_DIR, root / paths.PAIRS_DIR, root / paths.EVALUATE_DIR,
                 build(EvalConfig, SMALL["evaluate"]))
    run_bon_stage(root / paths.MODEL_DIR, root / paths.VALIDATED_DIR, root / paths.PAIRS_DIR, root / paths.BON_DIR,
                  build(BonConfig, {"bootstrap_samples": 100}))  # no anchors in this sample: skipped
    for stage, out in paths.STAGE_OUT.items():
        publish_metrics(out, stage)  # relative paths: the cwd is the project
    publish_plots(paths.EVALUATE_DIR / "plots")
    publish_plots(paths.BON_DIR, paths.BON_PLOT_FILES)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    _copy_project(root)
    here = Path.cwd()
    os.chdir(root)
    try:
        _run_stages(root)
    finally:
        os.chdir(here)
    return root


def numeric_leaves(node: Any) -> int:
    """Numbers (booleans included: DVC shows them as metrics) in a JSON tree."""
    if isinstance(node, dict):
        return sum(numeric_leaves(v) for v in node.values())
    if isinstance(node, list):
        return sum(numeric_leaves(v) for v in node)
    return int(isinstance(node, int | float))


def test_every_stage_s_headline_numbers_together_stay_within_the_limit():
    """All stages' headline numbers (the PRM pipeline's and bon's included) fit dvc metrics show's budget."""
    from rewardline.stage import HEADLINE, TEXT_HEADLINE

    numbers = sum(len(set(keys) - TEXT_HEADLINE) for keys in HEADLINE.values())
    assert numbers <= MAX_NUMERIC_LEAVES, numbers


@pytest.mark.slow
def test_dvc_metrics_show_holds_the_headline_numbers_only(project: Path):
    shown = _dvc(project, "metrics", "show", "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    (revision,) = json.loads(shown.stdout).values()  # the workspace (no commit yet)
    prm = {paths.stage_metrics(s).as_posix() for s in paths.PRM_STAGES}  # declared; this fixture runs the ORM stages
    assert prm <= set(revision["data"])
    data = {k: v for k, v in revision["data"].items() if k not in prm}
    assert set(data) == {paths.stage_metrics(s).as_posix() for s in paths.STAGE_OUT}, data
    assert all("error" not in entry for entry in data.values()), data
    leaves = numeric_leaves(data)
    assert 15 <= leaves <= MAX_NUMERIC_LEAVES, (leaves, data)
    evaluate = data["metrics/evaluate.json"]["data"]
    assert {"accuracy", "accuracy_ci_low", "ece_calibrated", "temperature", "gates_passed"} <= set(evaluate)
    assert set(evaluate) <= set(HEADLINE["evaluate"]) and "gates" not in evaluate
    assert data["metrics/validate.json"]["data"]["annotators_excluded"] == 1  # ['synth-e'] → its count
    # the full metrics stay in the stage's own output
    full = json.loads((project / paths.EVALUATE_DIR / paths.METRICS_FILE).read_text())
    assert "accuracy_by_category" in full and "gates" in full
    assert full["accuracy"] == evaluate["accuracy"]


def _plot_fields(spec: dict) -> dict[str, dict]:
    """``{channel: encoding}`` of a Vega-Lite spec (the first layer for a layered one)."""
    return (spec.get("encoding") or spec["layer"][0]["encoding"])


@pytest.mark.slow
def test_dvc_plots_show_renders_every_plot_with_its_fields(project: Path):
    shown = _dvc(project, "plots", "show", "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    answer = json.loads(shown.stdout)
    assert not answer.get("errors"), answer.get("errors")
    plots = answer["data"]
    assert plots["metrics/plots/bon.csv"] == []  # the bon stage was skipped (no anchors): its curve has no rows
    vega = {name: entries[0]["content"] for name, entries in plots.items()
            if entries and entries[0].get("type") == "vega"}
    expected = {  # plot: (x field, x type, y field, y type)
        paths.TRAIN_CURVES.as_posix(): ("step", "quantitative", "loss", "quantitative"),
        paths.VAL_CURVES.as_posix(): ("step", "quantitative", "accuracy", "quantitative"),
        "metrics/plots/reliability.json": ("confidence", "quantitative", "observed", "quantitative"),
        "metrics/plots/accuracy_by_category.json": ("accuracy", "quantitative", "category", "nominal"),
        "metrics/plots/reward_vs_length.csv": ("length", "quantitative", "reward", "quantitative"),
    }
    assert set(expected) <= set(vega), sorted(vega)
    for name, (x, x_type, y, y_type) in expected.items():
        enc = _plot_fields(vega[name])
        encoded = (enc["x"]["field"], enc["x"]["type"], enc["y"]["field"], enc["y"]["type"])
        assert encoded == (x, x_type, y, y_type), name
        rows = vega[name]["data"]["values"]
        assert rows and all(x in row and y in row for row in rows), name
    reliability = vega["metrics/plots/reliability.json"]
    assert _plot_fields(reliability)["color"]["field"] == "variant"  # raw and calibrated: two series
    assert {row["variant"] for row in reliability["data"]["values"]} == {"raw", "calibrated"}
    assert "loess" not in json.dumps(reliability)  # no smoothing
    steps = [int(row["step"]) for row in vega[paths.TRAIN_CURVES.as_posix()]["data"]["values"]]
    assert steps == [1, 2, 3, 4]
    images = {name for name, entries in plots.items() if entries and entries[0].get("type") == "image"}
    assert {f"metrics/plots/{n}.png" for n in ("reliability", "accuracy_by_category")} <= images
    assert "metrics/plots/bon.png" in images  # the skipped stage's figure says why
