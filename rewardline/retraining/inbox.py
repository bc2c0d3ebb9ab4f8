"""The inbox of fresh policy-sample batches: a local directory or an ``s3://bucket/prefix``, read alike.

Layout (one directory / key prefix per batch)::

    <inbox>/<batch_id>/samples.jsonl    policy samples, one per line:
                                        {prompt_id, prompt, response, category?, source?, response_id?}
    <inbox>/<batch_id>/rankings.jsonl   optional, once annotated: rankings in the native
                                        ``rankings`` format (docs/data-contract.md)
    <inbox>/<batch_id>/manifest.json    written LAST: {"batch_id", "files": {name: sha256}}; its batch_id
                                        (optional) is the folder's name, else the manifest is malformed

A batch id is a plain name (:data:`BATCH_ID`: letters, digits, ``.``, ``_``, ``-``; no ``..``):
it becomes a folder, a key prefix and a file name, so a listed id that is not one (e.g. ``..``
from the S3 key ``inbox/../samples.jsonl``) is skipped with the reason, never joined into a path.
A batch is *ready* when its manifest exists and every file it lists has that sha256, so a
batch that is still being uploaded (no manifest yet) or was damaged (hash mismatch) is not
picked up. :func:`write_batch` is the producer's side. A batch's ``content_hash`` covers
the data files, not its name: the same data submitted under another name is recognised.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import orjson

from rewardline.errors import BadInput, json_type
from rewardline.ops import storage

MANIFEST = "manifest.json"
BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SAMPLES = "samples.jsonl"
RANKINGS = "rankings.jsonl"


@dataclass(frozen=True)
class Batch:
    batch_id: str
    uri: str  # <inbox>/<batch_id>
    files: dict[str, str]  # file name -> sha256, from the verified manifest
    content_hash: str  # sha256 of the sorted "name:sha256" lines of the data files

    @property
    def labelled(self) -> bool:
        return RANKINGS in self.files

    def file_uri(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def read(self, name: str) -> bytes:
        return storage.read_bytes(self.file_uri(name))

    def samples(self) -> list[dict]:
        """The policy samples, one dict per line of ``samples.jsonl``; a line that is not
        ``{prompt_id, prompt, response, ...}`` raises :class:`Rejected` (exit 2) naming it."""
        data = self.read(SAMPLES)  # an outage or a refused read raises as such: only the content rejects a batch
        with rejecting(self.batch_id):
            return parse_samples(data, self.file_uri(SAMPLES))


class Rejected(BadInput):
    """A batch's own data is bad input (exit 2), said as the :class:`~rewardline.errors.BadInput` it came from said
    it (file, line, field, what was expected): the retrain ledger closes the batch as ``rejected``, not retried."""

    def __init__(self, batch_id: str, cause: BadInput) -> None:
        super().__init__(detail=str(cause))
        self.batch_id = batch_id
        self.file, self.line, self.field, self.expected, self.got = (cause.file, cause.line, cause.field,
                                                                     cause.expected, cause.got)


@contextmanager
def rejecting(batch_id: str) -> Iterator[None]:
    """A :class:`~rewardline.errors.BadInput` raised in the block, which parses batch ``batch_id``'s data already
    read, as :class:`Rejected`; everything else (an outage, a bad setting, the champion) passes unchanged."""
    try:
        yield
    except Rejected:
        raise
    except BadInput as err:
        raise Rejected(batch_id, err) from err


@dataclass(frozen=True)
class Skipped:
    batch_id: str
    reason: str


def parse_samples(data: bytes, source: str) -> list[dict]:
    """The rows of a ``samples.jsonl`` (``source`` names it in errors): each a JSON object with a string
    ``prompt_id`` and the ``prompt`` / ``response`` that ``rewardline score`` takes (its row check), else
    :class:`~rewardline.errors.BadInput` ``FILE:LINE: field 'F': expected E, got G``."""
    from rewardline.modeling.score import check_score_row

    samples = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        where = {"file": source, "line": number}
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            raise BadInput(**where, detail=f"not valid JSON ({err}); expected one JSON object per line") from None
        check_score_row(row, where)
        if not isinstance(row.get("prompt_id"), str):
            got = json_type(row["prompt_id"]) if "prompt_id" in row else "nothing (missing)"
            raise BadInput(**where, field="prompt_id", expected="a string", got=got)
        samples.append(row)
    return samples


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(files: dict[str, str]) -> str:
    return sha256("".join(f"{name}:{digest}\n" for name, digest in sorted(files.items())).encode())


def batch_id_problem(batch_id: object) -> str | None:
    """Why ``batch_id`` is not a valid batch id (None when it is): it must match :data:`BATCH_ID`
    in full, without ``..``, so it can never leave the folder it names."""
    if not isinstance(batch_id, str) or not BATCH_ID.fullmatch(batch_id) or ".." in batch_id:
        return (f"invalid batch id {batch_id!r}: expected 1-128 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit, without '..'")
    return None


def check_batch_id(batch_id: object) -> str:
    """``batch_id`` itself when valid, else ``ValueError`` with :func:`batch_id_problem`'s reason."""
    problem = batch_id_problem(batch_id)
    if problem:
        raise ValueError(problem)
    return batch_id  # type: ignore[return-value]


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def discover(inbox: str) -> tuple[list[Batch], list[Skipped]]:
    """Ready batches under ``inbox`` (sorted by id) and the ones skipped, with why.

    A local inbox that does not exist yet is empty.
    """
    if not storage.is_remote(inbox) and not os.path.isdir(inbox):
        return [], []
    root = inbox.rstrip("/") + "/"
    by_batch: dict[str, set[str]] = {}
    ready, skipped = [], []
    for uri in storage.list_files(root):
        rel = uri[len(root):] if uri.startswith(root) else None
        if rel in (MANIFEST, SAMPLES, RANKINGS):  # a batch's file dropped without its folder: said, not ignored
            skipped.append(Skipped(rel, f"{rel} is at the inbox's top level; a batch goes in its own folder: "
                                        f"{_join(inbox, '<batch_id>', rel)}"))
        if not rel or "/" not in rel:
            continue  # a file at the inbox's top level, or another prefix sharing the name
        batch_id, name = rel.split("/", 1)
        by_batch.setdefault(batch_id, set()).add(name)
    for batch_id in sorted(by_batch):
        names = by_batch[batch_id]
        problem = batch_id_problem(batch_id)
        if problem:  # e.g. ".." from an S3 key: never joined into a path
            skipped.append(Skipped(batch_id, f"{problem}; not read"))
            continue
        if MANIFEST not in names:
            skipped.append(Skipped(batch_id, "no manifest.json yet (upload not finished)"))
            continue
        uri = _join(inbox, batch_id)
        files = manifest_files(storage.read_bytes(_join(uri, MANIFEST)), batch_id)
        problem = files if isinstance(files, str) else _verify(uri, files, names)
        if problem:
            skipped.append(Skipped(batch_id, problem))
            continue
        ready.append(Batch(batch_id, uri, files, content_hash(files)))
    return ready, skipped


