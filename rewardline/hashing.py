"""Stable, vectorised string hashing for ids and splits.

FNV-1a 64-bit over the UTF-8 bytes of each string::

    h_0 = 0xcbf29ce484222325;  h_{i+1} = (h_i XOR byte_i) * 0x100000001b3  (mod 2^64)

followed by MurmurHash3's 64-bit finaliser (``fmix64``: xor-shift / multiply rounds),
which spreads every input bit over the high bits (plain FNV-1a leaves the high bits of
similar short strings such as ``prompt-1``, ``prompt-2`` correlated, which skews splits).
It is fixed by definition (unlike Python's salted ``hash``), so a prompt keeps its
id and its split across runs, machines and library versions. The loop runs over
byte *positions* (bounded by the longest string), never over rows: every step is
one NumPy operation over all strings at once.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


def fnv1a64(strings: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
    """FNV-1a 64 + fmix64 hash of each string (nulls hash as the empty string)."""
    if isinstance(strings, list):
        strings = pa.array(strings, type=pa.string())
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks() if strings.num_chunks else pa.array([], pa.string())
    strings = pc.fill_null(strings.cast(pa.large_string()), "")
    n = len(strings)
    hashes = np.full(n, FNV_OFFSET, dtype=np.uint64)
    if n == 0:
        return hashes
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[
        strings.offset : strings.offset + n + 1
    ]
    data = np.frombuffer(strings.buffers()[2], dtype=np.uint8) if strings.buffers()[2] else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    # Process strings in order of decreasing length so that at byte position i the
    # strings still "alive" are a prefix of the order: no masks, just slices.
    order = np.argsort(-lengths, kind="stable")
    sorted_starts, sorted_lengths = starts[order], lengths[order]
    h = hashes[order]
    max_len = int(sorted_lengths[0]) if n else 0
    # alive[i] = number of strings longer than i
    alive = np.searchsorted(-sorted_lengths, -np.arange(1, max_len + 1), side="right")
    with np.errstate(over="ignore"):
        for i in range(max_len):
            k = int(alive[i])
            h[:k] = (h[:k] ^ data[sorted_starts[:k] + i].astype(np.uint64)) * FNV_PRIME
    hashes[order] = h
    return fmix64(hashes)


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 finaliser: h ^= h >> 33; h *= C1; h ^= h >> 33; h *= C2; h ^= h >> 33 (mod 2^64)."""
    h = h.copy()
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
    return h


def hex_ids(strings: pa.Array | pa.ChunkedArray | list[str], prefix: str = "") -> pa.Array:
    """16-hex-digit ids ``prefix + fnv1a64(s)`` for each string."""
    hashes = fnv1a64(strings)
    digits = np.char.zfill(np.char.mod("%x", hashes), 16) if len(hashes) else np.array([], dtype=str)
    out = pa.array(digits.astype(object) if len(hashes) else [], type=pa.string())
    return pc.binary_join_element_wise(prefix, out, "") if prefix else out


def unit_interval(strings: pa.Array | pa.ChunkedArray | list[str], salt: str = "") -> np.ndarray:
    """Map each string to a deterministic float in [0, 1): top 53 bits of fnv1a64(salt + s)."""
    arr = pa.array(strings, type=pa.string()) if isinstance(strings, list) else strings
    if salt:
        arr = pc.binary_join_element_wise(salt, arr, "")
    return (fnv1a64(arr) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
