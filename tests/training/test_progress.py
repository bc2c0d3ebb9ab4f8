"""Training progress: log lines without a terminal, a tqdm bar on one, both from a real training run."""

from __future__ import annotations

import io
import logging
import re

import pytest

from rewardline.training.progress import TrainingProgress, format_duration, log_line

METRICS = {"train/loss": 0.69312, "train/accuracy": 0.5625, "train/lr": 1e-4, "train/grad_norm": 0.3,
           "train/comparisons_per_s": 12.0, "train/sequences_per_s": 10.0, "train/tokens_per_s": 1566.4}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_durations_read_as_minutes_and_hours():
    assert [format_duration(s) for s in (0, 42.4, 75, 3725)] == ["0s", "42s", "1m15s", "1h02m"]


def test_a_log_line_names_step_loss_accuracy_throughput_and_eta():
    line = log_line(20, 37, METRICS, eta_seconds=161)
    assert line.startswith("step 20/37 (54 %)")
    assert "loss 0.6931" in line and "accuracy 0.5625" in line and "tokens/s 1,566" in line
    assert line.endswith("ETA 2m41s") and "lr" not in line and "grad_norm" not in line


def test_without_a_terminal_each_logged_step_is_one_info_line(caplog: pytest.LogCaptureFixture):
    stream = io.StringIO()
    progress = TrainingProgress(total=4, initial=0, enabled=True, stream=stream)
    with caplog.at_level(logging.INFO, logger="rewardline.training"):
        for done in range(1, 5):
            progress.step()
            if done % 2 == 0:
                progress.logged(done, METRICS)
    progress.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "rewardline.training"]
    assert [line.split("  ")[0] for line in lines] == ["step 2/4 (50 %)", "step 4/4 (100 %)"]
    assert all(re.search(r"ETA \d+s$", line) for line in lines)
    assert stream.getvalue() == ""  # no bar


def test_on_a_terminal_the_bar_shows_and_nothing_is_logged(caplog: pytest.LogCaptureFixture):
    stream = Terminal()
    progress = TrainingProgress(total=3, initial=0, enabled=True, stream=stream)
    with caplog.at_level(logging.INFO, logger="rewardline.training"):
        for done in range(1, 4):
            progress.step()
            progress.logged(done, METRICS)
    progress.close()
    assert "3/3" in stream.getvalue() and "loss=0.693" in stream.getvalue()
    assert not [r for r in caplog.records if r.name == "rewardline.training"]


def test_disabled_progress_shows_nothing(caplog: pytest.LogCaptureFixture):
    stream = Terminal()
    progress = TrainingProgress(total=2, initial=0, enabled=False, stream=stream)
    with caplog.at_level(logging.INFO, logger="rewardline.training"):
        progress.step()
        progress.logged(1, METRICS)
    assert stream.getvalue() == "" and not caplog.records

