"""Best-of-N inputs: candidate responses grouped by prompt, each with a gold value.

Shapes: JSONL / JSON-list rows ``{prompt, response, gold}`` (gold any real number: a judge's
preference, correctness 0/1, a gold reward model's score); AlpacaEval annotation records
(``instruction``, ``output_1`` = the reference, ``output_2`` = the sample, ``preference`` in [1, 2];
gold = P(sample beats reference) = preference − 1); GSM8K model-solution rows (gold = ``is_correct``).
``--format auto`` picks by field names; gzip, a JSON list or JSONL; a directory means its files.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rewardline import errors
from rewardline.data.messages import check_prompt, check_text

FORMATS = ("auto", "jsonl", "alpaca-eval", "gsm8k")


class BadInput(ValueError):
    """A source record the loader cannot use; the message names file, line (or record), field."""


@dataclass
class Candidates:
    """Candidate responses; ``prompt_index[j]`` numbers candidate j's prompt (0..P−1, first-seen order)."""

    prompts: list[Any]  # one per candidate: text or a message list, as the scorer takes it
    responses: list[str]
    gold: np.ndarray  # float64 [n]
    prompt_index: np.ndarray  # int64 [n]
    origins: list[str] = field(default_factory=list)  # the files read

    @property
    def n_prompts(self) -> int:
        return int(self.prompt_index.max()) + 1 if self.prompt_index.size else 0


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() not in (".md", ".txt"))
        if not found:
            raise BadInput(f"{path}: directory holds no data files")
        return found
    if not path.exists():
        raise BadInput(f"{path}: no such file or directory")
    return [path]


def _records(path: Path) -> list[tuple[str, Any]]:
    """(location, parsed JSON value) per record: ``file:LINE`` for JSONL, ``file: record N`` in a JSON list."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise BadInput(f"{path}: corrupt gzip data: {err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadInput(f"{path}: not UTF-8 text ({err})") from None
    if text.lstrip()[:1] == "[":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise BadInput(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        return [(f"{path}: record {i}", v) for i, v in enumerate(values, start=1)]
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError as err:
            raise BadInput(f"{path}:{number}: not valid JSON ({err.msg})") from None
    return out


def _detect(location: str, record: Any) -> str:
    if isinstance(record, dict):
        if {"prompt", "response", "gold"} <= record.keys():
            return "jsonl"
        if {"instruction", "output_2", "preference"} <= record.keys():
            return "alpaca-eval"
        if {"question", "solutions"} <= record.keys():
            return "gsm8k"
    raise BadInput(f"{location}: cannot tell the format: expected an object with prompt/response/gold "
                   "(jsonl), instruction/output_2/preference (alpaca-eval) or question/solutions (gsm8k)")


def _need(location: str, record: dict, name: str, kind: str) -> Any:
    """``record[name]`` checked to be a ``kind``: text (non-empty str), number (finite, not bool), bool,
    list (non-empty), prompt (text or {role, content} messages)."""
    if name not in record or record[name] is None:
        raise BadInput(f"{location}: field '{name}': missing (expected {kind})")
    value = record[name]
    ok = {
        "text": isinstance(value, str) and value.strip() != "",
        "number": isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list) and len(value) > 0,
        "prompt": (isinstance(value, str) and value.strip() != "") or (
            isinstance(value, list) and len(value) > 0
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in value)),
    }[kind]
    if not ok:
        expected = {"text": "a non-empty string", "number": "a finite number", "bool": "true or false",
                    "list": "a non-empty list", "prompt": "a non-empty string or a list of {role, content}"}[kind]
        raise BadInput(f"{location}: field '{name}': expected {expected}, got {json.dumps(value)[:80]}")
    if kind in ("text", "prompt"):
        _check_texts(location, name, value)
    return value


def _check_texts(location: str, name: str, value: str | list[dict]) -> None:
    """Text or messages the scorer can take, as ``rewardline score`` and ingest require
    (:func:`~rewardline.data.messages.check_prompt`: known roles, valid Unicode), raised as this loader's error."""
    try:
        if isinstance(value, str) and name != "prompt":
            check_text(value, {"file": location}, name)
        else:
            check_prompt(value, {"file": location})
    except errors.BadInput as err:
        raise BadInput(str(err)) from None


def _rows(location: str, record: Any, fmt: str) -> list[tuple[Any, str, float]]:
    """(prompt, response, gold) candidates of one record."""
    if not isinstance(record, dict):
        raise BadInput(f"{location}: expected a JSON object, got {type(record).__name__}")
    if fmt == "jsonl":
        return [(_need(location, record, "prompt", "prompt"), _need(location, record, "response", "text"),
                 float(_need(location, record, "gold", "number")))]
    if fmt == "alpaca-eval":
        preference = float(_need(location, record, "preference", "number"))
        if not 1.0 <= preference <= 2.0:
            raise BadInput(f"{location}: field 'preference': expected a number in [1, 2], got {preference}")
        return [(_need(location, record, "instruction", "text"), _need(location, record, "output_2", "text"),
                 preference - 1.0)]
    question = _need(location, record, "question", "text")
    out = []
    for j, solution in enumerate(_need(location, record, "solutions", "list")):
        where = f"{location}: solutions[{j}]"
        if not isinstance(solution, dict):
            raise BadInput(f"{where}: expected an object with solution and is_correct")
        out.append((question, _need(where, solution, "solution", "text"),
                    float(_need(where, solution, "is_correct", "bool"))))
    return out


def load_candidates(sources: list[Path | str], fmt: str = "auto") -> Candidates:
    """Read every source (file or directory) into candidates grouped by prompt. Raises :class:`BadInput`."""
    if fmt not in FORMATS:
        raise BadInput(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    prompts: list[Any] = []
    responses: list[str] = []
    gold: list[float] = []
    keys: list[str] = []
    origins: list[str] = []
    for source in sources:
        for path in _files(Path(source)):
            origins.append(str(path))
            records = _records(path)
            file_fmt = _detect(*records[0]) if fmt == "auto" and records else fmt
            for location, record in records:
                for prompt, response, value in _rows(location, record, file_fmt):
                    prompts.append(prompt)
                    responses.append(response)
                    gold.append(value)
                    keys.append(prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True))
    if not responses:
        raise BadInput(f"{', '.join(map(str, sources))}: no candidates")
    codes: dict[str, int] = {}
    prompt_index = np.fromiter((codes.setdefault(k, len(codes)) for k in keys), np.int64, len(keys))
    return Candidates(prompts, responses, np.asarray(gold, np.float64), prompt_index, origins)
