"""``rewardline rerank`` on a rows file of any size: the output of :func:`rewardline.serving.rerank.rerank_rows`,
with memory flat in the file's size (one chunk of rows, plus 20 bytes a row and a 16-byte digest a prompt).

Three passes over the rows:

1. **check**: every row is read and checked (:func:`~rewardline.modeling.score.check_score_row`) before the model
   loads; the first malformed row exits 2 naming file, line and field; rows that cannot form the output's table
   are refused here too;
2. **score**: each chunk of :data:`~rewardline.modeling.rows_files.CHUNK_ROWS` rows is scored by
   :meth:`~rewardline.serving.rerank.RewardScorer.rewards` (a decoder encodes a prompt once per chunk); each row is
   pickled to a spill file in a private temp folder, and kept in memory are only its offset there, its reward,
   and its prompt's group: groups are numbered in first-seen order by a BLAKE2b digest of the prompt
   (:func:`~rewardline.serving.rerank.prompt_key`), so a prompt's candidates may lie anywhere in the file;
3. **rank and write**: the groups' rows (:func:`~rewardline.serving.rerank.group_rows`) in first-seen order,
   each best first (:func:`~rewardline.serving.rerank.ranked`: rank, and beats_others
   (1/(k−1)) Σ_{j≠i} σ((r_i − r_j)/T)), read back from the spill file and appended to the output, which
   appears whole at the end or not at all (:func:`~rewardline.modeling.rows_files.rows_writer`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import pickle
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from rewardline.data.limits import Limits
from rewardline.modeling.rows_files import CHUNK_ROWS, RowsFile, open_rows_file, rows_writer, with_columns
from rewardline.modeling.score import check_score_row, win_probability
from rewardline.serving.rerank import (
    RewardScorer,
    group_rows,
    prompt_key,
    ranked,
    ranked_row,
    rerank_counts,
)


class ChunkScorer(Protocol):
    """What scores the chunks: :class:`~rewardline.serving.rerank.RewardScorer` (this process) or
    :class:`~rewardline.serving.ray_engine.RayScorer` (a Ray cluster)."""

    temperature: float
    link: str | None
    residual_sd: float

    def rewards(self, rows: list[dict]) -> np.ndarray: ...


def ranking_columns(scorer: ChunkScorer) -> dict[str, pa.DataType]:
    """The columns rerank adds to each row: reward, rank, beats_others, and win_prob for an absolute-scale model."""
    columns = {"reward": pa.float64(), "rank": pa.int64(), "beats_others": pa.float64()}
    if scorer.link is not None:
        columns["win_prob"] = pa.float64()
    return columns


def rerank_jsonl(model_dir: Path | str, in_path: Path | str, out_path: Path | str, top_k: int | None = None,
                 batch_tokens: int = 16384, limits: Limits | None = None, chunk_rows: int = CHUNK_ROWS,
                 open_scorer: Callable[[], AbstractContextManager[ChunkScorer]] | None = None) -> dict[str, Any]:
    """``rewardline rerank``: the ``{prompt, response, ...}`` rows of ``in_path`` → ``out_path`` grouped by prompt
    (first-seen order), each group best first (its first ``top_k``), each row plus reward, rank, beats_others (and
    win_prob for an absolute-scale model); both rows files (JSONL, Parquet, CSV or TSV by suffix). Three passes
    of ``chunk_rows`` rows (module docstring); the rewards do not depend on ``chunk_rows``. ``open_scorer``: score
    the chunks elsewhere (``--engine ray``); default the model loaded in this process. Returns the counts."""
    limits = limits or Limits()
    with open_rows_file(in_path) as rows_file, tempfile.TemporaryDirectory(prefix="rewardline-rerank-") as folder:
        count, schema = rows_file.check(functools.partial(check_score_row, limits=limits), out_path, limits,
                                        chunk_rows)
        spill = Path(folder) / "rows.pickle"
        with (open_scorer or functools.partial(_in_process, model_dir, batch_tokens))() as scorer:
            if count == 0:  # an empty output with the input's columns and the ranking's
                with rows_writer(out_path, with_columns(schema, ranking_columns(scorer))):
                    pass
                return rerank_counts(0, 0, 0, out_path)
            offsets, rewards, codes = _score_to_spill(scorer, rows_file, spill, limits, chunk_rows)
        groups = group_rows(codes)
        columns = ranking_columns(scorer)
        win = None if scorer.link is None else win_probability(rewards, scorer.link, scorer.residual_sd)
        written = 0
        with rows_writer(out_path, with_columns(schema, columns)) as write, spill.open("rb") as spilled:
            chunk: list[dict] = []
            for i, rank, beats in ranked(groups, rewards, scorer.temperature, top_k):
                spilled.seek(offsets[i])
                chunk.append(ranked_row(pickle.load(spilled), rewards[i], rank, beats, None if win is None else win[i]))
                if len(chunk) == chunk_rows:
                    write(chunk)
                    written, chunk = written + len(chunk), []
            if chunk:
                write(chunk)
                written += len(chunk)
    return rerank_counts(count, len(groups), written, out_path)


def _in_process(model_dir: Path | str, batch_tokens: int) -> AbstractContextManager[ChunkScorer]:
    """The model loaded in this process (nothing to release afterwards)."""
    return contextlib.nullcontext(RewardScorer(model_dir, batch_tokens=batch_tokens))


def _score_to_spill(scorer: ChunkScorer, rows_file: RowsFile, spill: Path, limits: Limits, chunk_rows: int,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass 2 (module docstring): every row's ``(offset in spill, reward, group number)``, rows pickled to
    ``spill`` in file order, groups numbered by first appearance of their prompt."""
    numbers: dict[bytes, int] = {}
    offsets: list[np.ndarray] = []
    rewards: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    position = 0
    with spill.open("wb") as sink:
        for chunk in rows_file.chunks(limits, chunk_rows):
            rows = [row for _, row in chunk]
            rewards.append(scorer.rewards(rows))
            digests = (hashlib.blake2b(prompt_key(r["prompt"]).encode(), digest_size=16).digest() for r in rows)
            codes.append(np.fromiter((numbers.setdefault(d, len(numbers)) for d in digests), np.int64, len(rows)))
            pickled = [pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL) for row in rows]
            sizes = np.fromiter((len(p) for p in pickled), np.int64, len(pickled))
            offsets.append(position + np.concatenate([[0], np.cumsum(sizes)[:-1]]))
            position += int(sizes.sum())
            sink.write(b"".join(pickled))
    return np.concatenate(offsets), np.concatenate(rewards), np.concatenate(codes)
