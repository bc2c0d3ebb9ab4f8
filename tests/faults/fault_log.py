"""The fault suite's tally: each test appends what it injected and what came of it, one JSON line per fault kind.

    REWARDLINE_FAULT_REPORT=/tmp/faults.jsonl pytest -q -m "" tests/faults tests/flows/test_flows.py
    python tests/faults/fault_log.py /tmp/faults.jsonl      # the Markdown table of docs/reliability.md

``injected``: faults injected (kills, stopped servers, full disks, ...); ``survived``: runs after
which the output was the old or the new complete result and the process ended with the
contract's exit code (:mod:`rewardline.errors`); ``lost``: outputs found partial, mixed or
missing rows, or events missing from a ledger (must be 0). A test records before it asserts,
so a failing run still leaves its counts. Without ``REWARDLINE_FAULT_REPORT`` the lines go to
``<tmp>/rewardline-faults-<uid>.jsonl``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

REPORT_ENV = "REWARDLINE_FAULT_REPORT"


def report_path() -> Path:
    default = Path(tempfile.gettempdir()) / f"rewardline-faults-{os.getuid()}.jsonl"
    return Path(os.environ.get(REPORT_ENV) or default)


def record(fault: str, how: str, happened: str, injected: int, survived: int, lost: int) -> None:
    """Append one line (O_APPEND: whole lines even from concurrent writers)."""
    line = json.dumps({"fault": fault, "how": how, "happened": happened, "injected": injected,
                       "survived": survived, "lost": lost}) + "\n"
    path = report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def table(path: Path) -> str:
    """The Markdown fault table (the last line per fault wins, so a re-run replaces its row) and the totals."""
    rows: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["fault"]] = row
    out = ["| fault | how injected | what happened | injected | survived | data lost |",
           "| --- | --- | --- | --- | --- | --- |"]
    out += [f"| {r['fault']} | {r['how']} | {r['happened']} | {r['injected']} | {r['survived']} | {r['lost']} |"
            for r in rows.values()]
    totals = [sum(r[k] for r in rows.values()) for k in ("injected", "survived", "lost")]
    out.append(f"| **total** | | | **{totals[0]}** | **{totals[1]}** | **{totals[2]}** |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Print the fault table (docs/reliability.md) from a fault report.")
    parser.add_argument("report", nargs="?", type=Path, help="JSONL fault report (default: $REWARDLINE_FAULT_REPORT)")
    sys.stdout.write(table(parser.parse_args().report or report_path()))
