"""Export a pairs directory with its texts, as TRL's standard explicit-prompt preference dataset.

A pairs directory (:mod:`rewardline.pairs.expand`) holds the splits ``train`` / ``val`` / ``test`` with
response *ids* plus the ``prompts`` / ``responses`` tables with the texts. Each pair becomes one row::

    {"prompt": str, "chosen": str, "rejected": str[, "margin": float][, "category": str], "prompt_id": str}

chosen = the majority's choice (``response_a`` when p = label > 1/2, else ``response_b``); pairs
whose label is a tie (|p − 1/2| ≤ 1e-6, only with ``pairs.ties: half``) have no chosen side and
are left out (counted). The prompt is its rendered text (multi-turn prompts: the
``\\n\\nHuman: ... \\n\\nAssistant:`` transcript, which the ``trl`` adapter reads back into turns).
``margin`` is written when any pair has a non-zero margin (TRL's RewardTrainer adds it to the
logit; ``ingest --format trl`` reads it back as the chosen response's score). ``category`` is written
when any pair has one (TRL's trainers ignore the column; ``ingest --format trl`` reads it back, so evaluate's
accuracy by category survives the round trip). The soft label and vote count are not part of TRL's format and
are not written. ``prompt_id`` names the prompt (TRL's trainers ignore it; ``ingest --format trl`` reads it back,
so a prompt keeps its id, and the pairs stage, which splits by a hash of the id, its split).

Outputs per split in ``out_dir``: ``<split>.jsonl`` and/or ``<split>.parquet``, and with ``hf`` a
Hugging Face ``datasets.DatasetDict`` saved with ``save_to_disk`` in ``out_dir/hf``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rewardline.data import schema
from rewardline.data.tables import read_table, stage_kind, table_path, write_json
from rewardline.ops.atomic import writes_output

EXPORT_FORMATS = ("trl",)
FileFormat = Literal["jsonl", "parquet", "both"]
TIE_TOL = 1e-6


def _texts(ids: pa.Array, table: pa.Table, id_col: str, text_col: str, where: Path) -> pa.Array:
    """The ``text_col`` of the rows of ``table`` whose ``id_col`` is each of ``ids``."""
    index = pc.index_in(ids, value_set=table[id_col].combine_chunks())
    if index.null_count:
        raise ValueError(f"{where}: {index.null_count} {id_col}s of the pairs are missing from it")
    return table[text_col].combine_chunks().take(index)


def trl_rows(pairs: pa.Table, prompts: pa.Table, responses: pa.Table, pairs_dir: Path) -> tuple[pa.Table, int]:
    """(TRL standard explicit rows {prompt, chosen, rejected, margin, category, prompt_id}, number of tied pairs
    left out)."""
    label = np.asarray(pairs["label"].to_numpy(zero_copy_only=False), np.float64)
    decided = np.abs(label - 0.5) > TIE_TOL
    pairs = pairs.filter(pa.array(decided))
    a_wins = pa.array(label[decided] > 0.5)
    ids_a, ids_b = pairs["response_a_id"].combine_chunks(), pairs["response_b_id"].combine_chunks()
    chosen_ids, rejected_ids = pc.if_else(a_wins, ids_a, ids_b), pc.if_else(a_wins, ids_b, ids_a)
    responses_file = table_path(pairs_dir, "responses")
    rows = pa.table(
        {
            "prompt": _texts(pairs["prompt_id"].combine_chunks(), prompts, "prompt_id", "prompt",
                             table_path(pairs_dir, "prompts")),
            "chosen": _texts(chosen_ids, responses, "response_id", "response", responses_file),
            "rejected": _texts(rejected_ids, responses, "response_id", "response", responses_file),
            "margin": pairs["margin"].combine_chunks().cast(pa.float64()),
            "category": pairs["category"].combine_chunks(),
            "prompt_id": pairs["prompt_id"].combine_chunks(),
        }
    )
    return rows, int((~decided).sum())


def _write_jsonl(table: pa.Table, path: Path, batch_rows: int = 8192) -> None:
    """``table`` as JSON lines, ``batch_rows`` rows at a time (Python objects for one batch, not the table)."""
    with path.open("wb") as out:
        for batch in table.to_batches(max_chunksize=batch_rows):
            out.write(b"".join(orjson.dumps(row) + b"\n" for row in batch.to_pylist()))


# locked; written to a staging folder, published whole (nothing else in out_dir is kept); an --out holding the input
# is refused
@writes_output("out_dir", inputs=lambda args: [args["pairs_dir"]])
def export_pairs(pairs_dir: Path, out_dir: Path, fmt: str = "trl", files: FileFormat = "both",
                 hf: bool = False) -> dict:
    """Write every split of ``pairs_dir`` as TRL rows with texts; return counts and the files written."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format {fmt!r} is not supported; expected one of {EXPORT_FORMATS}")
    if files not in ("jsonl", "parquet", "both"):
        raise ValueError(f"--files {files!r}: expected jsonl, parquet or both")
    present = [s for s in schema.SPLITS if table_path(pairs_dir, s).exists()]
    if not present:
        names = ", ".join(f"{s}/" for s in schema.SPLITS)
        found = stage_kind(pairs_dir)
        raise FileNotFoundError(f"{pairs_dir}: none of {names}: not a pairs directory"
                                f"{f'; it is {found}' if found else ''}")
    splits = {s: read_table(table_path(pairs_dir, s)) for s in present}
    prompts = read_table(table_path(pairs_dir, "prompts"))
    responses = read_table(table_path(pairs_dir, "responses"))
    exported = {s: trl_rows(t, prompts, responses, pairs_dir) for s, t in splits.items()}
    with_margin = any(pc.any(pc.not_equal(rows["margin"], 0.0)).as_py() for rows, _ in exported.values())
    with_category = any(rows["category"].null_count < rows.num_rows for rows, _ in exported.values())
    dropped = [name for name, kept in (("margin", with_margin), ("category", with_category)) if not kept]
    metrics: dict = {"format": fmt, "margin_column": with_margin, "category_column": with_category, "rows": {},
                     "ties_left_out": {}, "files": []}
    tables = {}
    for split, (rows, ties) in exported.items():
        table = rows.drop_columns(dropped)
        tables[split] = table
        metrics["rows"][split], metrics["ties_left_out"][split] = table.num_rows, ties
        if files in ("jsonl", "both"):
            _write_jsonl(table, out_dir / f"{split}.jsonl")
            metrics["files"].append(f"{split}.jsonl")
        if files in ("parquet", "both"):
            pq.write_table(table, out_dir / f"{split}.parquet")
            metrics["files"].append(f"{split}.parquet")
    if hf:
        from datasets import Dataset, DatasetDict  # only when asked for: a heavy import

        DatasetDict({s: Dataset(t) for s, t in tables.items()}).save_to_disk(str(out_dir / "hf"))
        metrics["files"].append("hf/")
    write_json(metrics, out_dir / "metrics.json")
    return metrics
