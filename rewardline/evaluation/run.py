"""Stage 5, evaluate: score a trained model's val and test pairs, then metrics and gates.

Each unique response of the val and test splits is scored once (``score_texts``:
batched, length-sorted, inference mode); pairs take their two rewards from those.
Response length is counted in characters. The metrics, plots and gate report come
from :func:`rewardline.evaluation.evaluate.evaluate_scores`; a champion model (a model directory
for now), when given, is scored on the same pairs for the non-inferiority gate.
Absolute calibration uses the anchors of the pairs directory's ``responses`` table (``is_anchor``)
and the model's ``reward_config.json`` ``link``. Outputs in ``out_dir``: ``metrics.json``,
``gates.json``, ``report.md``, ``calibration.json``, ``absolute_calibration.json``, ``plots/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewardline.data.tables import read_table, table_path, table_schema
from rewardline.evaluation.evaluate import EvalConfig, evaluate_scores
from rewardline.ops.atomic import writes_output

REWARD_CONFIG = "reward_config.json"  # rewardline.modeling.model.REWARD_CONFIG, without importing torch


def _prompt_inputs(prompts: pa.Table, prompt_ids: pa.Array) -> list:
    """Per prompt id: its message list when multi-turn, else its text."""
    index = pc.index_in(prompt_ids, value_set=prompts["prompt_id"].combine_chunks())
    texts = prompts["prompt"].combine_chunks().take(index).to_pylist()
    messages = prompts["prompt_messages"].combine_chunks().take(index).to_pylist()
    return [m if m else t for t, m in zip(texts, messages, strict=True)]


def score_pairs(model_dir: Path, pairs_dir: Path, splits: tuple[str, ...], batch_tokens: int = 32768
                ) -> dict[str, tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """For each split: (pairs, reward_a, reward_b, length_a, length_b), each response scored once."""
    from rewardline.modeling.score import score_texts  # torch only when a model is scored

    tables = {s: read_table(table_path(pairs_dir, s)) for s in splits}
    responses = read_table(table_path(pairs_dir, "responses"))
    prompts = read_table(table_path(pairs_dir, "prompts"))
    needed = pa.chunked_array(
        [t[c].combine_chunks() for t in tables.values() for c in ("response_a_id", "response_b_id")],
        type=pa.string(),
    ).unique()
    rows = pc.index_in(needed, value_set=responses["response_id"].combine_chunks())
    if rows.null_count:
        raise ValueError(f"{pairs_dir}: {rows.null_count} response ids of the pairs are missing from its responses")
    chosen = responses.take(rows)
    texts = chosen["response"].to_pylist()
    rewards = score_texts(model_dir, _prompt_inputs(prompts, chosen["prompt_id"].combine_chunks()), texts,
                          batch_tokens=batch_tokens, normalize=False)
    lengths = pc.utf8_length(chosen["response"]).to_numpy(zero_copy_only=False).astype(np.int64)
    out = {}
    for split, table in tables.items():
        a = pc.index_in(table["response_a_id"], value_set=needed).to_numpy(zero_copy_only=False)
        b = pc.index_in(table["response_b_id"], value_set=needed).to_numpy(zero_copy_only=False)
        out[split] = (table, rewards[a], rewards[b], lengths[a], lengths[b])
    return out


@writes_output("out_dir")  # locked; written to a staging folder, published whole
def run_evaluate(model_dir: Path, pairs_dir: Path, out_dir: Path, config: EvalConfig,
                 champion_dir: Path | None = None, champion_missing: str | None = None) -> dict:
    """Score val/test with the model (and the champion), write metrics, plots and the gate report;
    ``champion_missing``: why ``champion_dir`` is None, when the reference looks mistaken (the champion gate's
    reason)."""
    scored = score_pairs(model_dir, pairs_dir, ("val", "test"))
    test, ra, rb, len_a, len_b = scored["test"]
    val, vra, vrb, _, _ = scored["val"]
    champion_a = champion_b = None
    if champion_dir is not None:
        champion = score_pairs(champion_dir, pairs_dir, ("test",))["test"]
        champion_a, champion_b = champion[1], champion[2]
    return evaluate_scores(test, ra, rb, val, vra, vrb, len_a, len_b, config, champion_a, champion_b,
                           out_dir=out_dir, anchor_ids=anchor_ids(pairs_dir), champion_missing=champion_missing,
                           **model_calibration(model_dir))


def anchor_ids(pairs_dir: Path) -> pa.Array:
    """Ids of the responses flagged ``is_anchor`` in the responses table (none when the column is absent)."""
    path = table_path(pairs_dir, "responses")
    if "is_anchor" not in table_schema(path).names:
        return pa.array([], pa.string())
    responses = read_table(path, columns=["response_id", "is_anchor"])
    return responses.filter(pc.fill_null(responses["is_anchor"], False))["response_id"].combine_chunks()


def model_calibration(model_dir: Path) -> dict:
    """The model's ``reward_config.json`` fields that evaluate's absolute calibration needs, read once (without
    importing torch): ``link`` (probit | logit: absolute-scale rewards; None: a BT model), ``residual_sd`` (0 when
    absent) and ``anchored`` (False: utilities centred per prompt). A model trained elsewhere (a
    ``*ForSequenceClassification`` folder or Hub id without the file) is a BT model: no link, nothing anchored."""
    path = Path(model_dir) / REWARD_CONFIG
    config = json.loads(path.read_text()) if path.is_file() else {}
    return {"link": config.get("link"), "residual_sd": float(config.get("residual_sd") or 0.0),
            "anchored": config.get("anchored")}
