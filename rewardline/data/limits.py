"""Size bounds on input records: one raw record, a prompt, a response.

The defaults are generous (a real preference record is a few kB; hh-rlhf's longest transcript is
~40k characters) and exist so that one pathological record cannot exhaust memory or stall the
tokenizer. Over a bound:

* ``ingest`` quarantines the record with a reason naming the field and the bound
  (``rows_in = rows_ok + rows_quarantined`` still holds);
* ``rewardline score`` stops at the first such row with exit 2 (:class:`~rewardline.errors.TooLarge`,
  naming file, line, field and bound);
* a server answers 413: it catches :class:`~rewardline.errors.TooLarge` from :meth:`Limits.check_row`
  and bounds the request body itself with :meth:`Limits.max_request_bytes` (``max_rows`` records).

Where each bound is checked (before the expensive step where possible):

=====================  ===========================================================================
``max_record_bytes``   raw bytes of one record *before* JSON parsing: a JSONL line (cut out like a
                       non-UTF-8 line, never shown to Arrow or orjson), a JSON-list item as
                       re-serialised JSON, a CSV row's / Parquet row's text fields (summed)
``max_prompt_chars``   characters (Unicode code points) of the prompt text, messages rendered
``max_response_chars`` characters of one response text
=====================  ===========================================================================
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from rewardline.config import Section
from rewardline.errors import TooLarge

#: Defaults (documented in params.yaml and docs/data-contract.md).
MAX_RECORD_BYTES = 1_000_000
MAX_PROMPT_CHARS = 200_000
MAX_RESPONSE_CHARS = 100_000


class Limits(Section):
    """The three size bounds; ``IngestConfig`` carries the same keys under ``ingest.`` (:meth:`of`)."""

    section: ClassVar[str] = "ingest"

    max_record_bytes: int = Field(MAX_RECORD_BYTES, ge=1)
    max_prompt_chars: int = Field(MAX_PROMPT_CHARS, ge=1)
    max_response_chars: int = Field(MAX_RESPONSE_CHARS, ge=1)

    @classmethod
    def of(cls, config: Any) -> Limits:
        """The limits of any config that has the three keys (``IngestConfig``); defaults when absent."""
        return cls(**{name: getattr(config, name) for name in cls.model_fields if hasattr(config, name)})

    def max_request_bytes(self, max_rows: int) -> int:
        """A request body bound for a server taking up to ``max_rows`` records (plus 64 kB of envelope)."""
        return max_rows * self.max_record_bytes + 65_536

    # ---------------------------------------------------------------- messages

    def record_reason(self, size: int) -> str:
        return (f"record too large: {size} bytes; expected at most ingest.max_record_bytes={self.max_record_bytes} "
                "(not parsed)")

    def text_reason(self, field: str, chars: int) -> str:
        limit = self.max_prompt_chars if field == "prompt" else self.max_response_chars
        return f"{field}: too long: {chars} characters; expected at most ingest.max_{field}_chars={limit}"

    # ---------------------------------------------------------------- checks

    def oversized_records(self, sizes: np.ndarray) -> np.ndarray:
        """Mask of records whose raw size in bytes is over ``max_record_bytes``."""
        return np.asarray(sizes) > self.max_record_bytes

    def text_lengths(self, texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Characters of each text (0 for null): ``utf8_length``, no copy of the texts."""
        return np.asarray(pc.fill_null(pc.utf8_length(texts), 0), dtype=np.int64)

    def check_row(self, prompt: str, response: str, *, file: Any = None, line: int | None = None,
                  raw_bytes: int | None = None) -> None:
        """Raise :class:`TooLarge` naming the field and the bound when one row is over a limit
        (``prompt``: the rendered text; ``raw_bytes``: the record's size before parsing, when known)."""
        where = {"file": file, "line": line}
        if raw_bytes is not None and raw_bytes > self.max_record_bytes:
            raise TooLarge(**where, field="record", limit="ingest.max_record_bytes", limit_value=self.max_record_bytes,
                           size=raw_bytes, unit="bytes")
        for field, text, limit in (("prompt", prompt, self.max_prompt_chars),
                                   ("response", response, self.max_response_chars)):
            if len(text) > limit:
                raise TooLarge(**where, field=field, limit=f"ingest.max_{field}_chars", limit_value=limit,
                               size=len(text), unit="characters")
