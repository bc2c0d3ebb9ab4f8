"""Run the pipeline's DVC stages from code, the way an engineer runs them: ``dvc repro -s <stage>``.

Each stage runs in a ``dvc`` subprocess in the project directory, so dvc.lock, the cache
and the outputs are exactly what ``dvc repro`` on the command line gives. Output lines are
handed to a callback as they come (the Prefect flows send them to the run's logs).

How a failed stage is classified (the stage scripts exit through :func:`rewardline.stage.stage_main`
with the exit-code contract of :mod:`rewardline.errors`):

| stage exit | DVC prints | kind | retry? |
| --- | --- | --- | --- |
| 1 | ``failed to run: ..., exited with 1`` | ``gate`` (a quality gate failed) | no |
| 2 | ``..., exited with 2`` | ``config`` (bad parameter / input) | no |
| 3 | ``..., exited with 3`` | ``transient`` (I/O, network, S3 / MLflow down; or an internal error) | yes |
| other / DVC itself failed (lock held, I/O, killed) | anything else | ``error`` | yes |
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from rewardline import paths

#: The Markdown gate report each gated stage writes (relative to the project).
GATE_REPORTS = {stage: paths.gate_report(stage) for stage in paths.GATED_STAGES}
_EXIT = re.compile(r"failed to run: .*, exited with (-?\d+)")


@dataclass
class StageRun:
    stage: str
    returncode: int  # of dvc (0 = the stage ran or was up to date)
    output: str  # stdout and stderr of dvc and the stage, interleaved
    seconds: float

    @property
    def stage_exit(self) -> int | None:
        """The stage command's own exit status as DVC reported it (None: DVC did not run it / no failure)."""
        found = _EXIT.findall(self.output)
        return int(found[-1]) if found else None

    @property
    def kind(self) -> str:
        """``ok``, ``gate``, ``config``, ``transient`` or ``error`` (see the module docstring)."""
        if self.returncode == 0:
            return "ok"
        return {1: "gate", 2: "config", 3: "transient"}.get(self.stage_exit, "error")

    @property
    def retryable(self) -> bool:
        """Whether running the stage again may succeed: not for a failed gate or bad input."""
        return self.kind in ("transient", "error")

    @property
    def message(self) -> str:
        """What the stage said about its failure: from the line naming the failed gate / error."""
        lines = [ln for ln in self.output.splitlines() if ln.strip()]
        heads = ("error:", "internal error:")
        start = next((i for i, ln in enumerate(lines) if "gate failed" in ln or ln.startswith(heads)), None)
        if start is None:
            return "\n".join(lines[-20:])
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("ERROR:")), len(lines))
        return "\n".join(lines[start:end])


def stage_names(project: Path) -> list[str]:
    """The stages of ``dvc.yaml`` in file order (written upstream first)."""
    return list((yaml.safe_load((project / "dvc.yaml").read_text()) or {}).get("stages", {}))


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    """This interpreter's bin first on PATH, so ``python`` in the stage commands is this environment."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
            **(extra or {})}


def dvc(project: Path, *args: str, on_line: Callable[[str], None] | None = None,
        env: dict[str, str] | None = None, timeout: float | None = None) -> tuple[int, str]:
    """Run ``dvc <args>`` in ``project``; stream each output line to ``on_line``; (returncode, output)."""
    proc = subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=project, env=_env(env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    lines = []
    deadline = time.monotonic() + timeout if timeout else None
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if on_line and line.strip():
            on_line(line.rstrip("\n"))
        if deadline and time.monotonic() > deadline:
            proc.kill()
            break
    return proc.wait(), "".join(lines)


def repro(stage: str, project: Path, on_line: Callable[[str], None] | None = None,
          env: dict[str, str] | None = None) -> StageRun:
    """``dvc repro --single-item <stage>``: run this one stage when its deps, params or outs changed."""
    start = time.monotonic()
    code, output = dvc(project, "repro", "--single-item", stage, on_line=on_line, env=env)
    return StageRun(stage, code, output, time.monotonic() - start)


def gate_report(project: Path, stage: str) -> str | None:
    """The stage's Markdown gate report, when it has one and it exists."""
    rel = GATE_REPORTS.get(stage)
    path = project / rel if rel else None
    return path.read_text() if path and path.exists() else None


def gate_table(report_md: str | None) -> str:
    """The gate table of a gate report (:func:`gate_report`: the Markdown table whose header starts ``| gate |``)."""
    lines = (report_md or "").splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.replace(" ", "").startswith("|gate|")), None)
    if start is None:
        return ""
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def remotes(project: Path) -> list[str]:
    """Names of the configured DVC remotes."""
    code, output = dvc(project, "remote", "list")
    return [ln.split()[0] for ln in output.splitlines() if ln.strip()] if code == 0 else []
