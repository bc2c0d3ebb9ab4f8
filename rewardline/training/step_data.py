"""Step-labelled solutions (``solutions.parquet`` of an ingest / validate directory) as PRM training groups.

One group per problem (``prompt_id``): its solutions, each encoded once as
``prompt + step_1 + SEP + ... + step_K + SEP`` (:mod:`rewardline.modeling.steps`), with the
separator position, BCE target and mask of every kept step and the solution's outcome.

Labels → BCE targets (the contract of ``solutions.parquet``)::

    step label  1 (correct)   → 1          -1 (incorrect) → 0
                0 (neutral)   → 1 / 0 / ignored     (``prm_neutral_as``: correct | incorrect | ignore)
                null (unknown)→ ignored (mask 0)
    outcome     1 → 1,  0 → 0,  null → ignored

Splits: ``u = unit_interval(prompt_id, salt)`` (:func:`rewardline.data.hashing.unit_interval`, the
pairs stage's hash): train ``u < f_train``, val ``f_train ≤ u < f_train + f_val``, test the rest, so
a problem is never in two splits and the PRM never trains on the test problems.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rewardline.data.hashing import unit_interval
from rewardline.data.schema import SOLUTIONS_FILE
from rewardline.data.tables import PAIRS_DIRECTORY, RANKINGS_OUTPUT, STEP_DATA, STEP_FORMATS, stage_kind
from rewardline.modeling.steps import EncodedSolutions
from rewardline.modeling.tokenize import TokenizedResponses
from rewardline.training.batching import Group

NEUTRAL_TARGETS = {"correct": 1.0, "incorrect": 0.0, "ignore": None}
SPLITS = ("train", "val", "test")


def solutions_path(data_dir: Path) -> Path | None:
    """``data_dir/solutions.parquet`` when it exists and has rows, else None."""
    path = Path(data_dir) / SOLUTIONS_FILE
    return path if path.exists() and pq.ParquetFile(path).metadata.num_rows > 0 else None


def split_of(prompt_ids: pa.Array | pa.ChunkedArray | list[str], salt: str, train_fraction: float,
             val_fraction: float) -> np.ndarray:
    """``"train" | "val" | "test"`` for each prompt id (module docstring)."""
    u = unit_interval(prompt_ids, salt=salt)
    return np.where(u < train_fraction, "train", np.where(u < train_fraction + val_fraction, "val", "test"))


def no_step_data(data_dir: Path, problem: str) -> str:
    """The message for a ``data_dir`` without step-labelled solutions: ``problem`` (not found, empty), what was
    expected and what ``data_dir`` is instead (preference data: what it trains)."""
    found = stage_kind(data_dir) or ""
    if found == PAIRS_DIRECTORY or found.startswith(RANKINGS_OUTPUT):
        there = (f"; {data_dir} is {found.split(':')[0]}, preference data: it trains an outcome reward model "
                 "(train.objective bt, thurstone or bt+thurstone, not prm)")
    else:
        there = f"; {data_dir} is {found}" if found else ""
    return (f"{data_dir / SOLUTIONS_FILE} {problem}: expected {STEP_DATA}, the solutions table of `rewardline ingest "
            f"SRC --format F` (F: {STEP_FORMATS}){there}")


def read_solutions(data_dir: Path, split: str | None = None, salt: str = "", train_fraction: float = 0.8,
                   val_fraction: float = 0.1) -> pa.Table:
    """The solutions of ``data_dir`` (one ``split`` of them when given)."""
    path = Path(data_dir) / SOLUTIONS_FILE
    if not path.exists():
        raise FileNotFoundError(no_step_data(Path(data_dir), "not found"))
    table = pq.read_table(path)
    if split is None:
        return table
    mask = split_of(table["prompt_id"], salt, train_fraction, val_fraction) == split
    return table.filter(pa.array(mask))


def step_targets(labels: list[int | None], neutral_as: str) -> tuple[np.ndarray, np.ndarray]:
    """``(target, known)`` float32 arrays of one solution's step labels (module docstring)."""
    neutral = NEUTRAL_TARGETS[neutral_as]
    target = np.zeros(len(labels), np.float32)
    known = np.zeros(len(labels), np.float32)
    for k, label in enumerate(labels):
        value = {1: 1.0, -1: 0.0, 0: neutral}.get(label) if label is not None else None
        if value is not None:
            target[k], known[k] = value, 1.0
    return target, known


