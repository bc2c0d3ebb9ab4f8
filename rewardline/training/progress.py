"""Training progress for people: a tqdm bar on a terminal, one log line per ``log_every`` steps otherwise.

Under ``dvc repro``, in CI or with output redirected, stderr is not a TTY: a bar would be one
ever-growing line, so each logged step becomes a ``logging`` INFO line of the ``rewardline.training``
logger instead::

    step 20/37 (54 %)  loss 0.6821  accuracy 0.562  tokens/s 1,566  ETA 2m41s

ETA = (seconds since the first step of this process) / (steps done since then) × (steps left): the
mean step time of this run so far (a resumed run counts from its resume step).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from tqdm.auto import tqdm

LOG = logging.getLogger("rewardline.training")
#: Log-line metrics the bar's postfix and the log line leave out (the MLflow / JSONL record has them).
HIDDEN = ("train/lr", "train/grad_norm", "train/sequences_per_s")


def format_duration(seconds: float) -> str:
    """``75`` → ``1m15s``; ``3725`` → ``1h02m``; under a minute ``42s``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def progress_postfix(metrics: dict[str, float]) -> dict[str, str]:
    """The people's share of a log line: loss, the objective's metrics, tokens/s (``train/`` dropped)."""
    return {k.removeprefix("train/"): f"{v:.3g}" for k, v in metrics.items() if k not in HIDDEN}


def log_line(done: int, total: int, metrics: dict[str, float], eta_seconds: float | None) -> str:
    """``step d/T (p %)  loss …  <metric> …  tokens/s …  ETA …``."""
    parts = [f"step {done}/{total} ({100 * done / max(total, 1):.0f} %)"]
    for key, value in metrics.items():
        if key in HIDDEN or key == "train/tokens_per_s":
            continue
        parts.append(f"{key.removeprefix('train/')} {value:.4g}")
    if "train/tokens_per_s" in metrics:
        parts.append(f"tokens/s {metrics['train/tokens_per_s']:,.0f}")
    if eta_seconds is not None:
        parts.append(f"ETA {format_duration(eta_seconds)}")
    return "  ".join(parts)


class TrainingProgress:
    """Progress of steps ``initial .. total``: a bar when ``enabled`` and ``stream`` is a terminal,
    log lines when ``enabled`` and it is not, nothing when not ``enabled`` (e.g. ranks other than 0)."""

    def __init__(self, total: int, initial: int, enabled: bool, stream: TextIO | None = None) -> None:
        stream = stream or sys.stderr
        self.total, self.initial = total, initial
        self.started = time.perf_counter()
        self.as_bar = enabled and stream.isatty()
        self.as_log = enabled and not self.as_bar
        self.bar = tqdm(total=total, initial=initial, unit="step", disable=not self.as_bar, dynamic_ncols=True,
                        file=stream)

    def eta(self, done: int) -> float | None:
        """Seconds left at the mean step time since this process started (None before a step)."""
        steps = done - self.initial
        return (time.perf_counter() - self.started) / steps * (self.total - done) if steps > 0 else None

    def step(self) -> None:
        self.bar.update(1)

    def logged(self, done: int, metrics: dict[str, float]) -> None:
        """A log step: the bar's postfix, or one INFO line."""
        if self.as_bar:
            self.bar.set_postfix(progress_postfix(metrics))
        elif self.as_log:
            LOG.info(log_line(done, self.total, metrics, self.eta(done)))

    def close(self) -> None:
        self.bar.close()
