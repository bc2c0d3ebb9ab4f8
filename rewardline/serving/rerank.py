"""Rerank candidates: a loaded reward model scoring prompt groups, and the JSONL ``rerank`` command.

A *prompt group* is one prompt with its candidate responses. :meth:`RewardScorer.encode_group`
turns a group into model inputs, one (prompt, response) sequence per candidate, and marks them as one
group (``Encoded.group``). For encoder backbones (BERT, MiniLM: every layer attends both ways) the prompt's
hidden states depend on the response, so :meth:`RewardScorer.forward` runs every sequence whole. For
decoders that can share a prefix (:meth:`rewardline.modeling.model.RewardModel.shared_prefix_unsupported`)
causal attention makes the prompt's hidden states the same for every candidate, so ``forward`` encodes a
group's prompt once and runs its candidates against the prompt's keys and values
(:func:`rewardline.modeling.score.shared_prefix_rewards`, prompt KV reuse): the same rewards (fp32, 1e-5).
Groups survive the server's micro-batching (``Encoded.concat`` renumbers them).

Per candidate the output holds the input row plus

    reward        r_i, the model's reward (normalised as ``rewardline score``: r − reward_mean for a BT model)
    rank          1 = highest reward in its prompt group (ties share the order of the input, stable)
    beats_others  (1 / (k − 1)) Σ_{j ≠ i} σ((r_i − r_j) / T): the Bradley-Terry probability that candidate i
                  beats a uniformly chosen other candidate of its group, T the model's temperature (1 when
                  not calibrated); 0.5 for a lone candidate
    win_prob      Φ(r_i) or σ(r_i) (absolute-scale models only): P(it beats the prompt's anchor), as ``score``
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from rewardline.data.messages import message_list
from rewardline.errors import NonFiniteError
from rewardline.modeling.score import (
    forward_encoded,
    pad_id_of,
    shared_prefix_rewards,
    win_probability,
)


@dataclass
class Encoded:
    """Token ids of rows ready for :meth:`RewardScorer.forward` (one list per row)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    group: list[int] | None = None  # the prompt group of each row (rows of a group share a prompt); None: none

    @property
    def tokens(self) -> int:
        """Total (unpadded) tokens: what the batchers' token budgets count."""
        return sum(len(ids) for ids in self.input_ids)

    def __len__(self) -> int:
        return len(self.input_ids)

    @staticmethod
    def concat(parts: list[Encoded]) -> Encoded:
        """The rows of ``parts`` in order; groups renumbered so that no two parts share one (a part without
        groups: a group per row)."""
        groups, offset = [], 0
        for part in parts:
            local = part.group if part.group is not None else list(range(len(part)))
            groups += [offset + g for g in local]
            offset += max(local, default=-1) + 1
        return Encoded([ids for p in parts for ids in p.input_ids], [t for p in parts for t in p.token_type_ids],
                       groups)


def read_temperature(model_dir: Path) -> float:
    """The calibration temperature stored in ``config.json`` (``rewardline.temperature``); 1 when absent."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        return 1.0
    return float((json.loads(config.read_text()).get("rewardline") or {}).get("temperature") or 1.0)


def read_scale(model_dir: Path) -> tuple[str | None, float]:
    """``(link, residual_sd)`` of an absolute-scale model's ``reward_config.json``; ``(None, 0.0)`` for a
    Bradley-Terry model, a missing file or one that does not parse. Read as JSON, without importing torch, for a
    process that never loads the model (the Ray driver: each actor's ``RewardModel.load`` validates the file)."""
    path = Path(model_dir) / "reward_config.json"
    try:
        values = json.loads(path.read_text()) if path.is_file() else {}
        link = values.get("link") or None
        return link, float(values.get("residual_sd") or 0.0) if link else 0.0
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError):
        return None, 0.0


