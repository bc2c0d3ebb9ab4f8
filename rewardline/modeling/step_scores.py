"""Scoring solutions step by step with a process reward model (PRM), and the step-score aggregates.

A PRM (``reward_config.json``: ``step_separator`` set) gives step ``k`` of a solution the score

    p_k = σ(z_k) = P(step k is correct),   z_k = w · h_{SEP_k} + b

from one forward pass over ``prompt + step_1 + SEP + ... + step_K + SEP``
(:mod:`rewardline.modeling.steps`). The solution's ``reward`` aggregates the step scores:

* ``min``  — ``min_k p_k``: the weakest step (Lightman et al., the default),
* ``prod`` — ``Π_k p_k``: P(every step correct) if the steps' errors were independent,
* ``last`` — ``p_K``: the score at the final step,
* ``mean`` — ``(1/K) Σ_k p_k``.

A step dropped because the solution exceeds ``max_length`` (tail steps, never cut inside) has no
score (``None`` in ``step_scores``, NaN in arrays) and the aggregate runs over the scored steps; a
solution with no scored step gets a NaN reward.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from rewardline.data.messages import PROMPT_EXPECTED, check_prompt, check_text, message_list
from rewardline.data.tables import json_safe
from rewardline.errors import BadInput, NonFiniteError, json_type

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from rewardline.modeling.model import RewardModel

AGGREGATES = ("min", "prod", "last", "mean")
#: The columns :func:`step_scored_rows` adds to a row, with their Arrow types.
STEP_COLUMNS = {"step_scores": pa.list_(pa.float64()), "reward": pa.float64()}


def aggregate_steps(scores: list[np.ndarray], how: str = "min") -> np.ndarray:
    """One reward per solution from its step scores ``p_k`` (NaN = not scored; module docstring)."""
    if how not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {how!r}")
    out = np.full(len(scores), np.nan)
    for i, s in enumerate(scores):
        kept = np.asarray(s, np.float64)
        kept = kept[~np.isnan(kept)]
        if len(kept):
            out[i] = {"min": np.min, "prod": np.prod, "last": lambda x: x[-1], "mean": np.mean}[how](kept)
    return out


def is_process_model(model_dir: Path | str) -> bool:
    """Whether ``model_dir`` holds a PRM (its ``reward_config.json`` names a step separator)."""
    path = Path(model_dir) / "reward_config.json"
    try:
        return bool(json.loads(path.read_text()).get("step_separator")) if path.is_file() else False
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False  # RewardModel.load reports the bad file


def refuse_process_model(model_dir: Path | str, command: str) -> None:
    """ConfigError (exit 2) when ``model_dir`` is a PRM: ``command`` reads a pooled forward, not its reward."""
    from rewardline.errors import ConfigError

    if is_process_model(model_dir):
        raise ConfigError(f"{model_dir}: a process reward model; {command} scores outcome models (score its "
                          "steps with `rewardline score` rows {prompt, steps}, or `rewardline bon`)")


def score_steps(model: RewardModel, tokenizer: Any, prompts: list[str], steps: list[list[str]],
                batch_tokens: int = 16384, device: str = "auto") -> list[np.ndarray]:
    """``p_k`` for every step of every solution (float64 arrays, NaN for dropped steps), batched by length."""
    import torch

    from rewardline.modeling.batching import length_batches
    from rewardline.modeling.device import select_runtime
    from rewardline.modeling.formatting import Formatter
    from rewardline.modeling.steps import StepFormatter

    if not model.config.is_process:
        raise ValueError("this model is not a process reward model (reward_config.json has no step_separator)")
    rt = select_runtime(device, "auto")
    model.eval()
    fmt = StepFormatter(tokenizer, Formatter(tokenizer, model.config.format_config), model.config.step_separator)
    enc = fmt.encode([str(p) for p in prompts], steps)
    _warn_dropped(np.asarray(enc.steps_dropped, np.int64), np.array([len(s) for s in steps], np.int64),
                  model.config.format_config.max_length)
    lengths = np.array([len(x) for x in enc.input_ids], np.int64)
    pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    out = [np.full(len(s), np.nan) for s in steps]
    device_ = next(model.parameters()).device
    with torch.inference_mode():
        for rows in length_batches(lengths, batch_tokens):
            width = int(lengths[rows[0]])
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
            step_rows, step_cols = [], []
            for j, r in enumerate(rows):
                n = int(lengths[r])
                ids[j, :n] = torch.tensor(enc.input_ids[r])
                types[j, :n] = torch.tensor(enc.token_type_ids[r])
                mask[j, :n] = 1
                step_rows += [j] * len(enc.positions[r])
                step_cols += enc.positions[r]
            with rt.autocast():
                logits = model(ids.to(device_), mask.to(device_), types.to(device_),
                               step_rows=torch.tensor(step_rows, dtype=torch.long, device=device_),
                               step_cols=torch.tensor(step_cols, dtype=torch.long, device=device_))
            probs = torch.sigmoid(logits.float()).cpu().numpy().astype(np.float64)
            at = 0
            for r in rows:
                k = len(enc.positions[r])
                out[r][:k] = probs[at : at + k]
                at += k
    return out


def _warn_dropped(dropped: np.ndarray, n_steps: np.ndarray, max_length: int) -> None:
    """Say how many solutions lost tail steps to ``max_length`` (their scores null) and how many lost all of them
    (reward null: the prompt and the first step already fill ``max_length``)."""
    cut, none = int((dropped > 0).sum()), int((dropped == n_steps).sum())
    if cut:
        log.warning("%d of %d solutions pass max_length=%d: %d tail steps not scored (null in step_scores)%s",
                    cut, len(n_steps), max_length, int(dropped.sum()),
                    f"; {none} with no step scored (reward null: the prompt and first step fill max_length)"
                    if none else "")


def prompt_texts(prompts: list[Any]) -> list[str]:
    """The text a PRM reads for each prompt: the text itself, or a message list rendered as ingest stores it
    (:func:`rewardline.data.messages.message_list`), so a prompt scores as the same prompt trained on."""
    return [message_list(p)[0] for p in prompts]


def solution_steps(text: str) -> list[str]:
    """A solution text's steps: its non-blank lines, stripped (the ``solutions`` adapter's split)."""
    return [line.strip() for line in str(text).split("\n") if line.strip()]


def score_solution_texts(model_dir: Path | str, prompts: list[Any], responses: list[str],
                         aggregate: str | None = None, unscored: float = -1.0) -> np.ndarray:
    """One reward per whole solution text from a PRM: the ``aggregate`` (default the model's ``step_aggregate``)
    of the step scores ``p_k`` of its lines (:func:`solution_steps`), as ``rewardline score`` gives for
    ``{prompt, steps}`` rows. A solution with no scored step gets ``unscored`` (below every ``p`` in [0, 1])."""
    from rewardline.modeling.device import select_runtime
    from rewardline.modeling.model import RewardModel

    model, tokenizer = RewardModel.load(model_dir, select_runtime("auto", "auto").device)
    steps = [solution_steps(r) or [str(r)] for r in responses]
    rewards = aggregate_steps(score_steps(model, tokenizer, prompt_texts(prompts), steps),
                              aggregate or model.config.step_aggregate)
    return np.where(np.isnan(rewards), unscored, rewards)


def check_step_row(row: Any, where: dict[str, Any]) -> None:
    """A PRM input row: ``prompt`` text or ``{role, content}`` messages (as an outcome model's), ``steps`` a non-empty
    list of non-empty strings (BadInput otherwise)."""
    if not isinstance(row, dict):
        raise BadInput(**where, expected="a JSON object {prompt, steps}", got=json_type(row))
    if "prompt" not in row:
        raise BadInput(**where, field="prompt", expected=PROMPT_EXPECTED, got="nothing (missing)")
    check_prompt(row["prompt"], where)
    steps = row.get("steps")
    if not isinstance(steps, list) or not steps:
        got = json_type(steps) if "steps" in row else "nothing (missing)" + (
            "; the row has 'response', which an outcome reward model reads, and this is a process reward model"
            if "response" in row else "")
        got = "an empty array" if isinstance(steps, list) else got
        raise BadInput(**where, field="steps", expected="a non-empty list of step strings", got=got)
    for k, step in enumerate(steps):
        if not isinstance(step, str) or not step.strip():
            raise BadInput(**where, field=f"steps[{k}]", expected="a non-empty string",
                           got=json_type(step) if not isinstance(step, str) else "an empty string")
        check_text(step, where, f"steps[{k}]")


def step_scored_rows(model_dir: Path | str, model: RewardModel, tokenizer: Any, rows: list[dict], how: str,
                     batch_tokens: int = 16384) -> list[dict]:
    """``rows`` (checked by :func:`check_step_row`) with ``step_scores`` (``p_k``, null for a dropped step) and
    ``reward`` (their aggregate ``how``: :func:`aggregate_steps`) from the process reward ``model`` loaded from
    ``model_dir`` (:data:`STEP_COLUMNS`: the columns added)."""
    scores = score_steps(model, tokenizer, prompt_texts([r["prompt"] for r in rows]), [r["steps"] for r in rows],
                         batch_tokens)
    rewards = aggregate_steps(scores, how)
    if any(np.isinf(s).any() for s in scores):
        raise NonFiniteError(model_dir, detail="a step score is infinite; expected probabilities")
    return [{**row, **json_safe({"step_scores": s.tolist(), "reward": float(reward)})}  # unscored (NaN) → null
            for row, s, reward in zip(rows, scores, rewards, strict=True)]
