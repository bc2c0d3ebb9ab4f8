"""The pyfunc model of a registered version; this module's path is the versions' ``loader_module``.

``rewardline.registry.pyfunc`` is written into every registered version's ``MLmodel``: keep the
module at this path (models of earlier releases name ``rewardline.tracking``, which forwards here).
The flavour stores the bundle as the model's ``data/bundle`` and loads it with
:func:`_load_pyfunc`: no pickle. The model ships the ``rewardline`` package as its code
(``code_paths``) with pinned requirements, so ``mlflow models serve`` works with MLflow's default
env manager wherever the requirements can be installed (``--env-manager local`` where the serving
environment already has them).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewardline.data.tables import json_safe, read_json
from rewardline.errors import BadInput

if TYPE_CHECKING:
    import pandas as pd

MODEL_ARTIFACT = "reward_model"  # the pyfunc model's name in its run
BUNDLE = "bundle"  # the model data directory inside the pyfunc model (data/bundle)
LOADER_MODULE = __name__  # "rewardline.registry.pyfunc"


class RewardScorer:
    """What ``mlflow.pyfunc.load_model`` returns inside: a loaded bundle with a DataFrame ``predict``.

    Input columns ``prompt``, ``response`` and optionally ``response_b``; output ``reward``
    (``r − reward_mean``; an absolute-scale model's utility as is) and, for rows with a ``response_b``,
    ``reward_b`` and the calibrated preference probability ``p_prefer = σ((r_a − r_b) / T)`` (missing, ``<NA>``,
    on rows without one: those columns are pandas' nullable ``Float64``, so that ``mlflow models serve`` answers
    ``null`` there; NumPy's NaN would go out as ``NaN``, which is not JSON and which strict parsers refuse). An
    absolute-scale model (``reward_config.link`` set: objectives thurstone, bt+thurstone) also returns
    ``win_prob = Φ(reward/√(1+s²))`` (probit) or ``σ(reward/√(1+πs²/8))`` (logit), ``s`` the model's val
    ``residual_sd``: P(the response beats the prompt's anchor),
    :func:`rewardline.modeling.score.win_probability`.

    A process reward model (``reward_config.step_separator`` set, objective ``prm``) takes columns ``prompt``
    and ``steps`` (a list of step strings per row) and returns ``step_scores`` (P(step correct) per step,
    None for a step beyond ``max_length``) and ``reward`` (``Float64``; ``<NA>`` when no step was scored), their
    aggregate (the model's ``step_aggregate``,
    or ``params={"aggregate": "min" | "prod" | "last" | "mean"}``), :mod:`rewardline.modeling.step_scores`."""

    def __init__(self, bundle_dir: Path | str, device: str = "auto") -> None:
        from rewardline.modeling.device import select_runtime
        from rewardline.modeling.model import RewardModel

        self.bundle_dir = Path(bundle_dir)
        self.device = str(select_runtime(device).device)  # CUDA when available
        self.model, self.tokenizer = RewardModel.load(self.bundle_dir, self.device)
        self.temperature = float(read_json(self.bundle_dir / "calibration.json").get("temperature") or 1.0)
        self.link: str | None = self.model.config.link
        self.residual_sd = float(self.model.config.residual_sd)  # win_prob = Φ(r/√(1+s²))
        self.process = self.model.config.is_process

    def _predict_steps(self, model_input: pd.DataFrame, params: dict[str, Any] | None) -> pd.DataFrame:
        """``step_scores`` and their aggregate ``reward`` for ``{prompt, steps}`` rows (a PRM)."""
        import pandas as pd

        from rewardline.modeling.step_scores import aggregate_steps, check_step_row, prompt_texts, score_steps

        rows = [{"prompt": p, "steps": list(s) if s is not None and not isinstance(s, str) else s}
                for p, s in zip(_prompts(model_input), model_input["steps"], strict=True)]
        for i, row in enumerate(rows):
            check_step_row(row, {"file": f"row {i + 1}"})  # rows from 1, as score counts
        scores = score_steps(self.model, self.tokenizer, prompt_texts([r["prompt"] for r in rows]),
                             [r["steps"] for r in rows], device=self.device)
        how = (params or {}).get("aggregate") or self.model.config.step_aggregate
        return pd.DataFrame({"step_scores": [json_safe(s.tolist()) for s in scores],  # unscored step: None
                             "reward": pd.array(aggregate_steps(scores, how), dtype="Float64")})  # NaN → <NA>

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        if self.process:
            return self._predict_steps(model_input, params)

        from rewardline.evaluation.calibration import preference_probability
        from rewardline.modeling.score import score_texts, win_probability

        prompts = _prompts(model_input)
        _check_rows(model_input, prompts)
        responses = [str(r) for r in model_input["response"]]
        pairwise = "response_b" in model_input.columns
        rows_b = np.flatnonzero(model_input["response_b"].notna().to_numpy()) if pairwise else np.zeros(0, int)
        texts_b = [str(model_input["response_b"].iloc[i]) for i in rows_b]
        rewards = score_texts(self.bundle_dir, prompts + [prompts[i] for i in rows_b], responses + texts_b,
                              device=self.device, model=self.model, tokenizer=self.tokenizer).astype(np.float64)
        out = pd.DataFrame({"reward": rewards[: len(responses)]})
        if self.link is not None:
            out["win_prob"] = win_probability(out["reward"].to_numpy(), self.link, self.residual_sd)
        if pairwise:
            reward_b = np.full(len(responses), np.nan)
            reward_b[rows_b] = rewards[len(responses) :]
            p_prefer = preference_probability(out["reward"].to_numpy(), reward_b, self.temperature)
            out["reward_b"] = pd.array(reward_b, dtype="Float64")  # NaN (no response_b) → <NA>, null in JSON
            out["p_prefer"] = pd.array(p_prefer, dtype="Float64")
        return out


def _prompts(model_input: pd.DataFrame) -> list[Any]:
    """The ``prompt`` column as text or lists of messages: a frame read from Parquet (pyarrow's ``to_pandas``)
    holds a list column's cells as NumPy arrays, which would otherwise be scored as their repr text."""
    return [p.tolist() if hasattr(p, "tolist") and not isinstance(p, str) else p for p in model_input["prompt"]]


def _check_rows(model_input: pd.DataFrame, prompts: list[Any]) -> None:
    """:class:`BadInput` naming the row (counted from 1, as ``rewardline score`` counts) and field for what
    ``rewardline score`` refuses: a null prompt or response (``str(None)`` would be scored as the text "None"), a
    malformed message list in ``prompts`` (an unknown role, no messages), text that is not valid Unicode."""
    import numpy as np

    from rewardline.data.messages import check_prompt, check_text

    for column in ("prompt", "response"):
        nulls = np.flatnonzero(model_input[column].isna().to_numpy())
        if len(nulls):
            raise BadInput(field=column, detail=f"null in row {int(nulls[0]) + 1}; expected a string in every row")
    texts = [c for c in ("response", "response_b") if c in model_input.columns]
    for i, (prompt, *responses) in enumerate(zip(prompts, *(model_input[c] for c in texts),
                                                 strict=True)):
        where = {"file": f"row {i + 1}"}
        check_prompt(prompt, where)
        for column, text in zip(texts, responses, strict=True):
            if isinstance(text, str):
                check_text(text, where, column)


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> RewardScorer:
    """The pyfunc ``loader_module`` entry point: ``data_path`` is the model's ``data/bundle``."""
    return RewardScorer(data_path)


def model_signature(process: bool = False) -> Any:
    """Input ``prompt``, ``response``, optional ``response_b`` (strings); output ``reward``,
    optional ``win_prob`` (absolute-scale models), ``reward_b`` and ``p_prefer`` (doubles). A process
    reward model: input ``prompt`` and ``steps`` (list of strings), output ``reward`` and ``step_scores``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array, ParamSchema, ParamSpec

    if process:
        return ModelSignature(
            inputs=Schema([ColSpec(DataType.string, "prompt"), ColSpec(Array(DataType.string), "steps")]),
            outputs=Schema([ColSpec(DataType.double, "reward"), ColSpec(Array(DataType.double), "step_scores")]),
            params=ParamSchema([ParamSpec("aggregate", DataType.string, "")]))

    inputs = Schema([ColSpec(DataType.string, "prompt"), ColSpec(DataType.string, "response"),
                     ColSpec(DataType.string, "response_b", required=False)])
    outputs = Schema([ColSpec(DataType.double, "reward"), ColSpec(DataType.double, "win_prob", required=False),
                      ColSpec(DataType.double, "reward_b", required=False),
                      ColSpec(DataType.double, "p_prefer", required=False)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(process: bool = False) -> pd.DataFrame:
    import pandas as pd

    if process:
        return pd.DataFrame({"prompt": ["What is 3 plus 4, times 2?"],
                             "steps": [["3 + 4 = 7", "7 * 2 = 14", "The answer is 14"]]})

    return pd.DataFrame({
        "prompt": ["How do I boil an egg?", "Name a prime number."],
        "response": ["Put it in boiling water for about nine minutes, then cool it.", "7"],
        "response_b": ["Eggs are food.", "8"],
    })


# What loading and scoring a bundle imports (checked by tests/registry/test_pyfunc_packaging.py);
# rewardline itself is not a requirement: the model ships its code (``code_paths``).
SERVING_REQUIREMENTS = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "huggingface-hub", "numpy",
                        "pandas", "scipy", "pyarrow", "PyYAML", "fsspec")


def _requirements() -> list[str]:
    """:data:`SERVING_REQUIREMENTS` pinned to the versions installed here (given explicitly: MLflow would
    otherwise load the model in a subprocess to infer them)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in SERVING_REQUIREMENTS:
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"{name}=={version(name).split('+')[0]}")
    return out


def package_dir() -> Path:
    """The ``rewardline`` package directory, shipped inside every model as ``code/rewardline``."""
    import rewardline

    return Path(rewardline.__file__).parent


def log_model_bundle(bundle_dir: Path, loader_module: str = LOADER_MODULE) -> Any:
    """Log ``bundle_dir`` as a pyfunc model into the active run; return MLflow's ``ModelInfo``.

    The model carries the ``rewardline`` package (``code_paths``: MLflow puts ``code/`` first on
    ``sys.path`` when it loads the model) and pinned :data:`SERVING_REQUIREMENTS`, so ``mlflow models
    serve`` with the default (virtualenv) env manager and ``mlflow models build-docker`` need no
    rewardline installation. ``loader_module`` is for compatibility tests only: new models always name
    this module."""
    import mlflow

    from rewardline.modeling.step_scores import is_process_model

    process = is_process_model(bundle_dir)
    return mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT, loader_module=loader_module, data_path=str(bundle_dir),
        signature=model_signature(process), input_example=input_example(process), pip_requirements=_requirements(),
        code_paths=[str(package_dir())],
    )


def bundle_data_dir(model_dir: Path) -> Path:
    """The bundle inside a downloaded pyfunc model directory (its ``MLmodel`` names the data path)."""
    import yaml

    flavor = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["python_function"]
    return model_dir / flavor.get("data", f"data/{BUNDLE}")