class RewardScorer:
    """A reward model loaded once, scoring prompt groups (module docstring). Thread use: one forward at a time."""

    def __init__(self, model_dir: Path | str, device: str = "auto", batch_tokens: int = 16384) -> None:
        from rewardline.modeling.device import select_runtime
        from rewardline.modeling.formatting import Formatter
        from rewardline.modeling.model import RewardModel
        from rewardline.modeling.shared_prefix import resolve_shared_prefix
        from rewardline.modeling.step_scores import refuse_process_model

        refuse_process_model(model_dir, "rerank and serve")  # a PRM's reward aggregates step scores
        self.model_dir = Path(model_dir)
        self.runtime = select_runtime(device, "auto")
        self.model, self.tokenizer = RewardModel.load(model_dir, self.runtime.device)
        self.model.eval()
        self.formatter = Formatter(self.tokenizer, self.model.config.format_config)
        self.pad_id = pad_id_of(self.tokenizer)
        self.batch_tokens = batch_tokens
        self.link = self.model.config.link
        self.residual_sd = float(self.model.config.residual_sd)  # s of win_prob = Φ(r/√(1+s²))
        self.offset = 0.0 if self.model.config.absolute_scale else float(self.model.config.reward_mean)
        self.temperature = read_temperature(self.model_dir)
        self.shared_prefix = resolve_shared_prefix("auto", self.model)  # decoders: a group's prompt encoded once

    def encode_group(self, prompt: Any, responses: list[str]) -> Encoded:
        """One prompt group's model inputs: one (prompt, response) sequence per candidate, all in group 0."""
        text, messages = message_list(prompt)
        enc = self.formatter.encode([text] * len(responses), list(responses), [messages] * len(responses))
        return Encoded(enc["input_ids"], enc["token_type_ids"], [0] * len(responses))

    def encode_rows(self, prompts: list[Any], responses: list[str]) -> Encoded:
        """Independent (prompt, response) rows (``/score``), formatted as in training."""
        if not responses:
            return Encoded([], [])
        texts, messages = zip(*(message_list(p) for p in prompts), strict=True)
        enc = self.formatter.encode(list(texts), list(responses), list(messages))
        return Encoded(enc["input_ids"], enc["token_type_ids"])

    def forward(self, encoded: Encoded) -> np.ndarray:
        """Normalised rewards (float32, row order): token-budget batches, one forward pass each (a decoder's
        groups: each group's prompt once, module docstring)."""
        if self.shared_prefix and encoded.group is not None:
            raw = shared_prefix_rewards(self.model, self.runtime, encoded.input_ids, encoded.group, self.pad_id,
                                        self.batch_tokens)
        else:
            raw = forward_encoded(self.model, self.runtime, self.pad_id, encoded.input_ids, encoded.token_type_ids,
                                  self.batch_tokens)
        bad = np.flatnonzero(~np.isfinite(raw))
        if len(bad):
            raise NonFiniteError(self.model_dir, detail=f"{len(bad)} of {len(raw)} rewards are not finite")
        return raw - np.float32(self.offset)

    def score(self, prompts: list[Any], responses: list[str]) -> np.ndarray:
        """Rewards of independent rows; equal to :func:`rewardline.modeling.score.score_texts`."""
        return self.forward(self.encode_rows(prompts, responses))

    def rewards(self, rows: list[dict]) -> np.ndarray:
        """Rewards of ``{prompt, response}`` rows (row order), grouped by prompt (:func:`group_rewards`)."""
        return group_rewards(self, rows)

    def win_prob(self, rewards: np.ndarray) -> np.ndarray | None:
        """P(beats the anchor) for an absolute-scale model, else None."""
        return None if self.link is None else win_probability(rewards, self.link, self.residual_sd)


def rank_group(rewards: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(rank, beats_others)`` of one group's rewards: rank 1 = highest (stable on ties), and the mean
    Bradley-Terry probability (1/(k−1)) Σ_{j≠i} σ((r_i − r_j)/T) of beating another candidate."""
    r = np.asarray(rewards, np.float64)
    order = np.argsort(-r, kind="stable")
    rank = np.empty(len(r), np.int64)
    rank[order] = np.arange(1, len(r) + 1)
    if len(r) < 2:
        return rank, np.full(len(r), 0.5)
    p = expit((r[:, None] - r[None, :]) / temperature)  # [k, k]; diagonal σ(0) = 0.5
    beats = (p.sum(1) - 0.5) / (len(r) - 1)
    return rank, beats


def prompt_key(prompt: Any) -> str:
    """What tells prompts apart: the text, or a list of messages as its JSON (keys sorted)."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def group_rows(codes: np.ndarray) -> list[np.ndarray]:
    """Row indices of each group number in ``codes`` (numbered in first-seen order), each in row order."""
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1) if len(order) else []


