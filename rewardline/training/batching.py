"""Prompt-group batches packed to a token budget.

A *group* is one prompt with its K distinct responses and the comparisons among them.
Batches are sets of whole groups, so every (prompt, response) sequence is encoded
**once** per step and all comparisons of the group are formed from those K rewards
(K sequences per prompt instead of the K(K-1) of a pair-per-row trainer).

Packing: groups are sorted by their longest sequence (with a ±10 % random jitter per
epoch, so batches differ between epochs) and packed greedily while
``n_sequences · padded_length <= batch_tokens``; a group larger than the budget gets a
batch of its own. Padding is dynamic (to the longest sequence of the batch) and the
order of batches is shuffled.

Shared prefix (``train.shared_prefix``, decoders): a group is packed into one row
``[prompt | r_1 | ... | r_K]`` (:mod:`rewardline.modeling.shared_prefix`), so a batch is
``n_groups`` rows of ``packed_len = P + Σ S_i`` tokens and the budget counts packed tokens:
``n_groups · padded_packed_length <= batch_tokens``.

Sharding (DDP + gradient accumulation): the batches of an epoch are cut into global
steps of ``world · accum`` micro-batches (the last step is filled by wrapping around to
the epoch's first batches, never by dropping data). Rank ``r`` runs micro-batches
``step[i · world + r]`` for ``i < accum``, so one process with ``accum = A · W`` sees
exactly the same global batches as ``W`` processes with ``accum = A``.

Comparison weights (:func:`comparison_weights`, ``train.weighting``): ``"prompt"`` gives each
of the ``C`` comparisons of one prompt ``w = 1 / C`` (InstructGPT's ``1 / C(K, 2)`` when all
pairs of the K responses are present), so each prompt counts once; ``"comparison"`` gives
``w = 1``.

Per-response targets (pointwise objectives, :func:`read_targets`): when the pairs directory has
``targets/`` (``pairs.targets``) and the objective asks for them, every sequence of a group
carries its fitted utility ``u_i`` and a weight (:func:`target_weights`)

    w_i = W_g · s_i⁻² / Σ_{j∈g} s_j⁻²,   s_i = max(se_i, MIN_TARGET_SE),   W_g = Σ_c w_c of the group,

so a prompt's responses share its comparison weight (each prompt counts once with
``weighting: prompt``) in proportion to the precision of their targets, and a pointwise and a
pairwise loss over the same groups have the same normaliser ``W``. An anchor (``se = 0``: its
``u = 0`` is fixed by definition, not measured) takes ``s`` = the median ``s`` of its prompt's other
responses: at the floor it carried 56 % of the pointwise weight on AlpacaEval (11 samples, one
reference), pulling a weak model's rewards towards 0 (docs/benchmarks.md, issue 14).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rewardline.data.tables import TARGETS, read_table, table_path
from rewardline.errors import ConfigError
from rewardline.modeling.shared_prefix import pack_groups, packed_length
from rewardline.modeling.tokenize import TokenizedResponses

WEIGHTINGS = ("prompt", "comparison")
#: Floor of a target's standard error in its weight 1/se² (an anchor has se = 0).
MIN_TARGET_SE = 0.25


@dataclass
class ResponseTargets:
    """Fitted utilities of the pairs directory's ``targets/`` by response id, and how they were fitted."""

    utility: dict[str, float]
    se: dict[str, float]
    link: str  # probit | logit
    anchored: bool  # every prompt of the table has an anchor (u_anchor = 0); else utilities are centred


def read_targets(pairs_dir: Path, centre: str = "anchor") -> ResponseTargets | None:
    """``pairs_dir/targets/`` (or an older pairs directory's ``targets.parquet``) as :class:`ResponseTargets`;
    None when the pairs stage wrote none.

    ``centre="anchor"``: the fitted utilities as they are (``u_anchor = 0`` on an anchored prompt).
    ``centre="prompt"`` (``train.target_centre``): ``u_i − ū_p``, ``ū_p`` the mean utility of prompt p's
    responses, so a target holds only the within-prompt part of u (the prompt's level, e.g. how good its
    reference answer is, cannot be seen in one response); then ``anchored`` is False and
    ``Φ(r_i − r_j)`` still estimates P(i ≻ j) (Case V depends on differences only)."""
    path = table_path(Path(pairs_dir), TARGETS)
    if not path.exists():
        return None
    if centre not in ("anchor", "prompt"):
        raise ValueError(f"target centre must be anchor or prompt, got {centre!r}")
    table = read_table(path)
    ids = table["response_id"].to_pylist()
    link = (table.schema.metadata or {}).get(b"link", b"probit").decode()
    anchored = bool(table.num_rows) and all(table["anchored"].to_pylist())
    utility = table["utility"].to_numpy(zero_copy_only=False).astype(np.float64)
    if centre == "prompt":
        codes = table["prompt_id"].combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)
        utility = utility - (np.bincount(codes, utility) / np.bincount(codes))[codes]
        anchored = False
    return ResponseTargets(dict(zip(ids, utility.tolist(), strict=True)),
                           dict(zip(ids, table["se"].to_pylist(), strict=True)), link, anchored)


