"""Training objectives: every loss the reward model trains with, in one module, chosen by name.

``params.yaml: train.objective`` names an entry of :data:`OBJECTIVES`; :func:`build_objective`
makes it from the train config. The training loop knows objectives only through
:class:`Objective`::

    W       = Σ objective.group_weight(g) over the prompt groups of the global step
    targets = objective.targets(batch)                  # from the collated batch
    terms   = objective.loss(r, targets, normalizer=W / world_size)
    terms.loss.backward()                               # Σ_i w_i·ℓ_i / (W / world_size)
    sums   += terms.sums                                # [Σ w·ℓ, Σ w, the objective's counts ...]
    metrics = objective.summarize(sums over micro-batches, ranks and steps)

``r`` holds one reward per sequence of the batch. ``W`` is the weight of the whole *global*
step (all micro-batches of all ranks), divided by the world size because DDP averages
gradients over ranks, so gradient accumulation and DDP give exactly the weighted mean over
the global step: 1 process with ``grad_accum = A·W`` and ``W`` processes with
``grad_accum = A`` compute the same update. Without a normaliser the loss is the batch's
own weighted mean (``W = Σ w``).

Adding an objective: subclass :class:`Objective` (``name``, ``count_names``, ``unit`` and four
methods) and add the class to :data:`OBJECTIVES`, e.g. with :func:`register_objective`. The
loop, the checkpoints and the resume fingerprint need no change (the fingerprint holds
``train.objective``).

Objectives
----------
``bt`` — :class:`BradleyTerryObjective`, grouped soft-label Bradley-Terry. A batch holds
``N`` scored sequences (every unique (prompt, response) once) and ``M`` comparisons between
them, given as index pairs ``(a_i, b_i)`` into the rewards. For a comparison with soft label
``p_i = P(a preferred)``, optional margin ``m_i`` and weight ``w_i``::

    Δ_i  = r[a_i] - r[b_i]
    ℓ_i  = -[ p_i · log σ(Δ_i - m_i) + (1 - p_i) · log σ(-Δ_i + m_i) ]       (soft-label BT)
         = BCEWithLogits(Δ_i - m_i, target = p_i)
    c_i  = c · (r[a_i] + r[b_i])²                                            (reward centering)

    loss = Σ_i w_i · (ℓ_i + c_i) / W

``m_i = train.margin_scale · pairs.margin`` in training and ``0`` in evaluation (the margin
shapes training only; the validation loss is the plain BT loss); ``c = train.center_coef``.
Label smoothing ``ε = train.label_smoothing`` fits ``p_i ← (1 − ε)·p_i + ε/2`` in training only
(a hard label's loss then has its minimum at a finite ``Δ = log((2 − ε)/ε)``, not at ``Δ → ∞``).
The weights ``w_i`` come with the prompt groups (``train.weighting``,
:func:`rewardline.training.batching.comparison_weights`: ``1 / C`` for each of the ``C``
comparisons of a prompt, or ``1``).

Accuracy counts comparisons with ``p ≠ 0.5`` (ties excluded) whose ``Δ`` has the sign the
label says: ``Δ > 0`` when ``p > 0.5``, ``Δ < 0`` when ``p < 0.5``.

``thurstone`` — :class:`ThurstoneObjective`, pointwise regression on the per-response utilities
``u_i`` that the pairs stage fitted per prompt (``pairs.targets``, :mod:`rewardline.pairs.thurstone`),
on a fixed scale (probit: ``Φ(u)`` = P(beats the anchor / the prompt's typical response))::

    ℓ_i  = ½ (r_i − u_i)²,    w_i = W_g · s_i⁻² / Σ_{j∈g} s_j⁻²,   s_i = max(se_i, MIN_TARGET_SE)
    (an anchor, se = 0: s = the median s of its prompt's other responses)
    loss = Σ_i w_i ℓ_i / W

a weighted MSE that is, within each prompt, the Gaussian NLL ``Σ (r_i − u_i)² / (2 s_i²)`` up to
a constant, the prompt's total weight being its comparison weight ``W_g``
(:func:`rewardline.training.batching.target_weights`; ``W`` is the same as ``bt``'s).

``bt+thurstone`` — :class:`BradleyTerryThurstoneObjective`: ``loss = loss_bt + λ · loss_thurstone``
over the same groups and normaliser, ``λ = train.pointwise_weight``.

``prm`` — :class:`ProcessObjective`, a process reward model on step-labelled solutions
(:mod:`rewardline.training.step_data`). Each solution is encoded once with a separator token after
every step (:mod:`rewardline.modeling.steps`); :meth:`Objective.forward` returns the head's logit
``z_s = w · h_{sep_s} + b`` at every separator ``s`` of the batch (not one reward per sequence).
With BCE target ``y_s``, label mask ``m_s`` (0 for unknown labels: they add nothing to loss or
gradient), and for each solution ``i`` its outcome ``o_i`` with mask ``q_i`` read at its last
kept separator ``L(i)`` (the ORM term, weight ``λ = train.prm_outcome_weight``, 0 = off)::

    ℓ_s   = BCEWithLogits(z_s, y_s) = -[y_s log σ(z_s) + (1 - y_s) log σ(-z_s)]
    loss  = ( Σ_s m_s ℓ_s + λ Σ_i q_i BCEWithLogits(z_{L(i)}, o_i) ) / W,   W = Σ m_s + λ Σ q_i

so only hidden states at separator positions receive a gradient from the loss, and
``∂loss/∂z_s = m_s (σ(z_s) − y_s) / W`` is 0 at an unknown step. Accuracy counts labelled steps with
``(z_s > 0) == (y_s = 1)``. Real solutions judged only by their outcome ``o`` (the ``solutions``
adapter with ``step_labels: outcome``, the default PRM recipe's GPT-3 solutions) are labelled the
outcome way (Math-Shepherd's hard estimate, one rollout: the solution itself): ``o = 1`` gives
``y_k = 1, m_k = 1`` at every step; ``o = 0`` gives ``y_K = 0, m_K = 1`` at the last step ``K`` and
``m_k = 0`` before it (where the chain went wrong is unknown), so a wrong solution adds exactly
``−log σ(−z_K)`` to the numerator and 1 to ``W``.

Within-problem ranking (``μ = train.prm_pair_weight``, 0 = off): best-of-N picks among the solutions
of *one* problem, and per-step BCE on outcome labels pooled over problems also rewards "looks like an
easy problem". For every pair ``c = (a, b)`` of solutions of the same problem with ``a`` correct and
``b`` wrong (outcome ``1`` vs ``0``; :func:`rewardline.training.step_data.solution_groups`, weight
``w_c = 1``), a Bradley-Terry term on the solutions' scores ``s_i`` from their step logits
(``train.prm_pair_score``: ``min`` — ``s_i = min_k z_k``, monotone in the ``min`` aggregate
``min_k σ(z_k)``; ``last`` — ``s_i = z_{L(i)}``; ``mean`` — ``s_i = (1/K_i) Σ_k z_k``)::

    ℓ_c  = −log σ(s_a − s_b) = softplus(s_b − s_a)         (log 2 when s_a = s_b)
    loss = ( Σ_s m_s ℓ_s + λ Σ_i q_i ℓ_i^{outcome} + μ Σ_c w_c ℓ_c ) / W,
    W    = Σ m_s + λ Σ q_i + μ Σ_c w_c

so the pair term's gradient reaches only the logits that make ``s_a`` and ``s_b`` (``min``: each
solution's lowest step; ``last``: its last step; ``mean``: all its steps). ``pair_accuracy`` counts
pairs with ``s_a > s_b``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import AfterValidator

from rewardline.data.tables import TARGETS
from rewardline.errors import ConfigError
from rewardline.training.batching import Batch, Group

#: The first two sums of every objective: Σ w·ℓ and Σ w.
LOSS_SUMS = ("weighted_loss", "weight")


@dataclass
class LossTerms:
    """What :meth:`Objective.loss` returns for one batch."""

    loss: torch.Tensor  # Σ w·ℓ / W, scalar, differentiable: backward() runs on it
    sums: torch.Tensor  # float64 [len(sum_names)], detached: Σ w·ℓ, Σ w, then the objective's counts


class Objective(ABC):
    """A training loss chosen by name: targets from a collated batch, the weighted loss of the
    rewards against them, and the objective's own metrics from summed per-batch counts.

    Subclasses set ``name`` (the key in :data:`OBJECTIVES`), ``count_names`` (what
    :meth:`loss` counts per batch, after Σ w·ℓ and Σ w) and ``unit`` (the count of what the
    objective trains on, one of ``count_names``: the loop reports ``train_<unit>``,
    ``val_<unit>`` and ``<unit>_per_s``). The loop sums its own ``sequences``, ``tokens``,
    ``step_loss`` and ``steps`` beside them: counts need other names.
    """

    name: ClassVar[str]
    count_names: ClassVar[tuple[str, ...]]
    unit: ClassVar[str]
    #: The batches must carry per-response targets (``targets/`` of the pairs stage).
    needs_targets: ClassVar[bool] = False
    pairwise: ClassVar[bool] = False  # the loss has a Bradley-Terry term (the one config.PAIRWISE_KNOBS shape)
    #: What the batches are made of: ``pairs`` (a pairs directory) or ``steps`` (step-labelled solutions).
    data_kind: ClassVar[str] = "pairs"

    @classmethod
    def from_config(cls, config: Any) -> Objective:
        """The objective with its parameters from the train config (default: none)."""
        return cls()

    @property
    def sum_names(self) -> tuple[str, ...]:
        """Names of the entries of :attr:`LossTerms.sums`, in order."""
        return LOSS_SUMS + self.count_names

    @abstractmethod
    def group_weight(self, group: Group) -> float:
        """``Σ w`` of one prompt group: its share of the global step's normaliser ``W``."""

    @abstractmethod
    def targets(self, batch: Batch, *, training: bool = True) -> Any:
        """What the rewards of ``batch`` are trained towards (``training=False``: for evaluation)."""

    @abstractmethod
    def loss(self, rewards: torch.Tensor, targets: Any, normalizer: float | None = None) -> LossTerms:
        """``Σ w·ℓ / normalizer`` (default ``Σ w``) of ``rewards`` [N] against ``targets``, with the sums."""

    @abstractmethod
    def summarize(self, sums: Mapping[str, float]) -> dict[str, float | int]:
        """Metrics from :attr:`sum_names` summed over batches: ``loss`` first, then the
        objective's own; counts as ``int``."""

    def forward(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """What :meth:`loss` scores: one reward per sequence of ``batch`` (``model`` may be DDP-wrapped)."""
        return model(**batch.model_inputs())

    def _terms(self, loss: torch.Tensor, weighted_sum: torch.Tensor, weight_sum: torch.Tensor,
               *counts: torch.Tensor | int) -> LossTerms:
        """Pack the loss and the float64 vector of sums (``counts`` in ``count_names`` order)."""
        values = [weighted_sum.detach(), weight_sum.detach()]
        values += [torch.as_tensor(c, device=loss.device) for c in counts]
        return LossTerms(loss=loss, sums=torch.stack([v.double() for v in values]))


@dataclass
class ComparisonTargets:
    """The comparisons of a batch: indices into its rewards, soft labels, weights, margins."""

    idx_a: torch.Tensor  # int64 [M]
    idx_b: torch.Tensor  # int64 [M]
    label: torch.Tensor  # [M], P(a preferred)
    weight: torch.Tensor  # [M]
    margin: torch.Tensor | None  # [M] or None (no margin)


class BradleyTerryObjective(Objective):
    """K-wise grouped soft-label Bradley-Terry with margins and reward centering (``bt``).

    ``loss = Σ w·(-[p log σ(Δ-m) + (1-p) log σ(m-Δ)] + c·(r_a+r_b)²) / W`` with
    ``Δ = r_a - r_b``; see the module docstring.
    """

    name = "bt"
    pairwise = True
    count_names = ("correct", "counted", "comparisons")
    unit = "comparisons"

    def __init__(self, margin_scale: float = 0.0, center_coef: float = 0.0, label_smoothing: float = 0.0) -> None:
        self.margin_scale = margin_scale
        self.center_coef = center_coef
        self.label_smoothing = label_smoothing

    @classmethod
    def from_config(cls, config: Any) -> BradleyTerryObjective:
        return cls(config.margin_scale, config.center_coef, config.label_smoothing)

    def group_weight(self, group: Group) -> float:
        return float(group.weight.sum())

    def targets(self, batch: Batch, *, training: bool = True) -> ComparisonTargets:
        """The batch's comparisons; in training only, margins ``m = margin_scale · pairs.margin`` and labels
        smoothed toward 1/2, ``p ← (1 − ε)·p + ε/2``."""
        margin = batch.margin * self.margin_scale if training and self.margin_scale else None
        eps = self.label_smoothing if training else 0.0
        label = batch.label * (1 - eps) + eps / 2 if eps else batch.label
        return ComparisonTargets(batch.idx_a, batch.idx_b, label, batch.weight, margin)

    def loss(self, rewards: torch.Tensor, targets: ComparisonTargets, normalizer: float | None = None) -> LossTerms:
        rewards = rewards.float()
        r_a, r_b = rewards[targets.idx_a], rewards[targets.idx_b]
        delta = r_a - r_b
        label = targets.label.to(delta)
        logits = delta - targets.margin.to(delta) if targets.margin is not None else delta
        per = F.binary_cross_entropy_with_logits(logits, label, reduction="none")
        if self.center_coef:
            per = per + self.center_coef * (r_a + r_b) ** 2
        w = targets.weight.to(per)
        weighted, weight_sum = (w * per).sum(), w.sum()
        denom = weight_sum.clamp_min(1e-12) if normalizer is None else normalizer
        with torch.no_grad():
            decided = label != 0.5
            right = ((delta > 0) == (label > 0.5)) & (delta != 0) & decided
        return self._terms(weighted / denom, weighted, weight_sum, right.sum(), decided.sum(), len(label))

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float | int]:
        """``loss = Σ w·ℓ / Σ w``, ``accuracy = correct / counted`` (ties excluded), ``comparisons``."""
        return {
            "loss": sums["weighted_loss"] / max(sums["weight"], 1e-12),
            "accuracy": sums["correct"] / max(sums["counted"], 1.0),
            "comparisons": int(sums["comparisons"]),
        }


