"""Evaluation on val during training, best-checkpoint selection and early stopping.

    every ``train.eval_every`` optimizer steps (0: only after the last step), and after the last step:
        val     = evaluate(model, val groups)                  # the objective's summary on val
        score   = val accuracy (objectives without one: −val loss)
        if score > best score:  best ← (step, val, a CPU copy of the weights); since_best = 0
        else:                   since_best += 1
        stop when train.patience > 0 and since_best ≥ patience
    at the end: the model gets the best weights back (the saved model is the best one, not the last)

"Better" is strictly greater, so among equal scores the earliest evaluation wins. Every rank
evaluates its shard and all-reduces the sums (:func:`evaluate`), so every rank takes the same
decisions (DDP keeps identical weights on every rank). The state (best step, score and val
metrics, evaluations since the best, and the best weights) goes into each checkpoint, so a
resumed run selects exactly as an uninterrupted one.

With ``eval_every = 0`` and ``patience = 0`` the run evaluates once, after its last step, and
saves the last weights: the behaviour before model selection existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from rewardline.modeling.device import Runtime, all_reduce_sum
from rewardline.modeling.model import RewardModel
from rewardline.modeling.tokenize import TokenizedResponses
from rewardline.training.batching import Group, collate, plan_batches
from rewardline.training.objectives import Objective
from rewardline.training.parallel import full_state_dict, is_sharded, load_full_state_dict

#: File of the best weights inside a checkpoint folder.
BEST_WEIGHTS_FILE = "best.safetensors"


@torch.inference_mode()
def evaluate(
    model: RewardModel,
    groups: list[Group],
    tok: TokenizedResponses,
    pad_id: int,
    batch_tokens: int,
    rt: Runtime,
    objective: Objective,
    packed: bool = False,
) -> dict[str, float]:
    """The objective's summary on evaluation targets (for ``bt``: loss without margins, pairwise
    accuracy, comparisons) and the reward mean / std over ``groups`` (sharded over ranks,
    summed with all-reduce): ``mean = Σr / n``, ``std = sqrt(Σr² / n - mean²)``."""
    was_training = model.training
    model.eval()
    names = [*objective.sum_names, "sequences", "reward_sum", "reward_sq_sum"]
    sums = torch.zeros(len(names), dtype=torch.float64, device=rt.device)
    batches = plan_batches(groups, batch_tokens, shuffle=False, packed=packed)
    mine = batches[rt.rank :: rt.world_size]
    # FSDP all-gathers each block's weights in its forward: every rank runs as many batches (spare ones not counted)
    rounds = -(-len(batches) // rt.world_size) if is_sharded(model) else len(mine)
    for i in range(rounds):
        batch = collate([groups[g] for g in (mine[i] if i < len(mine) else batches[0])], tok, pad_id,
                        packed).to(rt.device)
        with rt.autocast():
            rewards = objective.forward(model, batch)
        if i >= len(mine):
            continue
        terms = objective.loss(rewards, objective.targets(batch, training=False))
        r = rewards.double()
        sums += torch.cat([terms.sums, torch.stack([r.new_tensor(float(len(r))), r.sum(), (r**2).sum()])])
    all_reduce_sum(sums, rt)
    model.train(was_training)
    values = dict(zip(names, sums.tolist(), strict=True))
    n = max(values["sequences"], 1.0)
    mean = values["reward_sum"] / n
    std = math.sqrt(max(values["reward_sq_sum"] / n - mean**2, 0.0))
    return {**objective.summarize(values), "reward_mean": mean, "reward_std": std}


def no_evaluation(objective: Objective) -> dict[str, float]:
    """Stand-in for :func:`evaluate` without a val split: counts 0, means undefined (nan)."""
    empty = objective.summarize(dict.fromkeys(objective.sum_names, 0.0))
    return {**{k: 0 if isinstance(v, int) else float("nan") for k, v in empty.items()},
            "reward_mean": 0.0, "reward_std": 1.0}


def selection_score(val: dict[str, float]) -> tuple[str, float]:
    """The val metric that picks the best checkpoint and the score to maximise: ``("accuracy", val accuracy)``
    when the objective reports one, else ``("loss", −val loss)`` (pointwise objectives: the loss is minimised);
    NaN counts as −inf."""
    name, value = ("accuracy", val["accuracy"]) if "accuracy" in val else ("loss", -val["loss"])
    return name, value if math.isfinite(value) else -math.inf


@dataclass
class ModelSelection:
    """Best-so-far state of a run (see the module docstring); saved in and restored from checkpoints."""

    eval_every: int = 0  # evaluate every this many steps; 0: only after the last step
    patience: int = 0  # stop after this many evaluations without improvement; 0: never
    best_step: int | None = None
    best_score: float = -math.inf
    best_val: dict[str, float] | None = None
    evaluations: int = 0
    since_best: int = 0
    stopped_early: bool = False
    best_weights: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # None: the current weights

    def due(self, done: int, total: int) -> bool:
        """Evaluate after step ``done`` (1-based) of ``total``?"""
        return done == total or (self.eval_every > 0 and done % self.eval_every == 0)

    def update(self, done: int, val: dict[str, float], model: torch.nn.Module, last: bool) -> bool:
        """Record the evaluation after step ``done``; keep a CPU copy of the weights when it is the
        best so far (not after the ``last`` step: then the model itself holds them). Returns whether to stop."""
        _, score = selection_score(val)
        self.evaluations += 1
        if self.best_step is None or score > self.best_score:
            self.best_step, self.best_score, self.best_val, self.since_best = done, score, dict(val), 0
            self.best_weights = None if last else full_state_dict(model)  # sharded: all-gathered to rank 0
        else:
            self.since_best += 1
        self.stopped_early = self.patience > 0 and self.since_best >= self.patience and not last
        return self.stopped_early

    def curve_point(self, val: dict[str, float]) -> dict[str, float]:
        """The tracker's val point: ``val/<metric>`` and the best score so far with its step."""
        point = {f"val/{k}": float(v) for k, v in val.items()}
        best = {"val/best_score": self.best_score} if math.isfinite(self.best_score) else {}  # no ±inf to trackers
        return {**point, **best, "val/best_step": float(self.best_step or 0)}

    def restore_best(self, model: torch.nn.Module) -> None:
        """Load the best weights into ``model`` (nothing to do when the last evaluation was the best)."""
        if self.best_weights is not None:
            load_full_state_dict(model, self.best_weights)  # copies into the parameters (or shards), on their device

    def state(self) -> dict[str, Any]:
        """JSON part of the checkpoint (the weights go to :data:`BEST_WEIGHTS_FILE`)."""
        return {"best_step": self.best_step, "best_score": self.best_score if math.isfinite(self.best_score) else None,
                "best_val": self.best_val, "evaluations": self.evaluations, "since_best": self.since_best}

    def load_state(self, state: dict[str, Any] | None, weights: dict[str, torch.Tensor] | None) -> None:
        """Inverse of :meth:`state` (and the best weights); ``None``: a checkpoint without selection state."""
        if not state:
            return
        self.best_step, self.best_val = state["best_step"], state["best_val"]
        self.best_score = -math.inf if state["best_score"] is None else float(state["best_score"])
        self.evaluations, self.since_best = int(state["evaluations"]), int(state["since_best"])
        self.best_weights = weights

    def metrics(self, total: int) -> dict[str, Any]:
        """``best_step``, ``stopped_early``, ``evaluations`` and the selection metric for ``metrics/train.json``."""
        name = selection_score(self.best_val)[0] if self.best_val else None
        return {"best_step": self.best_step if self.best_step is not None else total,
                "stopped_early": self.stopped_early, "evaluations": self.evaluations,
                "selection_metric": f"val_{name}" if name else None}
