"""The ``serve`` section of ``params.yaml``: request limits, dynamic batching, bind address.

The defaults are generous for a reward model on one machine: a request of 16 MiB holds e.g. 256
candidates of 32 000 characters each with room for JSON escaping; anything larger is refused
with 413 before it is parsed. The API key is never a param: it comes from the environment
(``REWARDLINE_API_KEY``) or a file readable by its owner only (``--api-key-file``, mode 0600).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from rewardline.config import Section


class ServeConfig(Section):
    """Limits and batching of ``rewardline serve`` (413 above a size limit, 422 for a malformed body)."""

    section: ClassVar[str] = "serve"

    host: str = "127.0.0.1"  # loopback by default; 0.0.0.0 exposes the server (then set an API key)
    port: int = Field(8000, ge=0, le=65535)  # 0: any free port
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024)  # body size; larger: 413
    max_candidates: int = Field(256, ge=1)  # candidates of one /rerank request; more: 413
    max_rows: int = Field(1024, ge=1)  # rows of one /score request; more: 413
    max_chars: int = Field(32000, ge=1)  # characters of one prompt (all its messages) or response; more: 413
    batch_tokens: int = Field(16384, ge=64)  # token budget of one dynamic batch (and its padded forward passes)
    max_wait_ms: float = Field(2.0, ge=0.0)  # how long the batcher waits for more requests after the first
    max_queue_rows: int = Field(65536, ge=1)  # rows waiting for the model; more: 503 (retry later)
    torch_threads: int = Field(0, ge=0)  # intra-op threads of the forward pass; 0: torch's default (the cores)