@dataclass
class PointwiseTargets:
    """One target per sequence of a batch: the fitted utility and its weight."""

    utility: torch.Tensor  # [N]
    weight: torch.Tensor  # [N]


def pointwise_targets(batch: Batch) -> PointwiseTargets:
    """The batch's per-response utilities; ConfigError when the batches carry none."""
    if batch.target is None or batch.target_weight is None:
        raise ConfigError(f"train.objective: a pointwise objective needs per-response targets, and the batch has "
                          f"none (expected {TARGETS}/ in the pairs directory: set pairs.targets: thurstone)")
    return PointwiseTargets(batch.target, batch.target_weight)


def pointwise_sums(rewards: torch.Tensor, targets: PointwiseTargets) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Σ w·½(r − u)², Σ w, Σ (r − u)²)`` of one batch (the last one unweighted, detached)."""
    error = rewards.float() - targets.utility.to(rewards.device, torch.float32)
    w = targets.weight.to(error)
    return (w * 0.5 * error**2).sum(), w.sum(), (error.detach().double() ** 2).sum()


class ThurstoneObjective(Objective):
    """Pointwise weighted MSE on fitted utilities (``thurstone``):
    ``loss = Σ w·½(r − u)² / W``, ``w ∝ 1/max(se, MIN_TARGET_SE)²`` within a prompt (module docstring)."""

    name = "thurstone"
    count_names = ("squared_error", "responses")
    unit = "responses"
    needs_targets = True

    def group_weight(self, group: Group) -> float:
        return float(group.weight.sum())  # = Σ group.target_weight

    def targets(self, batch: Batch, *, training: bool = True) -> PointwiseTargets:
        return pointwise_targets(batch)

    def loss(self, rewards: torch.Tensor, targets: PointwiseTargets, normalizer: float | None = None) -> LossTerms:
        weighted, weight_sum, squared = pointwise_sums(rewards, targets)
        denom = weight_sum.clamp_min(1e-12) if normalizer is None else normalizer
        return self._terms(weighted / denom, weighted, weight_sum, squared, len(rewards))

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float | int]:
        """``loss = Σ w·ℓ / Σ w``, ``rmse = sqrt(Σ (r − u)² / responses)`` (unweighted), ``responses``."""
        return {
            "loss": sums["weighted_loss"] / max(sums["weight"], 1e-12),
            "rmse": (sums["squared_error"] / max(sums["responses"], 1.0)) ** 0.5,
            "responses": int(sums["responses"]),
        }


class BradleyTerryThurstoneObjective(Objective):
    """``bt+thurstone``: ``loss = loss_bt + λ·loss_thurstone`` (``λ = train.pointwise_weight``), both
    ``Σ w·ℓ / W`` over the same groups."""

    name = "bt+thurstone"
    pairwise = True
    count_names = ("correct", "counted", "comparisons", "bt_weighted_loss", "pointwise_weighted_loss",
                   "squared_error", "responses")
    unit = "comparisons"
    needs_targets = True

    def __init__(self, pointwise_weight: float = 1.0, margin_scale: float = 0.0, center_coef: float = 0.0,
                 label_smoothing: float = 0.0) -> None:
        self.pointwise_weight = pointwise_weight
        self.pairwise = BradleyTerryObjective(margin_scale, center_coef, label_smoothing)

    @classmethod
    def from_config(cls, config: Any) -> BradleyTerryThurstoneObjective:
        return cls(config.pointwise_weight, config.margin_scale, config.center_coef, config.label_smoothing)

    def group_weight(self, group: Group) -> float:
        return float(group.weight.sum())

    def targets(self, batch: Batch, *, training: bool = True) -> tuple[ComparisonTargets, PointwiseTargets]:
        return self.pairwise.targets(batch, training=training), pointwise_targets(batch)

    def loss(self, rewards: torch.Tensor, targets: tuple[ComparisonTargets, PointwiseTargets],
             normalizer: float | None = None) -> LossTerms:
        pairwise = self.pairwise.loss(rewards, targets[0], normalizer)
        weighted, _, squared = pointwise_sums(rewards, targets[1])
        bt_weighted, weight_sum = pairwise.sums[0], pairwise.sums[1]
        denom = weight_sum.clamp_min(1e-12).to(weighted) if normalizer is None else normalizer
        loss = pairwise.loss + self.pointwise_weight * weighted / denom
        total = bt_weighted.to(weighted) + self.pointwise_weight * weighted
        return self._terms(loss, total, weight_sum, *pairwise.sums[2:], bt_weighted, weighted.detach(), squared,
                           len(rewards))

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float | int]:
        """The total loss, ``bt``'s accuracy, each part's ``Σ w·ℓ / Σ w``, the pointwise rmse."""
        weight = max(sums["weight"], 1e-12)
        return {
            "loss": sums["weighted_loss"] / weight,
            "accuracy": sums["correct"] / max(sums["counted"], 1.0),
            "bt_loss": sums["bt_weighted_loss"] / weight,
            "pointwise_loss": sums["pointwise_weighted_loss"] / weight,
            "rmse": (sums["squared_error"] / max(sums["responses"], 1.0)) ** 0.5,
            "comparisons": int(sums["comparisons"]),
            "responses": int(sums["responses"]),
        }


@dataclass
class StepTargets:
    """The labelled steps of a batch and its solutions' outcomes (``prm``)."""

    target: torch.Tensor  # [S] BCE target per step separator
    known: torch.Tensor  # [S] 1 labelled, 0 unknown
    last_step: torch.Tensor  # [N] index into S of each solution's last kept step, -1 none
    outcome: torch.Tensor  # [N]
    outcome_known: torch.Tensor  # [N]
    step_row: torch.Tensor | None = None  # [S] solution (row) of each step: for the pair term's scores
    pair_a: torch.Tensor | None = None  # [C] correct solution of each within-problem pair
    pair_b: torch.Tensor | None = None  # [C] wrong solution of the same problem
    pair_weight: torch.Tensor | None = None  # [C]