def tokenized_solutions(ids: list[str], enc: EncodedSolutions, fingerprint: str) -> TokenizedResponses:
    """The encoded solutions in the ragged layout of :class:`TokenizedResponses` (rows = solutions)."""
    lengths = np.array([len(x) for x in enc.input_ids], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = [t for x in enc.input_ids for t in x]
    types = [t for x in enc.token_type_ids for t in x]
    return TokenizedResponses(ids, offsets, np.array(flat, np.int64), np.array(types, np.int64), lengths,
                              np.array(enc.prompt_truncated, bool), np.array(enc.steps_dropped) > 0, fingerprint,
                              False)


def outcome_pairs(outcome: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The within-problem pairs ``(a, b)`` (local indices) of one problem's solutions: every ``a`` with outcome
    1 against every ``b`` with outcome 0, both known (the ``prm`` objective's pair term)."""
    good = np.flatnonzero((known > 0) & (outcome > 0.5))
    bad = np.flatnonzero((known > 0) & (outcome <= 0.5))
    return np.repeat(good, len(bad)).astype(np.int64), np.tile(bad, len(good)).astype(np.int64)


def solution_groups(table: pa.Table, enc: EncodedSolutions, tok: TokenizedResponses, neutral_as: str,
                    row_offset: int = 0) -> list[Group]:
    """One :class:`Group` per problem of ``table`` (rows ``row_offset ..`` of ``tok``): each solution's
    kept steps with their separator positions, BCE targets and masks, its outcome, and the problem's
    correct-vs-wrong pairs as the group's comparisons (:func:`outcome_pairs`, label 1, weight 1)."""
    cols = table.select(["prompt_id", "step_labels", "outcome"]).to_pydict()
    by_prompt: dict[str, list[int]] = {}
    for i, pid in enumerate(cols["prompt_id"]):
        by_prompt.setdefault(pid, []).append(i)
    groups = []
    for pid, idx in by_prompt.items():
        step_row, step_col, target, known = [], [], [], []
        outcome, outcome_known = [], []
        for local, i in enumerate(idx):
            positions = enc.positions[i]
            t, k = step_targets(list(cols["step_labels"][i] or [])[: len(positions)], neutral_as)
            step_row += [local] * len(positions)
            step_col += positions
            target.append(t)
            known.append(k)
            out = cols["outcome"][i]
            outcome.append(float(out) if out is not None else 0.0)
            outcome_known.append(1.0 if out is not None and positions else 0.0)
        rows = np.array(idx, np.int64) + row_offset
        a, b = outcome_pairs(np.array(outcome), np.array(outcome_known))
        ones = np.ones(len(a), np.float32)
        groups.append(Group(
            prompt_id=pid, rows=rows, a=a, b=b, label=ones, margin=ones * 0, weight=ones,
            max_len=int(tok.lengths[rows].max()), step_row=np.array(step_row, np.int64),
            step_col=np.array(step_col, np.int64), step_target=np.concatenate(target),
            step_known=np.concatenate(known), outcome=np.array(outcome, np.float32),
            outcome_known=np.array(outcome_known, np.float32),
        ))
    return groups


def solutions_fingerprint(path: Path, tokenizer_digest: str, fmt: dict[str, Any], separator: str) -> str:
    """What the encoded solutions depend on: the file's bytes, the tokenizer, the format, the separator."""
    h = hashlib.sha256(Path(path).read_bytes())
    h.update(f"{tokenizer_digest}|{sorted(fmt.items())}|{separator}".encode())
    return h.hexdigest()[:32]


def load_step_groups(data_dir: Path, tokenizer: Any, cfg: Any) -> tuple[TokenizedResponses, list[Group], list[Group],
                                                                        str, bool]:
    """Encode the train and val solutions of ``data_dir`` (``cfg``: the train config) once;
    ``(tokenized, train groups, val groups, separator, separator added to the tokenizer)``."""
    from rewardline.modeling.formatting import Formatter
    from rewardline.modeling.steps import StepFormatter, choose_separator
    from rewardline.modeling.tokenize import tokenizer_digest

    path = Path(data_dir) / SOLUTIONS_FILE
    separator, added = choose_separator(tokenizer)
    formatter = StepFormatter(tokenizer, Formatter(tokenizer, cfg.format_config), separator)
    parts = [read_solutions(data_dir, split, cfg.prm_split_salt, cfg.prm_train_fraction, cfg.prm_val_fraction)
             for split in ("train", "val")]
    table = pa.concat_tables(parts)
    enc = formatter.encode(table["prompt"].to_pylist(), [list(s) for s in table["steps"].to_pylist()])
    fingerprint = solutions_fingerprint(path, tokenizer_digest(tokenizer), cfg.format_config.to_dict(), separator)
    tok = tokenized_solutions(table["solution_id"].to_pylist(), enc, fingerprint)
    train = solution_groups(parts[0], _take(enc, 0, parts[0].num_rows), tok, cfg.prm_neutral_as, 0)
    val = solution_groups(parts[1], _take(enc, parts[0].num_rows, table.num_rows), tok, cfg.prm_neutral_as,
                          parts[0].num_rows)
    if not train:
        problems = len(set(read_solutions(data_dir)["prompt_id"].to_pylist()))
        if problems == 0:  # e.g. an ingest of rankings (every ingest writes the table)
            raise ValueError(no_step_data(Path(data_dir), "holds no solutions"))
        raise ValueError(f"{path} has no solutions in the train split: its {problems} problem(s) all fall in val or "
                         f"test by train.prm_split_salt {cfg.prm_split_salt!r}, prm_train_fraction "
                         f"{cfg.prm_train_fraction}, prm_val_fraction {cfg.prm_val_fraction} (problems are split by "
                         "a hash of their id); expected more problems, or another salt or larger prm_train_fraction")
    return tok, train, val, separator, added


def labelled_groups(groups: list[Group], weight_of: Callable[[Group], float], data_dir: Path) -> list[Group]:
    """The train ``groups`` (problems) of positive weight under the objective (``weight_of``: its ``group_weight``):
    a problem without a labelled step (nor, with ``train.prm_outcome_weight``, a known outcome) adds no loss and no
    gradient, and a global step of such problems alone would have a zero normaliser. ValueError if none is left."""
    kept = [g for g in groups if weight_of(g) > 0]
    if not kept:
        raise ValueError(
            f"{Path(data_dir) / SOLUTIONS_FILE}: no labelled step in the train split ({len(groups)} problems, every "
            "step label null: unknown, as in an ingest of --format solutions without step_labels: outcome); expected "
            "step labels (an ingest of --format gsm8k, prm800k or math-shepherd, or of solutions with step_labels: "
            "outcome), or known outcomes with train.prm_outcome_weight > 0")
    return kept


def _take(enc: EncodedSolutions, lo: int, hi: int) -> EncodedSolutions:
    return EncodedSolutions(enc.input_ids[lo:hi], enc.token_type_ids[lo:hi], enc.positions[lo:hi],
                            enc.steps_dropped[lo:hi], enc.prompt_truncated[lo:hi])