MANIFEST_SHAPE = '{"batch_id": ..., "files": {"samples.jsonl": "<sha256>", ...}}'


def manifest_files(data: bytes, batch_id: str) -> dict[str, str] | str:
    """The ``files`` of batch ``batch_id``'s ``manifest.json`` (file name -> sha256), or what is wrong with it, naming
    the field and the expected shape (:data:`MANIFEST_SHAPE`). Its ``batch_id``, when given, names the batch's folder:
    one that names another (a folder copied or renamed without its manifest) makes the manifest malformed."""
    try:
        manifest = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        return f"{MANIFEST} is not valid JSON ({err}); expected {MANIFEST_SHAPE}"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        got = json_type(manifest) if not isinstance(manifest, dict) else (
            json_type(files) if "files" in manifest else "no field 'files'")
        return f"{MANIFEST}: expected {MANIFEST_SHAPE}, got {got}"
    for name, digest in files.items():
        if not isinstance(digest, str):
            return f"{MANIFEST}: field 'files.{name}': expected a sha256 hex string, got {json_type(digest)}"
    named = manifest.get("batch_id", batch_id)
    if named != batch_id:
        got = repr(named) if isinstance(named, str) else json_type(named)
        return f"{MANIFEST}: field 'batch_id': expected {batch_id!r} (the batch's folder name), got {got}"
    return files


def _verify(uri: str, files: dict[str, str], present: set[str]) -> str | None:
    if SAMPLES not in files:
        return f"manifest lists no {SAMPLES}"
    for name, digest in sorted(files.items()):
        if name not in present:
            return f"{name} is listed in the manifest but missing"
        if sha256(storage.read_bytes(_join(uri, name))) != digest:
            return f"{name} does not match its sha256 in the manifest"
    return None


def write_batch(inbox: str, batch_id: str, samples: bytes, rankings: bytes | None = None) -> Batch:
    """Submit a batch: the data files first, the manifest (with their sha256) last."""
    check_batch_id(batch_id)
    uri = _join(inbox, batch_id)
    files = {SAMPLES: samples} if rankings is None else {SAMPLES: samples, RANKINGS: rankings}
    for name, data in files.items():
        storage.write_bytes(_join(uri, name), data)
    digests = {name: sha256(data) for name, data in files.items()}
    storage.write_bytes(_join(uri, MANIFEST), orjson.dumps({"batch_id": batch_id, "files": digests},
                                                           option=orjson.OPT_INDENT_2))
    return Batch(batch_id, uri, digests, content_hash(digests))