PAIR_SCORES = ("min", "last", "mean")


def solution_scores(logits: torch.Tensor, step_row: torch.Tensor, last_step: torch.Tensor, n: int,
                    how: str) -> torch.Tensor:
    """``s_i`` [n] of every solution from its step logits ``z`` (``how``: ``min`` | ``last`` | ``mean``;
    module docstring). A solution without a kept step gets 0 (it is never in a pair)."""
    if how == "last":
        return torch.where(last_step >= 0, logits[last_step.clamp_min(0)], torch.zeros_like(logits[:1]))
    if how == "min":
        out = torch.full((n,), float("inf"), dtype=logits.dtype, device=logits.device)
        out = out.scatter_reduce(0, step_row, logits, "amin", include_self=True)
        return torch.where(torch.isinf(out), torch.zeros_like(out), out)
    if how == "mean":
        total = torch.zeros(n, dtype=logits.dtype, device=logits.device).index_add(0, step_row, logits)
        return total / torch.bincount(step_row, minlength=n).clamp_min(1).to(logits)
    raise ConfigError(f"train.prm_pair_score: expected one of {PAIR_SCORES}, got {how!r}")


class ProcessObjective(Objective):
    """Per-step BCE at the step separators, plus optional outcome and within-problem pair terms (``prm``):
    ``loss = (Σ m_s ℓ_s + λ Σ q_i ℓ_{L(i)}^{outcome} + μ Σ_c w_c softplus(s_b − s_a)) / W`` (module docstring)."""

    name = "prm"
    count_names = ("correct", "counted", "solution_steps", "pair_correct", "pairs")
    unit = "solution_steps"
    #: The batches are step-labelled solutions (``solutions.parquet``), not pairs.
    data_kind: ClassVar[str] = "steps"

    def __init__(self, outcome_weight: float = 0.0, pair_weight: float = 0.0, pair_score: str = "min") -> None:
        if pair_score not in PAIR_SCORES:
            raise ConfigError(f"train.prm_pair_score: expected one of {PAIR_SCORES}, got {pair_score!r}")
        self.outcome_weight, self.pair_weight, self.pair_score = outcome_weight, pair_weight, pair_score

    @classmethod
    def from_config(cls, config: Any) -> ProcessObjective:
        return cls(config.prm_outcome_weight, config.prm_pair_weight, config.prm_pair_score)

    def group_weight(self, group: Group) -> float:
        assert group.step_known is not None and group.outcome_known is not None
        return (float(group.step_known.sum()) + self.outcome_weight * float(group.outcome_known.sum())
                + self.pair_weight * float(group.weight.sum()))

    def forward(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The head's logit at every step separator of the batch, ``[S]``."""
        return model(batch.input_ids, batch.attention_mask, batch.token_type_ids, step_rows=batch.step_row,
                     step_cols=batch.step_col)

    def targets(self, batch: Batch, *, training: bool = True) -> StepTargets:
        if batch.step_target is None:
            raise ConfigError("train.objective: prm needs step-labelled solutions (solutions.parquet), and the "
                              "batch has none")
        return StepTargets(batch.step_target, batch.step_known, batch.last_step, batch.outcome, batch.outcome_known,
                           batch.step_row, batch.idx_a, batch.idx_b, batch.weight)

    def loss(self, rewards: torch.Tensor, targets: StepTargets, normalizer: float | None = None) -> LossTerms:
        logits = rewards.float()
        y, m = targets.target.to(logits), targets.known.to(logits)
        per = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        weighted, weight_sum = (m * per).sum(), m.sum()
        if self.outcome_weight:
            has = targets.last_step >= 0
            q = targets.outcome_known.to(logits)[has]
            z_last = logits[targets.last_step[has]]
            per_out = F.binary_cross_entropy_with_logits(z_last, targets.outcome.to(logits)[has], reduction="none")
            weighted = weighted + self.outcome_weight * (q * per_out).sum()
            weight_sum = weight_sum + self.outcome_weight * q.sum()
        pair_right, n_pairs = torch.zeros((), dtype=torch.int64), 0
        if targets.pair_a is not None and targets.step_row is not None and len(targets.pair_a):
            s = solution_scores(logits, targets.step_row, targets.last_step, len(targets.last_step), self.pair_score)
            delta = s[targets.pair_a] - s[targets.pair_b]
            w = targets.pair_weight.to(logits) if targets.pair_weight is not None else torch.ones_like(delta)
            if self.pair_weight:
                weighted = weighted + self.pair_weight * (w * F.softplus(-delta)).sum()
                weight_sum = weight_sum + self.pair_weight * w.sum()
            pair_right, n_pairs = (delta.detach() > 0).sum(), len(delta)
        denom = weight_sum.clamp_min(1e-12) if normalizer is None else normalizer
        with torch.no_grad():
            right = (((logits > 0) == (y > 0.5)) & (m > 0)).sum()
        return self._terms(weighted / denom, weighted, weight_sum, right, m.sum(), len(logits), pair_right, n_pairs)

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float | int]:
        """``loss = Σ w·ℓ / Σ w``, ``accuracy`` = right / labelled steps, ``solution_steps`` (all separators),
        ``pair_accuracy`` = within-problem pairs with ``s_a > s_b`` / pairs."""
        return {
            "loss": sums["weighted_loss"] / max(sums["weight"], 1e-12),
            "accuracy": sums["correct"] / max(sums["counted"], 1.0),
            "solution_steps": int(sums["solution_steps"]),
            "pair_accuracy": sums["pair_correct"] / max(sums["pairs"], 1.0),
            "pairs": int(sums["pairs"]),
        }