def required_targets(pairs_dir: Path, objective: str, centre: str, val: pa.Table | None) -> ResponseTargets:
    """:func:`read_targets` for a pointwise objective; a :class:`ConfigError` naming the setting when the pairs
    stage wrote no targets, or when ``val`` (the val split) has no pairs: the served ``win_prob`` needs the model's
    ``residual_sd``, the val rmse of its pointwise fit, and 0 (no val) would make it as overconfident as the fit."""
    targets = read_targets(pairs_dir, centre)
    if targets is None:
        raise ConfigError(f"train.objective={objective} needs per-response targets, but {pairs_dir}/{TARGETS}/ "
                          "does not exist (expected the pairs stage run with pairs.targets: thurstone or bt)")
    if val is None or val.num_rows == 0:
        raise ConfigError(f"train.objective={objective}: {table_path(pairs_dir, 'val')} has no pairs, and win_prob's "
                          "residual_sd is the val rmse of the pointwise fit (expected pairs.val_fraction > 0, or "
                          "train.objective=bt)")
    return targets


def target_weights(se: np.ndarray, group_weight: float) -> np.ndarray:
    """``w_i = W_g · s_i⁻² / Σ_j s_j⁻²`` with ``s = max(se, MIN_TARGET_SE)``; an anchor (``se = 0``) takes the
    median ``s`` of the group's other responses (module docstring)."""
    se = np.asarray(se, np.float64)
    s = np.maximum(se, MIN_TARGET_SE)
    if (anchor := se == 0).any() and not anchor.all():
        s[anchor] = np.median(s[~anchor])
    precision = 1.0 / s**2
    return (group_weight * precision / precision.sum()).astype(np.float32)


@dataclass
class Group:
    """One prompt: its sequences (rows of the tokenized table) and comparisons among them."""

    prompt_id: str
    rows: np.ndarray  # int64 [K] rows in TokenizedResponses
    a: np.ndarray  # int64 [C] local index (into rows) of response a
    b: np.ndarray  # int64 [C]
    label: np.ndarray  # float32 [C], P(a preferred)
    margin: np.ndarray  # float32 [C]
    weight: np.ndarray  # float32 [C]
    max_len: int
    packed_len: int = 0  # tokens of the shared-prefix row: prompt prefix once + every response's suffix
    target: np.ndarray | None = None  # float32 [K] fitted utility of each row (pointwise objectives)
    target_weight: np.ndarray | None = None  # float32 [K], sums to weight.sum()
    # process reward models (rewardline.training.step_data): one entry per kept step of the group's solutions
    step_row: np.ndarray | None = None  # int64 [S] local row (solution) of the step
    step_col: np.ndarray | None = None  # int64 [S] position of its separator token
    step_target: np.ndarray | None = None  # float32 [S] BCE target
    step_known: np.ndarray | None = None  # float32 [S] 1 = labelled, 0 = unknown (ignored)
    outcome: np.ndarray | None = None  # float32 [K] outcome label of each solution
    outcome_known: np.ndarray | None = None  # float32 [K]


@dataclass
class Batch:
    input_ids: torch.Tensor  # [N, T]
    attention_mask: torch.Tensor  # [N, T]
    token_type_ids: torch.Tensor  # [N, T]
    idx_a: torch.Tensor  # [M]
    idx_b: torch.Tensor  # [M]
    label: torch.Tensor  # [M]
    margin: torch.Tensor  # [M]
    weight: torch.Tensor  # [M]
    n_tokens: int  # non-pad tokens
    target: torch.Tensor | None = None  # [N] fitted utility per sequence, when the groups carry targets
    target_weight: torch.Tensor | None = None  # [N]
    step_row: torch.Tensor | None = None  # [S] row of each step separator in the batch (PRM)
    step_col: torch.Tensor | None = None  # [S] its position
    step_target: torch.Tensor | None = None  # [S]
    step_known: torch.Tensor | None = None  # [S]
    last_step: torch.Tensor | None = None  # [N] index into the S steps of each row's last step (-1: none)
    outcome: torch.Tensor | None = None  # [N]
    outcome_known: torch.Tensor | None = None  # [N]
    position_ids: torch.Tensor | None = None  # [G, T] shared-prefix rows (attention_mask then [G, 1, T, T])
    read_index: torch.Tensor | None = None  # [N, 2] (row, column) of each sequence's last token

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The keyword arguments of ``RewardModel.forward`` for this batch (packed or not)."""
        extra = {} if self.position_ids is None else {"position_ids": self.position_ids, "read_index": self.read_index}
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "token_type_ids": self.token_type_ids, **extra}

    def to(self, device: torch.device) -> Batch:
        return Batch(
            **{k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        )


def comparison_weights(group_sizes: np.ndarray, weighting: str) -> np.ndarray:
    """Per-comparison weights for groups of ``group_sizes`` comparisons, laid out group by
    group: ``1 / C`` each for ``"prompt"``, ``1`` for ``"comparison"``."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    sizes = np.asarray(group_sizes, dtype=np.int64)
    if weighting == "comparison":
        return np.ones(int(sizes.sum()), dtype=np.float32)
    return np.repeat(1.0 / np.maximum(sizes, 1), sizes).astype(np.float32)


