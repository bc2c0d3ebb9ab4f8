"""CLI manners: --version, completion, ``python -m rewardline``, tables for people and ``--json`` for
scripts, logging flags, the registry commands outside a project, each command's ``--out`` help."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rewardline import __version__
from rewardline.cli import app
from rewardline.report import human, print_summary

ROOT = Path(__file__).parents[1]
SAMPLE = ROOT / "data/raw/synthetic_multiannotator.jsonl"
runner = CliRunner()


def test_version_flag_and_python_dash_m():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"rewardline {__version__}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "rewardline", "--version"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"rewardline {__version__}", done.stderr


def test_help_offers_shell_completion_and_names_each_commands_output():
    assert "--install-completion" in runner.invoke(app, ["--help"]).output
    helps = {}
    for command in ("ingest", "validate", "pairs", "train", "evaluate", "score", "export-pairs", "export", "bon",
                    "rerank"):
        text = " ".join(runner.invoke(app, [command, "--help"], terminal_width=200).output.split())
        assert "a file for score" not in text, command
        helps[command] = text
    assert "output rows file" in helps["score"] and "output directory" in helps["ingest"]
    assert "output rows grouped by prompt" in helps["rerank"] and "Parquet / CSV / TSV" in helps["rerank"]
    # markdown help: square brackets are text (rich markup ate "[ray]"), ``code`` spans lose their backticks
    assert "'rewardline[ray]'" in helps["score"] and "``" not in helps["score"]


def test_numbers_are_rounded_for_people():
    assert [human(v) for v in (0.5847280334728033, 12.345678, 338.3648381570001, 1566.14381945359)] == [
        "0.585", "12.35", "338.36", "1,566"]
    assert [human(v) for v in (4766, True, None, float("nan"), ["synth-e"], [])] == [
        "4,766", "yes", "n/a", "n/a", "synth-e", "-"]


def test_a_wide_listing_is_printed_whole_not_cut_to_ellipses():
    """rewardline select's configurations table over 5 varied params printed val_accuracy_mean, _sd, _min and _max
    all as "val_accurac…" and the runs as "spumy-gobs,na…": which number was which, and the winner, were lost."""
    row = {**{f"train.param_{i}": "1024" for i in range(5)}, "n_seeds": 3, "val_accuracy_mean": 0.5431,
           "val_accuracy_sd": 0.0291, "val_accuracy_min": 0.5122, "val_accuracy_max": 0.5634,
           "runs": "spumy-gobs,nasty-hate,genic-chic"}
    stream = io.StringIO()
    print_summary("select", {"selected": "nasty-hate", "configurations": [row, row]}, file=stream)
    header, first = [line.split() for line in stream.getvalue().splitlines()[-3:-1]]
    assert header == list(row) and first == [human(value) for value in row.values()], stream.getvalue()


def test_a_stage_prints_a_table_by_default_and_json_with_the_flag(tmp_path: Path):
    table = runner.invoke(app, ["ingest", str(SAMPLE), "--out", str(tmp_path / "a"), "--params", "absent.yaml"])
    assert table.exit_code == 0, table.output
    assert "rows_in" in table.output and "450" in table.output and f"{tmp_path / 'a'}/metrics.json" in table.output
    assert "rows_in_by_format" not in table.output  # the headline only; the rest is in metrics.json
    with pytest.raises(json.JSONDecodeError):
        json.loads(table.output)
    scripted = runner.invoke(app, ["--json", "ingest", str(SAMPLE), "--out", str(tmp_path / "b"),
                                   "--params", "absent.yaml"])
    assert scripted.exit_code == 0, scripted.output
    assert json.loads(scripted.stdout) == json.loads((tmp_path / "b" / "metrics.json").read_text())


def test_logging_flags_set_levels_and_silence_third_party_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # not a project: the registry command stops at once (exit 2)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for flags, expected in ((["-q"], logging.WARNING), ([], logging.INFO), (["-v"], logging.DEBUG)):
        assert runner.invoke(app, [*flags, "registry"]).exit_code == 2
        assert logging.getLogger("rewardline").level == expected, flags
        for noisy in ("mlflow", "alembic", "urllib3", "httpx", "great_expectations"):
            assert logging.getLogger(noisy).level == logging.WARNING, noisy
    assert runner.invoke(app, ["-vv", "registry"]).exit_code == 2
    assert logging.getLogger("mlflow").level == logging.DEBUG  # -vv: third-party lines too


def test_registry_outside_a_project_says_so_and_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for args in (["registry"], ["promote", "--version", "1"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "not a rewardline project" in result.output and "MLFLOW_TRACKING_URI" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_registry_json_is_clean_of_mlflow_log_lines(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("{}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_LOGGING_LEVEL")}
    done = subprocess.run([sys.executable, "-m", "rewardline", "--json", "registry"], cwd=tmp_path,
                          capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["versions"] == []
    assert " INFO " not in done.stderr and "INFO" not in done.stdout, done.stderr
