"""``rewardline export``: a reward model as a standard transformers directory with a model card.

The output loads with ``AutoModelForSequenceClassification.from_pretrained(out)`` (``num_labels=1``;
:mod:`rewardline.modeling.hf_format`), a process reward model with ``AutoModelForTokenClassification`` (labels
``incorrect``, ``correct``: P(step correct) at each step separator): ``config.json`` (with the
``rewardline`` object: logit normalisation and temperature), ``model.safetensors``, the tokenizer,
``reward_config.json`` (so it is a rewardline model directory too) and ``README.md``, a model card with YAML
front matter.

Calibration (``T``, ``reward_mean``, ``reward_std``) comes from the evaluate stage's
``calibration.json``: the one in the model directory (a registry bundle) or beside ``metrics``.
Metrics and gates come from ``metrics`` (an evaluate ``metrics.json`` or its directory) or the
bundle's ``evaluate_metrics.json``; the data section from ``train_metrics`` (the train stage's
``models/reward-model/metrics.json``) or the model directory's ``train_metrics.json`` / ``metrics.json``.

``out`` is replaced whole, as every stage's ``--out`` (:func:`rewardline.ops.atomic.staged_output`: written in a
staging folder beside it, swapped into place under its lock), so files of an earlier export or of anything else
there (a stale weights shard, notes) never ride along into the exported model; an ``out`` that is or holds
the model directory or a metrics file is refused first (exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rewardline.data.tables import read_json
from rewardline.errors import BadInput, json_type
from rewardline.gates import GateReport
from rewardline.modeling.formatting import resolve_template
from rewardline.modeling.hf_format import TOKEN_LAYOUT
from rewardline.modeling.model import MODEL_POOLING, RewardModel
from rewardline.ops.atomic import check_output_dir, refuse_holding_inputs, staged_output
from rewardline.report import fmt

CARD_METRICS = ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "agreement_aware_accuracy", "n_pairs",
                "n_prompts", "ece_raw", "ece_calibrated", "brier", "nll", "length_spearman", "longer_wins_accuracy",
                "champion_accuracy")
CARD_TRAINING = ("objective", "n_sequences", "train_sequences", "n_prompt_truncated", "n_response_truncated",
                 "train_seconds", "git_commit", "pairs_fingerprint")


def _read_object(path: Path | None, flag: str) -> dict[str, Any]:
    """The JSON object in ``path``, a file the user named with ``flag`` (``{}`` when None); a file that is missing,
    not JSON or holds no object is :class:`BadInput` naming it."""
    if path is None:
        return {}
    expected = f"{flag}: a metrics.json (a JSON object)"
    if not path.is_file():
        raise BadInput(path, detail=f"no such file; expected {expected}")
    try:
        value = read_json(path)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise BadInput(path, detail=f"not valid JSON ({err}); expected {expected}") from None
    if not isinstance(value, dict):
        raise BadInput(path, expected=expected, got=json_type(value))
    return value


def find_metadata(model_dir: Path, metrics: Path | None, train_metrics: Path | None) -> dict[str, dict[str, Any]]:
    """``{evaluate, calibration, train}`` dicts ({} when not found) for the card and ``config.json``."""
    metrics_file = metrics / "metrics.json" if metrics is not None and metrics.is_dir() else metrics
    if metrics is not None and not (metrics_file and metrics_file.is_file()):
        raise FileNotFoundError(f"--metrics {metrics}: no evaluate metrics.json there")
    evaluate = _read_object(metrics_file, "--metrics") or read_json(model_dir / "evaluate_metrics.json")
    calibration = read_json(model_dir / "calibration.json")
    if metrics_file is not None and not calibration:
        calibration = read_json(metrics_file.parent / "calibration.json")
    calibration = calibration or {k: evaluate[k] for k in ("temperature", "reward_mean", "reward_std") if k in evaluate}
    train = (_read_object(train_metrics, "--train-metrics") or read_json(model_dir / "train_metrics.json")
             or read_json(model_dir / "metrics.json"))  # the train stage's full metrics, saved with the model
    return {"evaluate": evaluate, "calibration": calibration, "train": train}


def export_model(model_dir: Path | str, out_dir: Path | str, metrics: Path | None = None,
                 train_metrics: Path | None = None, push_to_hub: str | None = None) -> dict[str, Any]:
    """Write the standard directory + model card of ``model_dir`` (any layout :meth:`RewardModel.load`
    reads) to ``out_dir``; upload it to the Hub repo ``push_to_hub`` when given. Returns a summary."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    refuse_holding_inputs(out_dir, [p for p in (model_dir, metrics, train_metrics) if p is not None and p.exists()])
    check_output_dir(out_dir)
    meta = find_metadata(model_dir, metrics, train_metrics)
    model, tokenizer = RewardModel.load(model_dir)
    calibration = meta["calibration"]
    for key in ("reward_mean", "reward_std"):
        if calibration.get(key) is not None:
            setattr(model.config, key, float(calibration[key]))
    temperature = calibration.get("temperature")
    with staged_output(out_dir) as staging:  # locked; out_dir is replaced whole, nothing else in it is kept
        model.save(staging, tokenizer, float(temperature) if temperature is not None else None,
                   require_standard=True)
        hf_config = json.loads((staging / "config.json").read_text())
        section = hf_config["rewardline"]
        architecture = (hf_config.get("architectures") or ["?"])[0]
        if section["layout"] == TOKEN_LAYOUT:
            card = process_model_card(section, meta, architecture)
        else:  # the card's snippet lays the inputs out as the Formatter does for this tokenizer
            template = resolve_template(tokenizer, (section.get("format") or {}).get("template", "auto"))
            card = model_card(section, meta, architecture, template)
        (staging / "README.md").write_text(card)
    summary: dict[str, Any] = {"out_dir": str(out_dir), "layout": section["layout"], "temperature": temperature,
                               "reward_mean": section["reward_mean"], "reward_std": section["reward_std"],
                               "has_metrics": bool(meta["evaluate"]), "pushed_to": None}
    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(push_to_hub, exist_ok=True)
        api.upload_folder(repo_id=push_to_hub, folder_path=str(out_dir), commit_message="rewardline export")
        summary["pushed_to"] = push_to_hub
    return summary