def prompt_numbers(prompts: list[Any]) -> np.ndarray:
    """Each row's prompt group: distinct prompts (:func:`prompt_key`) numbered 0, 1, ... in first-seen order."""
    numbers: dict[str, int] = {}
    return np.fromiter((numbers.setdefault(prompt_key(p), len(numbers)) for p in prompts), np.int64, len(prompts))


def group_by_prompt(prompts: list[Any]) -> list[np.ndarray]:
    """Row indices of each distinct prompt (text, or messages compared as JSON), in first-seen order."""
    return group_rows(prompt_numbers(prompts))


def group_rewards(scorer: RewardScorer, rows: list[dict]) -> np.ndarray:
    """Rewards of ``rows`` (row order): all rows tokenized in one call (:meth:`RewardScorer.encode_rows`, the
    tokens :meth:`RewardScorer.encode_group` gives), the rows of one prompt marked as one group so that a decoder
    encodes the prompt once, all scored together in token-budget batches. (One tokenizer call per prompt cost as
    much as the forward passes of a small model when a chunk holds thousands of prompts.)"""
    prompts = [r["prompt"] for r in rows]
    encoded = scorer.encode_rows(prompts, [r["response"] for r in rows])
    encoded.group = prompt_numbers(prompts).tolist()
    return scorer.forward(encoded)


def rerank_rows(scorer: RewardScorer, rows: list[dict], top_k: int | None = None) -> list[dict]:
    """Rows scored by :func:`group_rewards`; returns each group's rows best first (the first ``top_k``)."""
    return rank_rows(rows, group_rewards(scorer, rows), scorer.temperature, scorer.link, top_k, scorer.residual_sd)


def ranked(groups: list[np.ndarray], rewards: np.ndarray, temperature: float = 1.0,
           top_k: int | None = None) -> Iterator[tuple[int, int, float]]:
    """``(row, rank, beats_others)`` in output order: ``groups`` (row indices of each, :func:`group_rows`) in
    order, each group's rows best first (its first ``top_k``), :func:`rank_group` at ``temperature``."""
    for g in groups:
        rank, beats = rank_group(rewards[g], temperature)
        for j in np.argsort(rank)[: top_k or len(g)]:
            yield int(g[j]), int(rank[j]), float(beats[j])


def ranked_row(row: dict, reward: float, rank: int, beats_others: float, win_prob: float | None) -> dict:
    """``row`` plus its reward, rank, beats_others (and win_prob when the model has an absolute scale)."""
    extra = {} if win_prob is None else {"win_prob": float(win_prob)}
    return {**row, "reward": float(reward), "rank": rank, "beats_others": beats_others, **extra}


def rank_rows(rows: list[dict], rewards: np.ndarray, temperature: float = 1.0, link: str | None = None,
              top_k: int | None = None, residual_sd: float = 0.0) -> list[dict]:
    """Rows with their rewards (row order) grouped by prompt (first-seen order), each group best first (its
    first ``top_k``), each row plus reward, rank and beats_others (:func:`ranked` at ``temperature``), and
    win_prob when ``link`` is set (module docstring; ``residual_sd``: the model's s of Φ(r/√(1+s²)))."""
    win = None if link is None else win_probability(rewards, link, residual_sd)
    groups = group_by_prompt([r["prompt"] for r in rows])
    return [ranked_row(rows[i], rewards[i], rank, beats, None if win is None else win[i])
            for i, rank, beats in ranked(groups, rewards, temperature, top_k)]


def rerank_counts(candidates: int, prompts: int, rows_written: int, out_path: Path | str) -> dict[str, Any]:
    """What ``rewardline rerank`` reports."""
    return {"candidates": candidates, "prompts": prompts, "rows_written": rows_written, "output": str(out_path)}
