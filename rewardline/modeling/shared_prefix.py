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

**Prompt KV reuse (scoring).** Without gradients, ``score`` and ``rerank`` encode the prefixes of a batch of
groups once, right-padded (``[G, P]``, the cache ``past_key_values``), select each response's prefix from the
cache, and run only the suffixes against it (``[N, S]``, ``position_ids`` ``p_g .. p_g+S-1``, a 2-D mask over
``[prefix | suffix]``): attention costs ``Σ_g p_g²/2 + Σ_i S_i·(p_g + S_i)`` instead of the packed row's
``(P + ΣS_i)²``, which is what the dense block mask costs at long prompts (:func:`prefix_cache_rewards`).
Training keeps the block mask: transformers drops ``past_key_values`` in a layer run under gradient
checkpointing, so prompt KV reuse would not work there.

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


@dataclass
class PrefixBranches:
    """Groups split at their common prefix for prompt KV reuse (module docstring); right-padded."""

    prefix_ids: torch.Tensor  # int64 [G, P]
    prefix_mask: torch.Tensor  # int64 [G, P], 1 = real token
    branch_ids: torch.Tensor  # int64 [N, S]: each response's tokens after its group's prefix
    branch_mask: torch.Tensor  # int64 [N, S]
    branch_group: torch.Tensor  # int64 [N]: the group (row of the prefix batch) of each response
    n_tokens: int  # non-pad tokens of both


def split_groups(groups: Sequence[Sequence[np.ndarray]], pad_id: int) -> PrefixBranches:
    """Each group's common prefix (:func:`common_prefix_length`, at least 1 token: a group without a common
    first token cannot share) and its responses' suffixes, as right-padded batches."""
    cuts = [common_prefix_length(g) for g in groups]
    if min(cuts, default=1) < 1:
        raise ValueError("a group without a common first token has no prefix to share; score it per response")
    suffixes = [np.asarray(s[p:]) for g, p in zip(groups, cuts, strict=True) for s in g]
    width_p, width_s = max(cuts), max(len(x) for x in suffixes)
    prefix_ids = np.full((len(groups), width_p), pad_id, np.int64)
    branch_ids = np.full((len(suffixes), width_s), pad_id, np.int64)
    prefix_mask, branch_mask = np.zeros_like(prefix_ids), np.zeros_like(branch_ids)
    for row, (g, p) in enumerate(zip(groups, cuts, strict=True)):
        prefix_ids[row, :p], prefix_mask[row, :p] = np.asarray(g[0][:p]), 1
    for row, x in enumerate(suffixes):
        branch_ids[row, : len(x)], branch_mask[row, : len(x)] = x, 1
    group_of = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    return PrefixBranches(torch.from_numpy(prefix_ids), torch.from_numpy(prefix_mask), torch.from_numpy(branch_ids),
                          torch.from_numpy(branch_mask), torch.from_numpy(group_of),
                          int(prefix_mask.sum() + branch_mask.sum()))


@torch.inference_mode()
def prefix_cache_rewards(model: Any, batch: PrefixBranches) -> torch.Tensor:
    """Rewards ``[N]`` of ``batch``'s responses, group by group, with each prefix encoded once (``model``: a
    ``RewardModel`` that can share a prefix). No gradients: it runs under ``torch.inference_mode``."""
    backbone, device = model.backbone, next(model.parameters()).device
    prefix_mask, branch_mask = batch.prefix_mask.to(device), batch.branch_mask.to(device)
    group = batch.branch_group.to(device)
    cache = backbone(input_ids=batch.prefix_ids.to(device), attention_mask=prefix_mask, use_cache=True).past_key_values
    cache.batch_select_indices(group)  # response i reads its group's prefix keys and values
    start = prefix_mask.sum(1)[group, None]  # p_g: the suffix continues the prompt's positions
    positions = start + torch.arange(branch_mask.shape[1], device=device)[None]
    mask = torch.cat([prefix_mask[group], branch_mask], 1)  # [N, P + S]: the prefix's padding stays masked
    hidden = backbone(input_ids=batch.branch_ids.to(device), attention_mask=mask, position_ids=positions,
                      past_key_values=cache, use_cache=True).last_hidden_state
    last = hidden[torch.arange(hidden.shape[0], device=device), branch_mask.sum(1) - 1]
    return model.head(last.to(model.head.weight.dtype)).squeeze(-1).float()
