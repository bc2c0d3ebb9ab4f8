"""Batched scoring with a saved reward model.

Rows are formatted exactly as in training (the model directory's ``reward_config.json``),
sorted by length, packed to ``batch_tokens`` padded tokens, run under
``torch.inference_mode`` and returned in input order.

Shared prefix (decoders, ``shared_prefix="auto"``): rows are grouped by prompt in groups of up to
``MAX_BRANCHES`` responses; each group's prompt is encoded once and its responses run against the
prompt's keys and values (prompt KV reuse, :func:`rewardline.modeling.shared_prefix.prefix_cache_rewards`),
``batch_tokens`` packed tokens (prompt once + the responses) per batch. The rewards equal per-response
encoding (the prefix is the common token prefix of the group's sequences, so any grouping is exact;
grouping by prompt makes it long; a group with no common first token scores per response). Encoders and
poolings other than ``last`` score per response.

A model trained on utility targets (``reward_config.json``: ``link`` set) scores on an absolute
scale: its reward is not shifted by ``reward_mean``, and :func:`score_jsonl` adds

    win_prob = Φ(reward / √(1 + s²))              (link probit)
    win_prob ≈ σ(reward / √(1 + π s²/8))          (link logit, MacKay's probit approximation),

the probability that the response beats the prompt's anchor (``anchored``), or the prompt's
typical response when the training utilities were centred per prompt. ``s`` is the model's
``residual_sd`` (``reward_config.json``): the val rmse of its pointwise fit r − u. If the target
utility is u = r + e with e ~ N(0, s²) and the judge prefers the response with probability Φ(u),
then P(win | r) = E_e[Φ(r + e)] = Φ(r / √(1 + s²)): a model that only estimates u is less sure
than Φ(r), and serving Φ(r) would be overconfident by exactly that residual (s = 0 gives Φ(r)).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from scipy.special import expit, ndtr

from rewardline.data.limits import Limits
from rewardline.data.messages import PROMPT_EXPECTED, check_prompt, check_text, message_list
from rewardline.errors import BadInput, ConfigError, NonFiniteError, json_type
from rewardline.modeling.batching import length_batches
from rewardline.modeling.rows_files import CHUNK_ROWS, open_rows_file, rows_writer, with_columns

if TYPE_CHECKING:
    from rewardline.modeling.device import Runtime
    from rewardline.modeling.model import RewardModel

#: Responses of one prompt that share one encoding of it at most (a larger group is scored in several).
MAX_BRANCHES = 16


def score_texts(
    model_dir: Path | str,
    prompts: list[Any],
    responses: list[str],
    batch_tokens: int = 16384,
    normalize: bool = True,
    device: str = "auto",
    model: RewardModel | None = None,
    tokenizer: Any = None,
    shared_prefix: str | bool = "auto",
) -> np.ndarray:
    """Rewards (float32 ``[n]``) of ``(prompt, response)`` rows; prompts are text or
    message lists. ``normalize`` subtracts the stored ``reward_mean`` (a shift: reward
    differences are unchanged) unless the model scores on an absolute scale (``link`` set).
    ``model`` / ``tokenizer`` skip loading when given. ``shared_prefix``: ``auto`` (on for
    decoders), ``True`` (ConfigError when the model cannot) or ``False`` (module docstring)."""
    import torch  # here, not at import: `rewardline score` rejects a malformed input file without torch

    from rewardline.modeling.device import select_runtime
    from rewardline.modeling.formatting import Formatter
    from rewardline.modeling.model import RewardModel
    from rewardline.modeling.shared_prefix import resolve_shared_prefix

    if len(prompts) != len(responses):
        raise ValueError("prompts and responses differ in length")
    if not responses:
        return np.zeros(0, dtype=np.float32)
    rt = select_runtime(device, "auto")
    if model is None or tokenizer is None:
        model, tokenizer = RewardModel.load(model_dir, rt.device)
    model.eval()
    formatter = Formatter(tokenizer, model.config.format_config)
    texts, messages = zip(*(message_list(p) for p in prompts), strict=True)
    enc = formatter.encode(list(texts), list(responses), list(messages))
    pad_id = pad_id_of(tokenizer)
    with torch.inference_mode():
        if resolve_shared_prefix(shared_prefix, model):
            keys = [json.dumps(p, sort_keys=True, default=str) for p in prompts]
            out = shared_prefix_rewards(model, rt, enc["input_ids"], keys, pad_id, batch_tokens)
        else:
            out = forward_encoded(model, rt, pad_id, enc["input_ids"], enc["token_type_ids"], batch_tokens)
    bad = np.flatnonzero(~np.isfinite(out))
    if len(bad):
        raise NonFiniteError(model_dir, detail=f"{len(bad)} of {len(out)} rewards are not finite (first: row "
                                               f"{int(bad[0]) + 1}, {out[bad[0]]}); expected finite rewards from "
                                               "a model trained with a finite loss")
    if normalize and not model.config.absolute_scale:
        out -= np.float32(model.config.reward_mean)
    return out


def pad_id_of(tokenizer: Any) -> int:
    """The id padding positions get (masked out): the pad token, else EOS, else 0."""
    return next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)


def forward_encoded(
    model: RewardModel, rt: Any, pad_id: int, input_ids: list[list[int]], token_type_ids: list[list[int]],
    batch_tokens: int = 16384,
) -> np.ndarray:
    """Raw rewards (float32 ``[n]``, input order) of encoded rows: sorted by length (longest first), packed
    into batches of at most ``batch_tokens`` padded tokens (rows × the batch's longest row), one forward
    pass each under ``torch.inference_mode``. ``rt``: the :class:`~rewardline.modeling.device.Runtime`."""
    import torch  # here, not at import: `rewardline score` rejects a malformed input file without torch

    lengths = np.fromiter((len(ids) for ids in input_ids), np.int64, len(input_ids))
    out = np.zeros(len(input_ids), dtype=np.float32)
    with torch.inference_mode():
        for rows in length_batches(lengths, batch_tokens):
            width = int(lengths[rows[0]])
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            types = torch.zeros_like(ids)
            mask = torch.zeros_like(ids)
            for j, r in enumerate(rows):
                L = int(lengths[r])
                ids[j, :L] = torch.tensor(input_ids[r])
                types[j, :L] = torch.tensor(token_type_ids[r])
                mask[j, :L] = 1
            with rt.autocast():
                rewards = model(ids.to(rt.device), mask.to(rt.device), types.to(rt.device))
            out[rows] = rewards.float().cpu().numpy()
    return out


def shared_prefix_rewards(model: RewardModel, rt: Runtime, ids: list[list[int]], keys: Sequence[Hashable],
                          pad_id: int, batch_tokens: int) -> np.ndarray:
    """Raw rewards of the encoded rows, grouped by ``keys`` (the prompt) into groups of at most
    ``MAX_BRANCHES``, each group's prefix encoded once (prompt KV reuse), longest groups first,
    ``batch_tokens`` packed tokens per batch; a lone row, or a group with no common first token, per response."""
    from rewardline.modeling.shared_prefix import (
        common_prefix_length,
        packed_length,
        prefix_cache_rewards,
        split_groups,
    )

    by_key: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    chunks = [rows[j : j + MAX_BRANCHES] for rows in by_key.values() for j in range(0, len(rows), MAX_BRANCHES)]
    seqs = [[np.asarray(ids[r]) for r in chunk] for chunk in chunks]
    shared = np.array([len(s) > 1 and common_prefix_length(s) >= 1 for s in seqs], bool)
    out = np.zeros(len(ids), dtype=np.float32)
    alone = [r for c in np.flatnonzero(~shared) for r in chunks[c]]
    if alone:
        out[alone] = forward_encoded(model, rt, pad_id, [ids[r] for r in alone], [[0] * len(ids[r]) for r in alone],
                                     batch_tokens)
    groups = np.flatnonzero(shared)
    lengths = np.array([packed_length(seqs[c]) for c in groups], np.int64)
    for take in length_batches(lengths, batch_tokens):
        with rt.autocast():
            rewards = prefix_cache_rewards(model, split_groups([seqs[c] for c in groups[take]], pad_id))
        out[[r for c in groups[take] for r in chunks[c]]] = rewards.float().cpu().numpy()  # group by group
    return out


def score_prompt_groups(
    model_dir: Path | str,
    prompts: list[Any],
    responses: list[list[str]],
    batch_tokens: int = 16384,
    normalize: bool = True,
    model: RewardModel | None = None,
    tokenizer: Any = None,
) -> list[np.ndarray]:
    """Rewards of each prompt's candidate responses (``responses[i]`` for ``prompts[i]``), e.g. to rerank
    them: one float32 array per prompt, in the candidates' order. On a decoder each prompt is encoded
    once for all its candidates (shared prefix); the rewards equal :func:`score_texts` per response."""
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses differ in length (one list of candidates per prompt)")
    flat_prompts = [p for p, cands in zip(prompts, responses, strict=True) for _ in cands]
    flat = score_texts(model_dir, flat_prompts, [c for cands in responses for c in cands], batch_tokens, normalize,
                       model=model, tokenizer=tokenizer)
    return np.split(flat, np.cumsum([len(c) for c in responses])[:-1])


def win_probability(rewards: np.ndarray, link: str, residual_sd: float = 0.0) -> np.ndarray:
    """P(the response beats the anchor / typical response): ``Φ(r / √(1 + s²))`` (probit) or
    ``σ(r / √(1 + π s²/8))`` (logit), ``s = residual_sd`` the val residual sd of the pointwise fit
    (module docstring; ``s = 0``: ``Φ(r)`` / ``σ(r)``)."""
    if link not in ("probit", "logit"):
        raise ValueError(f"link must be probit or logit, got {link!r}")
    if not np.isfinite(residual_sd) or residual_sd < 0:
        raise ValueError(f"residual_sd must be a finite number >= 0, got {residual_sd!r}")
    r = np.asarray(rewards, np.float64)
    if link == "probit":
        return ndtr(r / np.sqrt(1.0 + residual_sd**2))
    return expit(r / np.sqrt(1.0 + np.pi * residual_sd**2 / 8.0))


def check_score_row(row: Any, where: dict[str, Any], limits: Limits | None = None) -> None:
    """An outcome-model input row: ``prompt`` text or messages, ``response`` text (BadInput otherwise),
    within ``limits`` (default :class:`Limits`; :class:`~rewardline.errors.TooLarge` names the bound)."""
    if not isinstance(row, dict):
        raise BadInput(**where, expected="a JSON object {prompt, response}", got=json_type(row))
    for key in ("prompt", "response"):
        if key not in row:
            steps = ("; the row has 'steps', which a process reward model reads"
                     if key == "response" and "steps" in row else "")
            raise BadInput(**where, field=key, detail="missing; expected "
                           + ("a string" if key == "response" else PROMPT_EXPECTED) + steps)
    check_prompt(row["prompt"], where)
    if not isinstance(row["response"], str):
        raise BadInput(**where, field="response", expected="a string", got=json_type(row["response"]))
    check_text(row["response"], where, "response")
    (limits or Limits()).check_row(message_list(row["prompt"])[0], row["response"], **where)


#: What :func:`score_jsonl` scores chunks with: a context manager factory yielding ``(score_chunk, columns)``, the
#: function from a chunk of rows to the scored rows, and the columns (name → Arrow type) it adds.
ChunkScoring = Callable[[], AbstractContextManager[tuple[Callable[[list[dict]], list[dict]], dict[str, pa.DataType]]]]


def score_jsonl(
    model_dir: Path | str, in_path: Path | str, out_path: Path | str, batch_tokens: int = 16384, normalize: bool = True,
    limits: Limits | None = None,
    aggregate: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    scoring: ChunkScoring | None = None,
) -> int:
    """Read ``{prompt, response, ...}`` rows from ``in_path``, write them to ``out_path`` with a ``reward`` field
    added (both rows files: JSONL, Parquet, CSV or TSV by suffix), and ``win_prob`` for an absolute-scale model.
    Returns the number of rows.
    A process reward model (:mod:`rewardline.modeling.step_scores`) reads ``{prompt, steps: [...]}`` rows and
    adds ``step_scores`` and ``reward`` (their ``aggregate``, default the model's ``step_aggregate``).

    Two passes over the file, each ``chunk_rows`` rows at a time, so memory holds one chunk, not the file: the first
    checks every row (the first malformed row stops it, :class:`BadInput`, exit 2, before the model is loaded; so do
    rows that cannot form the output's table), the second scores each chunk and appends it to the output, which
    appears whole at the end (or not at all). A chunk is scored as :func:`score_texts` scores its rows (length-sorted,
    packed to ``batch_tokens``), so the rewards do not depend on ``chunk_rows``. ``scoring``: score the chunks
    elsewhere (``--engine ray``: :mod:`rewardline.serving.ray_engine`); default the model loaded in this process."""
    from rewardline.modeling.step_scores import check_step_row, is_process_model

    limits = limits or Limits()
    process = scoring is None and is_process_model(model_dir)
    if aggregate is not None and not process:
        raise ConfigError(f"{model_dir}: an outcome reward model; --aggregate {aggregate} combines a process reward "
                          "model's step scores (leave it out, or give a process reward model)")
    check = check_step_row if process else functools.partial(check_score_row, limits=limits)
    with open_rows_file(in_path) as rows_file:
        count, schema = rows_file.check(check, out_path, limits, chunk_rows)
        # No rows still loads the model: a table output gets the input's columns and those scoring adds.
        scoring = scoring or functools.partial(_local_scoring, model_dir, batch_tokens, normalize, process, aggregate)
        with scoring() as (score_chunk, columns), rows_writer(out_path, with_columns(schema, columns)) as write:
            for chunk in rows_file.chunks(limits, chunk_rows):
                write(score_chunk([row for _, row in chunk]))
    return count


@contextlib.contextmanager
def _local_scoring(model_dir: Path | str, batch_tokens: int, normalize: bool, process: bool, aggregate: str | None,
                   ) -> Iterator[tuple[Callable[[list[dict]], list[dict]], dict[str, pa.DataType]]]:
    """:data:`ChunkScoring` with the model loaded in this process: an outcome model's :func:`_scored_chunk`, or a
    process model's :func:`~rewardline.modeling.step_scores.step_scored_rows` (``aggregate``: its reward)."""
    from rewardline.modeling.device import select_runtime
    from rewardline.modeling.model import RewardModel
    from rewardline.modeling.step_scores import STEP_COLUMNS, step_scored_rows

    model, tokenizer = RewardModel.load(model_dir, select_runtime("auto", "auto").device)
    if process:
        yield functools.partial(step_scored_rows, model_dir, model, tokenizer, how=aggregate or
                                model.config.step_aggregate, batch_tokens=batch_tokens), STEP_COLUMNS
    else:
        yield (functools.partial(_scored_chunk, model_dir, model, tokenizer, batch_tokens, normalize),
               reward_columns(model.config.link))


def reward_columns(link: str | None) -> dict[str, pa.DataType]:
    """The columns scoring adds: ``reward``, and ``win_prob`` for an absolute-scale model (``link`` set)."""
    return dict.fromkeys(("reward", "win_prob") if link else ("reward",), pa.float64())


def _scored_chunk(model_dir: Path | str, model: RewardModel, tokenizer: Any, batch_tokens: int, normalize: bool,
                  rows: list[dict]) -> list[dict]:
    """``rows`` with ``reward`` (and ``win_prob``) from the loaded ``model`` (:func:`score_texts`)."""
    rewards = score_texts(model_dir, [r["prompt"] for r in rows], [r["response"] for r in rows], batch_tokens,
                          normalize, model=model, tokenizer=tokenizer)
    return scored_rows(rows, rewards, model.config.link, model.config.residual_sd)


def scored_rows(rows: list[dict], rewards: np.ndarray, link: str | None, residual_sd: float = 0.0) -> list[dict]:
    """Each input row (input order) plus ``reward``, and ``win_prob`` (:func:`win_probability` with the model's
    ``residual_sd``) when ``link`` is set (an absolute-scale model)."""
    win_prob = win_probability(rewards, link, residual_sd) if link is not None else None
    return [{**row, "reward": float(reward), **({} if win_prob is None else {"win_prob": float(win_prob[i])})}
            for i, (row, reward) in enumerate(zip(rows, rewards, strict=True))]