#: Objectives by name (``train.objective``).
OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls
    for cls in (BradleyTerryObjective, ThurstoneObjective, BradleyTerryThurstoneObjective, ProcessObjective)
}


def register_objective(cls: type[Objective]) -> type[Objective]:
    """Add ``cls`` to :data:`OBJECTIVES` under ``cls.name`` (usable as a class decorator)."""
    if cls.name in OBJECTIVES and OBJECTIVES[cls.name] is not cls:
        raise ValueError(f"objective {cls.name!r} is already registered as {OBJECTIVES[cls.name].__qualname__}")
    OBJECTIVES[cls.name] = cls
    return cls


def known_objective(name: str) -> str:
    """``name`` when an objective is registered under it (the train config's check of ``train.objective``)."""
    if name not in OBJECTIVES:
        raise ValueError(f"is not a registered objective; expected one of {sorted(OBJECTIVES)}")
    return name


#: A train config's ``objective``: a name of :data:`OBJECTIVES`, checked when the config is read.
ObjectiveName = Annotated[str, AfterValidator(known_objective)]


def build_objective(name: str, config: Any) -> Objective:
    """The objective registered as ``name``, its parameters from ``config`` (the train config)."""
    if name not in OBJECTIVES:
        raise ConfigError(f"train.objective: unknown objective {name!r}; known: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name].from_config(config)
