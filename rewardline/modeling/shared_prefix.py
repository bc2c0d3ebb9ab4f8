"""Shared-prefix packing: a prompt encoded once, its K responses as branches (decoders only).

Per-response encoding runs ``K`` sequences ``[prompt | r_i]``; the prompt's ``P`` tokens are
encoded ``K`` times. A decoder's attention is causal, so the hidden states of those ``P`` tokens
do not depend on what follows them and are the same in all ``K`` sequences. Packing writes a
group once as one row

    [ prefix (P) | suffix_1 (S_1) | ... | suffix_K (S_K) ]        length P + Σ S_i  (vs K·P + Σ S_i)

with

* ``position_ids``: ``0 .. P-1`` for the prefix, ``P .. P+S_i-1`` for every branch (restarting
  after the prefix), exactly the positions the token has in its own sequence ``[prefix | suffix_i]``;
* a block attention mask ``M[q, k]`` (True = q attends to k)::

      M[q, k] = valid(q) ∧ valid(k) ∧ (seg(k) = 0 ∨ seg(k) = seg(q)) ∧ pos(k) <= pos(q)

  where ``seg`` is 0 for the prefix and ``i`` for branch ``i``: a prefix token sees the prefix
  causally, a branch token sees the whole prefix and its own branch causally, never another
  branch. Pad tokens (``seg = -1``) see only themselves, so no row of the mask is empty.

Every token then attends to exactly the keys, at the same positions, as in per-response
encoding, so the reward read at the last token of branch ``i`` equals ``r(prompt, r_i)`` (up to
floating-point summation order) and so do the gradients.

The prefix is the longest common *token* prefix of the group's sequences (capped so that every
branch keeps at least its last token), so it needs no knowledge of the template and stays
exact when truncation cut the prompt differently for different responses (the prefix is then
shorter). Encoders (bidirectional attention: a prompt token sees the response) cannot share
it; ``RewardModel.shared_prefix_unsupported`` says so and callers fall back to per-response encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rewardline.errors import ConfigError

#: Attention implementations that take a custom 4-D mask (flash-attention takes none).
MASK_ATTENTION = ("eager", "sdpa")
SETTINGS = ("auto", True, False)


@dataclass
class PackedGroups:
    """Prompt groups packed one per row (module docstring)."""

    input_ids: torch.Tensor  # int64 [G, T]
    attention_mask: torch.Tensor  # bool [G, 1, T, T], True = attend
    position_ids: torch.Tensor  # int64 [G, T]
    read_index: torch.Tensor  # int64 [N, 2]: (row, column) of the last token of each response, group by group
    n_tokens: int  # non-pad packed tokens


def common_prefix_length(seqs: Sequence[np.ndarray]) -> int:
    """``min(LCP(seqs), min_i len(seq_i) - 1)``: the longest common token prefix, leaving every
    sequence at least one token of its own (the token its reward is read at)."""
    shortest = min(len(s) for s in seqs)
    if len(seqs) == 1:
        return max(shortest - 1, 0)
    head = np.stack([np.asarray(s[:shortest]) for s in seqs])  # [K, shortest]
    differs = np.flatnonzero((head != head[0]).any(axis=0))
    lcp = int(differs[0]) if len(differs) else shortest
    return max(min(lcp, shortest - 1), 0)


def packed_length(seqs: Sequence[np.ndarray]) -> int:
    """Tokens of the packed row: ``P + Σ (len_i − P)``."""
    p = common_prefix_length(seqs)
    return p + sum(len(s) - p for s in seqs)


def _layout(seqs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """One group's packed tokens, positions, segment ids and the column of each branch's last token."""
    p = common_prefix_length(seqs)
    ids = [np.asarray(seqs[0][:p])] + [np.asarray(s[p:]) for s in seqs]
    pos = [np.arange(p)] + [np.arange(p, len(s)) for s in seqs]
    seg = [np.zeros(p, np.int64)] + [np.full(len(s) - p, i + 1, np.int64) for i, s in enumerate(seqs)]
    ends = np.cumsum([p] + [len(s) - p for s in seqs])[1:] - 1
    return np.concatenate(ids), np.concatenate(pos), np.concatenate(seg), ends.tolist()


def pack_groups(groups: Sequence[Sequence[np.ndarray]], pad_id: int) -> PackedGroups:
    """Pack each group (its sequences' token ids) into one row, right-padded to the longest row."""
    layouts = [_layout(g) for g in groups]
    g, t = len(layouts), max(len(ids) for ids, *_ in layouts)
    ids = np.full((g, t), pad_id, np.int64)
    pos = np.zeros((g, t), np.int64)
    seg = np.full((g, t), -1, np.int64)
    read: list[tuple[int, int]] = []
    for row, (row_ids, row_pos, row_seg, ends) in enumerate(layouts):
        n = len(row_ids)
        ids[row, :n], pos[row, :n], seg[row, :n] = row_ids, row_pos, row_seg
        read += [(row, e) for e in ends]
    seg_q, seg_k = seg[:, :, None], seg[:, None, :]
    valid = (seg_q >= 0) & (seg_k >= 0)
    allowed = valid & ((seg_k == 0) | (seg_k == seg_q)) & (pos[:, None, :] <= pos[:, :, None])
    allowed |= np.eye(t, dtype=bool)[None] & (seg_q < 0)  # a pad token sees itself: no empty softmax row
    return PackedGroups(
        input_ids=torch.from_numpy(ids),
        attention_mask=torch.from_numpy(allowed[:, None]),
        position_ids=torch.from_numpy(pos),
        read_index=torch.tensor(read, dtype=torch.int64).reshape(-1, 2),
        n_tokens=int((seg >= 0).sum()),
    )


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The boolean mask as the additive float mask attention adds to its logits: 0 or dtype's min."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def resolve_shared_prefix(setting: str | bool, model: Any) -> bool:
    """Whether ``model`` (a ``RewardModel``; not imported: it imports this module) runs packed groups.
    ``auto``: on when ``model.shared_prefix_unsupported()`` is None; ``True``: on, :class:`ConfigError`
    (exit 2) naming why it cannot be; ``False``: off."""
    if setting not in SETTINGS:
        raise ConfigError(f"shared_prefix must be one of {SETTINGS}, got {setting!r}")
    if setting is False:
        return False
    why_not = model.shared_prefix_unsupported()
    if setting is True and why_not is not None:
        raise ConfigError(f"shared_prefix=true, but {why_not}; set shared_prefix: auto or false")
    return why_not is None
