"""Every command in the docs' shell code blocks still exists: each one that can run offline is run with
``--help`` (or ``make -n``), the others are on a curated list with the reason they are not run.

Blocks: fenced ``bash`` / ``sh`` / ``shell`` / ``console`` blocks of README.md, docs/*.md and infra/README.md,
plus the ``rewardline ...`` synopsis lines of their ``text`` blocks. A command is a line (continuations
joined, a trailing ``# comment`` dropped) or a part of one split at ``&&`` / ``;``; ``[optional]`` and
``a|b`` alternatives in a synopsis count as their first alternative. A command whose program is neither
runnable here nor on :data:`NOT_RUN` fails the test: document it in one of the two.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = ("README.md", "infra/README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")))
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)  # list items' indented blocks too
BIN = Path(sys.executable).parent

#: Programs documented but not run here, and why (no network, no Docker, or they change state).
NOT_RUN = {
    "export": "shell builtin (environment for the next commands)",
    "set": "shell builtin",
    "cp": "copies a file the reader creates",
    "chmod": "changes the mode of a secrets file the reader creates",
    "aws": "AWS CLI: not a dependency; needs an S3 endpoint",
    "docker": "no Docker on the dev machine (tests/ops/test_compose.py checks the compose file)",
    "curl": "needs a running model server",
    "git": "checks out a commit the reader names",
    "sed": "fills in the reader's notification block id",
    ".": "sources the credentials file that `rewardline stack up` writes",
    "{\"predictions\":": "sample output, not a command",
    "cd": "shell builtin",
    "source": "shell builtin (a virtual environment on the reader's nodes)",
    "for": "shell loop keyword (the loop's command is checked on its own line)",
    "do": "shell loop keyword",
    "done": "shell loop keyword",
    "srun": "Slurm: not on the dev machine",
    "vllm": "vLLM: not a dependency (a GPU server that loads the exported model)",
    "head=$(scontrol": "Slurm: the rendezvous host from the job's node list",
}
#: Documented sub-commands whose ``--help`` is not the check (they need services or change state).
PLACEHOLDERS = re.compile(r"^<[^>]+>$")


def _strip_comment(line: str) -> str:
    return re.sub(r"\s+#\s.*$", "", line).rstrip()


def documented_commands() -> list[tuple[str, str]]:
    """(doc file, command) for every command line of the docs' shell blocks and ``rewardline`` synopses."""
    found = []
    for doc in DOCS:
        for lang, body in FENCE.findall((ROOT / doc).read_text()):
            shell = lang in SHELL_BLOCKS
            if not shell and lang not in {"text", ""}:
                continue
            joined = re.sub(r"\\\n\s*", " ", body)
            for raw in joined.splitlines():
                line = _strip_comment(raw.strip().removeprefix("$ "))
                if not line or line.startswith("#"):
                    continue
                if not shell and not line.startswith("rewardline "):
                    continue
                found += [(doc, part.strip()) for part in re.split(r"\s*(?:&&|;)\s*", line) if part.strip()]
    return found


def _words(command: str) -> list[str]:
    """The command's words up to its first option or placeholder, alternatives resolved to the first."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # VAR=value prefix
        words = words[1:]
    if words and words[0] == "nice":
        words = words[3:] if words[1:2] == ["-n"] else words[1:]
    if words and words[0].endswith("/python"):
        words[0] = "python"
    if words[:1] == ["python"] and words[1:2] == ["-m"]:
        return words[:3]
    head = []
    for word in words:
        if word.startswith(("-", "[", "{")) or PLACEHOLDERS.match(word) or word.isupper():
            break
        head.append(word.split("|")[0])
    return head


def help_invocation(command: str) -> list[str] | None:
    """The offline check of a documented command, or None when its program is on :data:`NOT_RUN`."""
    words = _words(command)
    program = words[0] if words else command.split()[0]
    if program in NOT_RUN:
        return None
    if program == "make":
        return ["make", "-n", *words[1:]]
    if program == "bash":  # a script of the repo: its --help
        return ["bash", words[1], "--help"]
    if program == "python":
        if words[1:2] == ["-m"]:
            return [sys.executable, "-m", words[2], "--help"]
        return [sys.executable, words[1], "--help"]
    depth = {"rewardline": 3, "dvc": 3, "prefect": 3, "mlflow": 3, "ray": 2, "torchrun": 1, "pytest": 1}.get(program)
    if depth is None:
        pytest.fail(f"documented command {command!r}: program {program!r} is neither checked here nor in NOT_RUN")
    # sub-commands only: stop at the first argument that is a path, a URI or a value
    sub = [w for w in words[1:depth] if re.fullmatch(r"[a-z][a-z-]*", w)]
    return [str(BIN / program), *sub, "--help"]


@cache
def _run(invocation: tuple[str, ...]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(list(invocation), cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


COMMANDS = documented_commands()


def test_the_docs_hold_the_commands_this_test_knows():
    programs = {(_words(c) or c.split())[0] for _, c in COMMANDS}
    assert {"rewardline", "dvc", "prefect", "python", "make"} <= programs, programs
    synopses = {tuple(_words(c)[:2]) for _, c in COMMANDS if c.startswith("rewardline ")}
    assert ("rewardline", "promote") in synopses and ("rewardline", "stack") in synopses, synopses


@pytest.mark.slow  # ~45 CLI start-ups (prefect, dvc, mlflow, rewardline): minutes on a loaded 2-core machine
@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_documented_command_runs_offline(doc: str, command: str):
    invocation = help_invocation(command)
    if invocation is None:
        program = (_words(command) or command.split())[0]
        pytest.skip(f"not run: {NOT_RUN[program]}")
    done = _run(tuple(invocation))
    assert done.returncode == 0, f"{doc}: `{command}` -> `{shlex.join(invocation)}` exit {done.returncode}\n" \
                                 f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    if "--help" in invocation:
        assert "usage" in (done.stdout + done.stderr).lower(), done.stdout