def _gates_table(evaluate: dict[str, Any]) -> list[str]:
    if not evaluate.get("gates"):
        return ["No gate results were given (pass `--metrics reports/evaluate` or export a registry bundle)."]
    return [GateReport.from_dict(evaluate, stage="evaluate").to_markdown().rstrip()]


def _data_lines(train: dict[str, Any], train_metrics: str) -> list[str]:
    """The card's data table (the train stage's :data:`CARD_TRAINING` fields), or where to get them."""
    rows = [f"| {k} | {fmt(train[k])} |" for k in CARD_TRAINING if k in train]
    if not rows:
        return [f"No training metadata was given (pass `--train-metrics {train_metrics}`)."]
    return ["| field | value |", "|---|---|", *rows]


def _batch_line(section: dict[str, Any], template: str) -> str:
    """How the card's example tokenises: the encoder pair layout (``template`` ``pair``: a tokenizer with a separator,
    whatever the pooling, a model trained elsewhere's ``model`` too), else prompt + separator + response + EOS (for a
    chat template, render the conversation with ``apply_chat_template`` instead)."""
    if template == "pair":
        return "batch = tokenizer(prompts, responses, padding=True, truncation=True, return_tensors='pt')"
    separator = json.dumps((section.get("format") or {}).get("text_separator", "\n\n"))
    return (f"batch = tokenizer([p + {separator} + r + tokenizer.eos_token for p, r in zip(prompts, responses)], "
            "padding=True, return_tensors='pt')")