def build_groups(pairs: pa.Table, tok: TokenizedResponses, weighting: str = "prompt",
                 targets: ResponseTargets | None = None) -> list[Group]:
    """Group the comparisons of ``pairs`` (schema ``PAIRS``) by prompt; with ``targets``, each
    group's rows also carry their utilities and weights (a response without one: KeyError)."""
    row_of = tok.row_index()
    cols = pairs.select(["prompt_id", "response_a_id", "response_b_id", "label", "margin"]).to_pydict()
    by_prompt: dict[str, list[int]] = {}
    for i, pid in enumerate(cols["prompt_id"]):
        by_prompt.setdefault(pid, []).append(i)
    groups = []
    for pid, idx in by_prompt.items():
        local: dict[str, int] = {}
        a, b = [], []
        for i in idx:
            for side, out in (("response_a_id", a), ("response_b_id", b)):
                rid = cols[side][i]
                if rid not in row_of:
                    raise KeyError(f"pair refers to unknown response {rid!r}")
                out.append(local.setdefault(rid, len(local)))
        rows = np.array([row_of[r] for r in local], dtype=np.int64)
        margin = [0.0 if cols["margin"][i] is None else cols["margin"][i] for i in idx]
        group = Group(
            prompt_id=pid,
            rows=rows,
            a=np.array(a, dtype=np.int64),
            b=np.array(b, dtype=np.int64),
            label=np.array([cols["label"][i] for i in idx], dtype=np.float32),
            margin=np.array(margin, dtype=np.float32),
            weight=comparison_weights(np.array([len(idx)]), weighting),
            max_len=int(tok.lengths[rows].max()),
            packed_len=packed_length([tok.sequence(int(r))[0] for r in rows]),
        )
        if targets is not None:
            _attach_targets(group, list(local), targets)
        groups.append(group)
    return groups


def _attach_targets(group: Group, response_ids: list[str], targets: ResponseTargets) -> None:
    missing = [r for r in response_ids if r not in targets.utility]
    if missing:
        raise KeyError(f"{TARGETS}/ has no target for response {missing[0]!r} of prompt {group.prompt_id!r} "
                       f"({len(missing)} missing): it is stale, rerun the pairs stage")
    group.target = np.array([targets.utility[r] for r in response_ids], dtype=np.float32)
    se = np.array([targets.se[r] for r in response_ids])
    group.target_weight = target_weights(se, float(group.weight.sum()))


def plan_batches(
    groups: list[Group], batch_tokens: int, seed: int = 0, epoch: int = 0, shuffle: bool = True, packed: bool = False
) -> list[list[int]]:
    """Pack group indices into batches of at most ``batch_tokens`` padded tokens (``packed``: a
    group is one row of ``packed_len`` tokens)."""
    if not groups:
        return []
    rng = np.random.default_rng([seed, epoch])
    lengths = np.array([g.packed_len if packed else g.max_len for g in groups], dtype=np.float64)
    sizes = np.ones(len(groups), np.int64) if packed else np.array([len(g.rows) for g in groups], dtype=np.int64)
    key = lengths * np.exp(rng.uniform(-0.1, 0.1, len(groups))) if shuffle else lengths
    order = np.argsort(key, kind="stable")
    batches: list[list[int]] = []
    cur: list[int] = []
    n_seq, pad_len = 0, 0
    for g in order:
        new_len = max(pad_len, int(lengths[g]))
        if cur and (n_seq + sizes[g]) * new_len > batch_tokens:
            batches.append(cur)
            cur, n_seq, new_len = [], 0, int(lengths[g])
        cur.append(int(g))
        n_seq += int(sizes[g])
        pad_len = new_len
    batches.append(cur)
    if shuffle:
        perm = rng.permutation(len(batches))
        batches = [batches[i] for i in perm]
    return batches


