"""The retraining ledger: which inbox batch reached which state, so each is processed exactly once.

``data/retrain/ledger.jsonl`` holds one JSON event per line, appended and never edited::

    {"batch_id", "content_hash", "state", "time", ...details}

States of a batch, in order: ``started`` → ``decided`` (drift numbers and the decision) →
``appended`` (its rankings were written to the fresh raw data) → ``done``. ``done`` is
written only after everything the batch caused is in place (data appended, pipeline run,
challenger registered), so a batch whose last state is not ``done`` was interrupted: the
retrain logic rolls it back (``rolled_back``: its fresh data file removed) and redoes it.
A batch whose content hash matches an earlier ``done`` batch is recorded as ``duplicate``. A batch whose own data
is bad input (:class:`rewardline.retraining.inbox.Rejected`: a sample or ranking record it cannot use) is recorded
as ``rejected`` with the reason: final, so the next run does not retry it (and block the batches after it) as it
retries an interrupted one; an outage is not a rejection.

Every update holds the ledger's exclusive lock (:func:`rewardline.ops.atomic.exclusive`) while it
reads the file, appends its line and rewrites it atomically (temp file + rename,
:mod:`rewardline.ops.storage`): concurrent writers queue and no event is lost, and a crash
leaves the previous or the next version, never half a line. Batch ids are checked
(:func:`rewardline.retraining.inbox.batch_id_problem`): recording a bad one raises, and an
event with a bad one (a hand-edited file) is skipped with a warning, never acted on. A line that is not an event
(not JSON, no string ``content_hash`` or ``state``) is :class:`~rewardline.errors.BadInput` naming the ledger's line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from rewardline.errors import BadInput, json_type
from rewardline.ops import storage
from rewardline.ops.atomic import exclusive, lock_timeout
from rewardline.retraining.inbox import batch_id_problem, check_batch_id

STATES = ("started", "decided", "appended", "done", "duplicate", "rejected", "rolled_back")
FINAL = ("done", "duplicate", "rejected")
LOCK_TIMEOUT = 60.0  # seconds a writer waits for the ledger (appends take milliseconds)
log = logging.getLogger(__name__)


def parse_event(line: bytes, where: dict) -> dict:
    """One ledger line as a JSON object, else :class:`~rewardline.errors.BadInput` (exit 2) naming ``where``
    (file and line): a damaged or hand-edited ledger is not a crash to retry."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise BadInput(**where, detail=f"not valid JSON ({err}); expected one event per line: "
                                       "{batch_id, content_hash, state, time, ...}") from None
    if not isinstance(event, dict):
        raise BadInput(**where, expected="an event {batch_id, content_hash, state, time, ...}", got=json_type(event))
    return event


@dataclass
class Ledger:
    path: Path

    def events(self) -> list[dict]:
        """Every event in order; one whose batch id is invalid is skipped with a warning."""
        if not self.path.exists():
            return []
        events = []
        for number, line in enumerate(self.path.read_bytes().splitlines(), start=1):
            if not line.strip():
                continue
            event = parse_event(line, {"file": str(self.path), "line": number})
            problem = batch_id_problem(event.get("batch_id"))
            if problem:
                log.warning("%s:%d: %s; event skipped", self.path, number, problem)
                continue
            for name in ("content_hash", "state"):
                if not isinstance(event.get(name), str):
                    raise BadInput(self.path, line=number, field=name, expected="a string",
                                   got=json_type(event[name]) if name in event else "nothing (missing)")
            events.append(event)
        return events

    def record(self, batch_id: str, content_hash: str, state: str, **details: object) -> dict:
        """Append one event: under the ledger's lock, an atomic rewrite of the whole file."""
        if state not in STATES:
            raise ValueError(f"ledger state {state!r}: expected one of {STATES}")
        event = {"batch_id": check_batch_id(batch_id), "content_hash": content_hash, "state": state,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **details}
        line = orjson.dumps(event, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        with exclusive(self.path, timeout=lock_timeout(LOCK_TIMEOUT), what="retrain ledger"):
            old = self.path.read_bytes() if self.path.exists() else b""
            storage.write_bytes(str(self.path), old + line)
        return event

    def last_state(self) -> dict[str, str]:
        """batch_id -> its latest state."""
        return {e["batch_id"]: e["state"] for e in self.events()}

    def finished(self, batch_id: str) -> bool:
        return self.last_state().get(batch_id) in FINAL

    def done_by_hash(self) -> dict[str, str]:
        """content_hash -> batch_id of batches that reached ``done``."""
        return {e["content_hash"]: e["batch_id"] for e in self.events() if e["state"] == "done"}

    def interrupted(self) -> list[str]:
        """Batches that started but whose latest state is neither final nor ``rolled_back``."""
        return sorted(b for b, s in self.last_state().items() if s not in (*FINAL, "rolled_back"))

    def count(self, batch_id: str, state: str) -> int:
        return sum(1 for e in self.events() if e["batch_id"] == batch_id and e["state"] == state)
