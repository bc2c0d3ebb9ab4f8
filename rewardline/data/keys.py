"""Integer codes for (combinations of) key columns: the grouping primitive of the data stages."""

from __future__ import annotations

import contextlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEP = "\x1f"  # unit separator: joins key parts that may contain any printable text


def key_codes(*columns: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Integer code per row for the combination of ``columns`` (equal keys ↔ equal codes)."""
    keys = columns[0] if len(columns) == 1 else pc.binary_join_element_wise(*columns, SEP)
    if isinstance(keys, pa.ChunkedArray) and keys.num_chunks > 1:
        # one array when the offsets allow: unifying per-chunk dictionaries is slow with many chunks (a spilled
        # bucket has hundreds: 78 s for 14 calls on 1.2M rows), and the codes are the same (first appearance)
        with contextlib.suppress(pa.ArrowInvalid):  # over 2 GiB of key text in 32-bit offsets: stay chunked
            keys = keys.combine_chunks()
    encoded = pc.fill_null(keys, "\x00null").dictionary_encode()
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.unify_dictionaries() if encoded.num_chunks > 1 else encoded
        indices = [c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks]
        return np.concatenate(indices).astype(np.int64) if indices else np.zeros(0, np.int64)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def appearance_codes(values: np.ndarray) -> np.ndarray:
    """Integer code per element of ``values`` (equal values ↔ equal codes), numbered in order of first
    appearance, as :func:`key_codes` numbers its keys."""
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.reshape(-1)]


def record_codes(files: pa.ChunkedArray | pa.Array, lines: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """``key_codes(files, lines as text)`` without the joined strings: file code × (largest line + 1) + line
    is unique per (file, line); a row with a null file or line gets the one null key, as the null joined
    text does there. Numbered by first appearance."""
    if len(lines) == 0:
        return np.zeros(0, np.int64)
    file_code = key_codes(files)
    line = np.asarray(pc.fill_null(lines, 0), dtype=np.int64)
    width = int(line.max()) + 1
    if line.min() < 0 or width * (int(file_code.max()) + 1) >= 2**62:  # not representable: join as text
        return key_codes(files, pc.cast(lines, pa.string()))
    combined = file_code * width + line
    combined[np.asarray(pc.or_(pc.is_null(files), pc.is_null(lines)), dtype=bool)] = -1
    return appearance_codes(combined)