def plan_steps(batches: list[list[int]], world: int, accum: int) -> list[list[list[int]]]:
    """Cut an epoch's batches into global steps of ``world · accum`` micro-batches,
    wrapping around to fill the last step."""
    per_step = world * accum
    if not batches:
        return []
    n_steps = -(-len(batches) // per_step)
    padded = [batches[i % len(batches)] for i in range(n_steps * per_step)]
    return [padded[s * per_step : (s + 1) * per_step] for s in range(n_steps)]


def rank_micro_batches(step: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """The micro-batches of ``step`` that rank ``rank`` runs, in accumulation order."""
    return step[rank::world]


def collate(groups: list[Group], tok: TokenizedResponses, pad_id: int, packed: bool = False) -> Batch:
    """Stack the groups' sequences, right-padded to the longest, and offset the
    comparison indices into the stacked batch (``packed``: :func:`collate_packed`)."""
    if packed:
        return collate_packed(groups, tok, pad_id)
    seqs = [tok.sequence(int(r)) for g in groups for r in g.rows]
    n, t = len(seqs), max(len(s[0]) for s in seqs)
    ids = np.full((n, t), pad_id, dtype=np.int64)
    types = np.zeros((n, t), dtype=np.int64)
    mask = np.zeros((n, t), dtype=np.int64)
    for i, (s, ty) in enumerate(seqs):
        ids[i, : len(s)] = s
        types[i, : len(s)] = ty
        mask[i, : len(s)] = 1
    return Batch(
        input_ids=torch.from_numpy(ids),
        attention_mask=torch.from_numpy(mask),
        token_type_ids=torch.from_numpy(types),
        n_tokens=int(mask.sum()),
        **_group_fields(groups),
        **(_step_fields(groups) if groups[0].step_row is not None else {}),
    )


def collate_packed(groups: list[Group], tok: TokenizedResponses, pad_id: int) -> Batch:
    """One shared-prefix row per group (:func:`rewardline.modeling.shared_prefix.pack_groups`); rewards come
    out in the same order as :func:`collate`'s rows, so the comparison indices are the same."""
    rows = pack_groups([[tok.sequence(int(r))[0] for r in g.rows] for g in groups], pad_id)
    return Batch(
        input_ids=rows.input_ids,
        attention_mask=rows.attention_mask,
        token_type_ids=torch.zeros_like(rows.input_ids),
        n_tokens=rows.n_tokens,
        **_group_fields(groups),
        position_ids=rows.position_ids,
        read_index=rows.read_index,
    )


def _step_fields(groups: list[Group]) -> dict[str, torch.Tensor]:
    """The PRM fields of a batch: the groups' step arrays with rows offset into the stacked batch, and
    each row's last kept step (for the outcome term), -1 for a row whose steps were all dropped."""
    offsets = np.cumsum([0] + [len(g.rows) for g in groups[:-1]])
    rows = np.concatenate([g.step_row + o for g, o in zip(groups, offsets, strict=True)])
    n_rows = int(sum(len(g.rows) for g in groups))
    last = np.full(n_rows, -1, np.int64)
    last[rows] = np.arange(len(rows))  # steps are in order within a row: the last write wins
    return {
        "step_row": torch.from_numpy(rows),
        "step_col": torch.from_numpy(np.concatenate([g.step_col for g in groups])),
        "step_target": torch.from_numpy(np.concatenate([g.step_target for g in groups])),
        "step_known": torch.from_numpy(np.concatenate([g.step_known for g in groups])),
        "last_step": torch.from_numpy(last),
        "outcome": torch.from_numpy(np.concatenate([g.outcome for g in groups])),
        "outcome_known": torch.from_numpy(np.concatenate([g.outcome_known for g in groups])),
    }


def _group_fields(groups: list[Group]) -> dict[str, torch.Tensor | None]:
    """The comparisons (indices offset into the stacked sequences) and per-row targets of ``groups``."""
    offsets = np.cumsum([0] + [len(g.rows) for g in groups[:-1]])
    return {
        "idx_a": torch.from_numpy(np.concatenate([g.a + o for g, o in zip(groups, offsets, strict=True)])),
        "idx_b": torch.from_numpy(np.concatenate([g.b + o for g, o in zip(groups, offsets, strict=True)])),
        "label": torch.from_numpy(np.concatenate([g.label for g in groups])),
        "margin": torch.from_numpy(np.concatenate([g.margin for g in groups])),
        "weight": torch.from_numpy(np.concatenate([g.weight for g in groups])),
        "target": _stack([g.target for g in groups]),
        "target_weight": _stack([g.target_weight for g in groups]),
    }


def _stack(parts: list[np.ndarray | None]) -> torch.Tensor | None:
    """The groups' per-row arrays concatenated, or None unless every group has one."""
    return None if any(p is None for p in parts) else torch.from_numpy(np.concatenate(parts))
