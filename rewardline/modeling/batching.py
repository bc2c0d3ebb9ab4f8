"""Length-sorted batches of encoded rows under a padded-token budget (scoring: rewards, step scores, prefixes)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def length_batches(lengths: np.ndarray, batch_tokens: int) -> Iterator[np.ndarray]:
    """Row indices in batches of at most ``batch_tokens`` padded tokens: rows sorted longest first (stable), each
    batch ``n = max(1, batch_tokens // L)`` rows, where ``L`` is its first (longest) row's length, its padded width."""
    order = np.argsort(-lengths, kind="stable")
    i = 0
    while i < len(order):
        n = max(1, batch_tokens // max(int(lengths[order[i]]), 1))
        yield order[i : i + n]
        i += n
