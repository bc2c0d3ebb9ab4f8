"""Tokenise every response of a pairs directory once, with HF ``datasets`` caching.

One row per response: ``(prompt, response) -> input_ids, token_type_ids, length`` and the
truncation flags of :class:`rewardline.modeling.formatting.Formatter`. ``Dataset.map`` runs in
batches and writes its result to ``<cache_dir>/<fingerprint>.arrow``; the fingerprint is a
SHA-256 of the input files' bytes, the tokenizer (vocabulary, merges, special tokens, chat
template), the format config and ``FORMAT_VERSION``, so a repeated run with the same
inputs loads the Arrow file instead of re-tokenising.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa

from rewardline.data.tables import content_digest, read_table, table_path
from rewardline.modeling.formatting import FormatConfig, Formatter

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$REWARDLINE_CACHE/tokenized`` or ``~/.cache/rewardline/tokenized``."""
    root = os.environ.get("REWARDLINE_CACHE") or Path.home() / ".cache" / "rewardline"
    return Path(root) / "tokenized"


@dataclass
class TokenizedResponses:
    """Ragged token ids of all responses, addressable by response id."""

    response_ids: list[str]
    offsets: np.ndarray  # int64 [n+1]
    ids: np.ndarray  # int64, all sequences concatenated
    types: np.ndarray  # int64, token type ids, same layout
    lengths: np.ndarray  # int64 [n]
    prompt_truncated: np.ndarray  # bool [n]
    response_truncated: np.ndarray  # bool [n]
    fingerprint: str
    from_cache: bool

    def row_index(self) -> dict[str, int]:
        return {rid: i for i, rid in enumerate(self.response_ids)}

    def sequence(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.ids[lo:hi], self.types[lo:hi]


def tokenizer_digest(tokenizer: Any) -> str:
    """Hash of everything in the tokenizer that changes its output."""
    parts = [
        tokenizer.backend_tokenizer.to_str(),
        str(getattr(tokenizer, "chat_template", None)),
        json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _load_texts(pairs_dir: Path) -> pa.Table:
    """The responses table joined with their prompts, in the responses' order."""
    responses = read_table(table_path(pairs_dir, "responses"), columns=["response_id", "prompt_id", "response"])
    prompts = read_table(table_path(pairs_dir, "prompts"), columns=["prompt_id", "prompt", "prompt_messages"])
    where = {pid: i for i, pid in enumerate(prompts.column("prompt_id").to_pylist())}
    missing = {p for p in responses.column("prompt_id").to_pylist() if p not in where}
    if missing:
        raise ValueError(f"{len(missing)} responses refer to prompts absent from {table_path(pairs_dir, 'prompts')}")
    take = pa.array([where[p] for p in responses.column("prompt_id").to_pylist()], pa.int64())
    return pa.table(
        {
            "response_id": responses.column("response_id"),
            "prompt": prompts.column("prompt").take(take),
            "prompt_messages": prompts.column("prompt_messages").take(take),
            "response": responses.column("response"),
        }
    )


def tokenize_pairs_dir(
    pairs_dir: Path,
    tokenizer: Any,
    fmt: FormatConfig,
    cache_dir: Path | None = None,
    batch_size: int = 512,
) -> TokenizedResponses:
    """Tokenise all responses of ``pairs_dir`` (cached by fingerprint, see module doc)."""
    pairs_dir = Path(pairs_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    formatter = Formatter(tokenizer, fmt)
    key = {
        "version": FORMAT_VERSION,
        "prompts": content_digest(table_path(pairs_dir, "prompts")),
        "responses": content_digest(table_path(pairs_dir, "responses")),
        "tokenizer": tokenizer_digest(tokenizer),
        "format": fmt.to_dict(),
        "template": formatter.template,
    }
    fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    cache_file = cache_dir / f"{fingerprint}.arrow"
    from_cache = cache_file.exists()

    def encode(batch: dict[str, list]) -> dict[str, list]:
        return formatter.encode(batch["prompt"], batch["response"], batch["prompt_messages"])

    texts = datasets.Dataset(_load_texts(pairs_dir))
    progress = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        ds = texts.map(
            encode,
            batched=True,
            batch_size=batch_size,
            remove_columns=["prompt", "prompt_messages", "response"],
            cache_file_name=str(cache_file),
            load_from_cache_file=True,
            new_fingerprint=fingerprint,
        )
    finally:
        if progress:
            datasets.enable_progress_bars()
    table = ds.data.table if hasattr(ds.data, "table") else ds.data
    ids_col = table.column("input_ids").combine_chunks()
    types_col = table.column("token_type_ids").combine_chunks()
    offsets = ids_col.offsets.to_numpy().astype(np.int64)
    return TokenizedResponses(
        response_ids=table.column("response_id").to_pylist(),
        offsets=offsets - offsets[0],
        ids=ids_col.flatten().to_numpy().astype(np.int64),
        types=types_col.flatten().to_numpy().astype(np.int64),
        lengths=table.column("length").to_numpy().astype(np.int64),
        prompt_truncated=table.column("prompt_truncated").to_numpy(zero_copy_only=False).astype(bool),
        response_truncated=table.column("response_truncated").to_numpy(zero_copy_only=False).astype(bool),
        fingerprint=fingerprint,
        from_cache=from_cache,
    )