def model_card(section: dict[str, Any], meta: dict[str, dict[str, Any]], architecture: str,
               template: str = "text") -> str:
    """README.md: YAML front matter, then data, metrics and gates, calibration, intended use, how to load (inputs laid
    out by the resolved ``template``: :func:`rewardline.modeling.formatting.resolve_template`)."""
    evaluate, train = meta["evaluate"], meta["train"]
    temperature = section.get("temperature")
    t_text = fmt(temperature) if temperature is not None else "not fitted (1.0 until the evaluate stage runs)"
    metric_rows = [f"| {k} | {fmt(evaluate[k])} |" for k in CARD_METRICS if k in evaluate]
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-classification",
        "tags:", "- reward-model", "- rewardline", "---", "",
        "# Reward model", "",
        f"A `{architecture}` with one output: the logit is a scalar reward for a (prompt, response) pair, "
        + ("trained elsewhere and exported by rewardline (its own pooling and head; "
           if section.get("pooling") == MODEL_POOLING else
           "trained by rewardline on annotator rankings with a Bradley-Terry objective (")
        + f"backbone `{section.get('backbone')}`, pooling `{section.get('pooling')}`).", "",
        "## Data", "",
        *_data_lines(train, "models/reward-model/metrics.json"), "",
        f"Input format: `{json.dumps(section.get('format'))}`: rewardline's `Formatter` turns (prompt, response) "
        "into one sequence (the tokenizer's chat template, the encoder pair layout `[CLS] prompt [SEP] response "
        "[SEP]`, or `prompt + separator + response + EOS`); score inputs formatted the same way.", "",
        "## Metrics and gates", "",
        *(["Held-out (test split) metrics:", "", "| metric | value |", "|---|---|", *metric_rows, ""]
          if metric_rows else []),
        *_gates_table(evaluate), "",
        "## Calibration", "",
        f"- temperature T = {t_text}",
        f"- reward_mean = {fmt(section.get('reward_mean'))} (mean logit on held-out responses)",
        f"- reward_std = {fmt(section.get('reward_std'))}", "",
        "The same numbers are in `config.json` under `rewardline`. Normalised reward: `logit - reward_mean` "
        "(a shift: differences are unchanged). Win probability of response a over b for the same prompt: "
        "`P(a > b) = sigmoid((logit_a - logit_b) / T)`.", "",
        "## Intended use", "",
        "Ranking and scoring responses to prompts like those of the training data: best-of-N selection, "
        "RLHF (PPO / RLOO / GRPO reward), evaluation. The reward is relative: compare responses to the same "
        "prompt; absolute values and scores far outside the training distribution carry no guarantee, and an "
        "optimiser pushed hard against it will find its blind spots (reward hacking).", "",
        "## How to load", "",
        "```python",
        "import torch",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        "model = AutoModelForSequenceClassification.from_pretrained(MODEL)  # num_labels=1",
        "tokenizer = AutoTokenizer.from_pretrained(MODEL)",
        "cal = model.config.rewardline  # reward_mean, reward_std, temperature",
        _batch_line(section, template),
        "with torch.no_grad():",
        "    logits = model(**batch).logits[:, 0]",
        "rewards = logits - cal['reward_mean']",
        "p_a_wins = torch.sigmoid((rewards[0] - rewards[1]) / (cal['temperature'] or 1.0))",
        "```", "",
        "With rewardline: `rewardline score --model MODEL --input rows.jsonl --out scored.jsonl`.", "",
    ]
    return "\n".join(lines)


def process_model_card(section: dict[str, Any], meta: dict[str, dict[str, Any]], architecture: str) -> str:
    """README.md of a process reward model: what it scores, its training data and gates, how to load it."""
    train, evaluate = meta["train"], meta["evaluate"]
    separator = section.get("step_separator")
    lines = [
        "---", "library_name: transformers", "pipeline_tag: token-classification",
        "tags:", "- process-reward-model", "- reward-model", "- rewardline", "---", "",
        "# Process reward model", "",
        f"A `{architecture}` with two labels, `0: incorrect` and `1: correct` (TRL's PRM convention), trained by "
        f"rewardline (backbone `{section.get('backbone')}`). A solution is the prompt followed by its steps, each "
        f"closed by the step separator `{separator}`; `softmax(logits)[1]` at a separator is P(that step is "
        "correct). Aggregate the steps' probabilities (min, product, last or mean) to score a whole solution.", "",
        "## Data", "",
        *_data_lines(train, "models/process-reward-model/metrics.json"), "",
        "## Metrics and gates", "",
        *_gates_table(evaluate), "",
        "## Intended use", "",
        "Verifying step-by-step solutions like those of the training data (best-of-N selection, pruning a chain "
        "at its first bad step, per-step credit). Scores on problems far from the training distribution carry no "
        "guarantee.", "",
        "## How to load", "",
        "```python",
        "import torch",
        "from transformers import AutoModelForTokenClassification, AutoTokenizer",
        "",
        "model = AutoModelForTokenClassification.from_pretrained(MODEL)  # 0: incorrect, 1: correct",
        "tokenizer = AutoTokenizer.from_pretrained(MODEL)",
        "sep = tokenizer.convert_tokens_to_ids(model.config.rewardline['step_separator'])",
        "prompt, steps = 'What is 3 + 4, times 2?', ['3 + 4 = 7', '7 * 2 = 14', 'The answer is 14']",
        "ids = lambda text: tokenizer(text, add_special_tokens=False)['input_ids']",
        "body = [t for step in steps for t in ids(step) + [sep]]",
        "head = [tokenizer.cls_token_id, *ids(prompt), tokenizer.sep_token_id]  # encoder pair layout",
        "input_ids = torch.tensor([head + body + [tokenizer.sep_token_id]])",
        "token_type_ids = torch.tensor([[0] * len(head) + [1] * (len(body) + 1)])",
        "with torch.no_grad():",
        "    logits = model(input_ids=input_ids, token_type_ids=token_type_ids).logits[0]",
        "p_correct = logits.softmax(-1)[input_ids[0] == sep, 1]  # one per step",
        "```", "",
        "Decoders: `prompt + \"\\n\\n\"` tokenised with the tokenizer's special tokens, then the same `body`, "
        "then EOS (no token types). With rewardline: `rewardline score --model MODEL --input rows.jsonl --out "
        "scored.jsonl` on rows `{prompt, steps}`.", "",
    ]
    return "\n".join(lines)
