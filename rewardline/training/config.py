"""The training run's parameters (``params.yaml: train.*``), validated by pydantic (``config.build``)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from rewardline.config import Section, build, parse_overrides
from rewardline.modeling.backbones import DEFAULT_BACKBONE
from rewardline.modeling.formatting import FormatConfig
from rewardline.training.objectives import OBJECTIVES, ObjectiveName

__all__ = ["PAIRWISE_KNOBS", "TrainConfig"]
#: Settings of the Bradley-Terry term only (0 = off): with an objective without one (``Objective.pairwise``
#: False) a non-zero value would be ignored, so it is refused.
PAIRWISE_KNOBS = ("margin_scale", "center_coef", "label_smoothing")


class TrainConfig(Section):
    """All training parameters (``params.yaml: train.*``)."""

    section: ClassVar[str] = "train"

    backbone: str = DEFAULT_BACKBONE  # HF id or local path; default: MiniLM-L6 shipped on PyPI
    pooling: Literal["auto", "first", "last", "mean"] = "auto"
    template: Literal["auto", "chat", "pair", "text"] = "auto"
    max_length: int = Field(512, ge=1)  # the whole response of 95 % of the shipped sample (docs/benchmarks.md)
    min_prompt_tokens: int = Field(64, ge=0)
    batch_tokens: int = Field(4096, ge=1)  # padded tokens per micro-batch
    grad_accum: int = Field(1, ge=1)
    epochs: int = Field(1, ge=1)
    min_steps: int = Field(0, ge=0)  # more whole epochs until the run has >= this many optimizer steps; 0 = off
    eval_every: int = Field(0, ge=0)  # evaluate on val every N optimizer steps (and after the last); 0 = at the end
    patience: int = Field(0, ge=0)  # stop after N evaluations without a better val accuracy; 0 = never
    max_steps: int = Field(0, ge=0)  # > 0: stop after this many optimizer steps
    lr: float = Field(3e-4, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)  # on matrices only, not on biases / norms
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0)
    adam_eps: float = Field(1e-8, gt=0.0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0.0, le=1.0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    objective: ObjectiveName = "bt"  # loss by name (objectives.OBJECTIVES): bt | thurstone (pointwise) | bt+thurstone
    pointwise_weight: float = Field(1.0, ge=0.0)  # λ of bt+thurstone: loss_bt + λ·loss_thurstone
    target_centre: Literal["anchor", "prompt"] = "prompt"  # pointwise targets: u − the prompt's mean u, or u
    weighting: Literal["prompt", "comparison"] = "prompt"  # prompt (each prompt counts once) | comparison
    margin_scale: float = Field(0.0, ge=0.0)  # m = margin_scale * pairs.margin; 0 = no margin
    center_coef: float = Field(0.0, ge=0.0)  # c in c·(r_a + r_b)²
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)  # ε: bt fits a label p as (1 − ε)·p + ε/2 (objectives)
    head_lr_scale: float = Field(1.0, gt=0.0)  # the reward head's lr = lr · this (optim.lr_scales)
    layer_lr_decay: float = Field(1.0, gt=0.0, le=1.0)  # γ: block i of L at lr · γ^(L-1-i), embeddings γ^L
    dropout: bool = False
    freeze_embeddings: bool = False  # the backbone's embeddings get no gradient
    freeze_layers: int = Field(0, ge=0)  # ... nor its first N transformer blocks (no backward below block N+1)
    gradient_checkpointing: bool = False  # activation checkpointing: recompute each block's activations in backward
    chunk_by_length: bool = True  # forward a padded batch as chunks of similar length (exact; off under fsdp)
    strategy: Literal["ddp", "fsdp"] = "ddp"  # data parallel: ddp (replicas) | fsdp (FSDP2 shards; parallel.py)
    shared_prefix: Literal["auto"] | bool = "auto"  # decoders: a prompt encoded once for its K responses (auto: on)
    device: str = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto (bf16 on CUDA) | bf16 | fp32
    seed: int = Field(0, ge=0)
    eval_batch_tokens: int = Field(32768, ge=1)
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(100, ge=0)  # 0 = never
    checkpoint_dir: str | None = None  # default <out_dir>/checkpoints
    resume: bool = True
    keep_checkpoints: bool = False
    cache_dir: str | None = None  # tokenisation cache, default ~/.cache/rewardline/tokenized
    prm_neutral_as: Literal["correct", "incorrect", "ignore"] = "correct"  # objective prm: target of a neutral step
    prm_outcome_weight: float = Field(0.0, ge=0.0)  # objective prm: λ of the outcome (ORM) term, 0 = off
    prm_pair_weight: float = Field(0.0, ge=0.0)  # objective prm: μ of the within-problem correct-vs-wrong BT term
    prm_pair_score: Literal["min", "last", "mean"] = "min"  # objective prm: the solution score that term ranks
    prm_aggregate: Literal["min", "prod", "last", "mean"] = "min"  # objective prm: the saved model's default reward
    prm_split_salt: str = "rewardline-v1"  # objective prm: train / val / test by prompt (pairs.split_salt's hash)
    prm_train_fraction: float = Field(0.8, gt=0.0, le=1.0)
    prm_val_fraction: float = Field(0.1, ge=0.0, le=1.0)
    progress: bool = True  # a tqdm bar on a terminal, else a log line every log_every steps (TrainingProgress)

    @field_validator(*PAIRWISE_KNOBS)
    @classmethod
    def _knob_of_a_pairwise_objective(cls, value: float, info: ValidationInfo) -> float:
        """A Bradley-Terry knob set for an objective without that term would be silently ignored: refused."""
        objective = info.data.get("objective")  # absent when the objective itself was refused
        if value and objective in OBJECTIVES and not OBJECTIVES[objective].pairwise:
            pairwise = " or ".join(sorted(name for name, obj in OBJECTIVES.items() if obj.pairwise))
            raise ValueError(f"shapes the Bradley-Terry term only, and train.objective {objective} has none "
                             f"(expected 0, or objective {pairwise})")
        return value

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> TrainConfig:
        """From ``params.yaml``'s ``train`` section (``config.build``: bad keys, types, ranges raise ConfigError)."""
        return build(cls, params, name="train")

    def override(self, assignments: list[str]) -> TrainConfig:
        """Apply ``key=value`` strings (values parsed as YAML, ``train.`` prefix allowed), e.g. from ``--set``."""
        return build(TrainConfig, self.model_dump(), parse_overrides(assignments, section="train"))

    @property
    def format_config(self) -> FormatConfig:
        return FormatConfig(self.template, self.max_length, self.min_prompt_tokens)
