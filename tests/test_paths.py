"""rewardline.paths names the same files that dvc.yaml declares."""

from __future__ import annotations

from pathlib import Path

import yaml

from rewardline import paths

ROOT = Path(__file__).parents[1]


def _entries(items: list) -> list[str]:
    """Paths of a dvc.yaml ``outs`` / ``metrics`` / ``plots`` list (plain strings or one-key mappings)."""
    return [item if isinstance(item, str) else next(iter(item)) for item in items or []]


def test_stage_outputs_and_metrics_match_dvc_yaml():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage, out in paths.STAGE_OUT.items():
        extra = {"train": [paths.TRAIN_LOG.as_posix()],
                 "evaluate": [(paths.EVALUATE_PLOTS / n).as_posix() for n in paths.EVALUATE_PLOT_FILES],
                 "bon": [(paths.EVALUATE_PLOTS / n).as_posix() for n in paths.BON_PLOT_FILES]}.get(stage, [])
        assert _entries(stages[stage]["outs"]) == [out.as_posix(), *extra], stage
        assert _entries(stages[stage]["metrics"]) == [paths.stage_metrics(stage).as_posix()], stage
    assert _entries(stages["register"]["outs"]) == [paths.REGISTRATION.as_posix()]
    assert _entries(stages["train"]["plots"]) == [paths.TRAIN_CURVES.as_posix(), paths.VAL_CURVES.as_posix()]
    assert paths.RAW_DIR.as_posix() in stages["ingest"]["deps"]


def test_top_level_plots_are_files_outside_cached_directory_outputs():
    """`dvc exp run` on a fresh clone resolves every top-level plot; one inside a cached directory output fails."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    plots = _entries(spec["plots"])
    assert sorted(plots) == sorted((paths.EVALUATE_PLOTS / n).as_posix()
                                   for n in (*paths.EVALUATE_PLOT_FILES, *paths.BON_PLOT_FILES))
    cached_dirs = [out for stage in spec["stages"].values() for out in stage.get("outs", []) if isinstance(out, str)]
    assert not [p for p in plots for d in cached_dirs if p.startswith(d.rstrip("/") + "/")], plots


def test_gated_stages_have_reports_in_their_outputs():
    assert paths.gate_report("evaluate") == paths.report_dir("evaluate") / "report.md"
    assert paths.gate_report("evaluate") == Path("reports/evaluate/report.md")
    assert paths.gates_json("validate") == Path("data/validated/gates.json")
    assert paths.gate_report("pairs") is None and paths.gates_json("train") is None


def test_retrain_defaults_match_params_yaml():
    retrain = yaml.safe_load((ROOT / "params.yaml").read_text())["retrain"]
    assert (retrain["inbox"], retrain["ledger"], retrain["fresh_dir"]) == (
        paths.INBOX_DIR.as_posix(), paths.RETRAIN_LEDGER.as_posix(), paths.FRESH_DIR.as_posix())
    sources = yaml.safe_load((ROOT / "params.yaml").read_text())["ingest"]["sources"]
    assert paths.FRESH_DIR.as_posix() in [s["path"] for s in sources]
