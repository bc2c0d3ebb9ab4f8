"""Stable, vectorised string hashing for ids and splits.

``hash64(s)`` reads each string's UTF-8 bytes as little-endian 64-bit words w_1..w_n
(the last one zero-padded) and folds them::

    h_0 = 0x9E3779B97F4A7C15;   h_i = m(h_{i-1} XOR w_i),   m(x) = (x * 0xFF51AFD7ED558CCD) XOR ((...) >> 32)
    hash64(s) = fmix64(h_n XOR len(s))                          (all mod 2^64)

with MurmurHash3's 64-bit finaliser ``fmix64`` (xor-shift / multiply rounds), which
spreads every input bit over the high bits, so similar short strings such as
``prompt-1``, ``prompt-2`` land far apart. It is fixed by definition (unlike Python's
salted ``hash``), so a prompt keeps its id and its split across runs, machines and
library versions.

Vectorised: the loop runs over word positions (bounded by the longest string / 8), in
8 groups by the string's byte alignment so each step is one 8-byte gather over all
strings at once; strings are processed in chunks to bound memory.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEED = np.uint64(0x9E3779B97F4A7C15)
MULT = np.uint64(0xFF51AFD7ED558CCD)
CHUNK_BYTES = 64 << 20
_TAIL_MASKS = np.array([(1 << (8 * r)) - 1 for r in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


def _as_strings(strings: pa.Array | pa.ChunkedArray | list[str]) -> pa.Array:
    if isinstance(strings, list):
        strings = pa.array(strings, type=pa.string())
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks() if strings.num_chunks else pa.array([], pa.string())
    if pa.types.is_dictionary(strings.type):
        strings = strings.cast(strings.type.value_type)
    return pc.fill_null(strings, "")


def hash64(strings: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
    """The 64-bit hash above of each string (nulls hash as the empty string)."""
    arr = _as_strings(strings)
    n = len(arr)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    offset_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=offset_type)[arr.offset : arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] else np.zeros(0, np.uint8)
    # Chunk boundaries so that each chunk holds about CHUNK_BYTES of text.
    bounds = np.unique(np.r_[np.searchsorted(offsets, np.arange(offsets[0], offsets[-1], CHUNK_BYTES)), n])
    lo = 0
    for hi in bounds:
        if hi > lo:
            out[lo:hi] = _hash_chunk(data, offsets[lo : hi + 1])
            lo = hi
    return out


def _hash_chunk(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    base, end = int(offsets[0]), int(offsets[-1])
    buffer = np.zeros(end - base + 24, dtype=np.uint8)
    buffer[: end - base] = data[base:end]
    starts, lengths = offsets[:-1] - base, np.diff(offsets)
    views = [buffer[a : a + 8 * ((buffer.size - a) // 8)].view("<u8") for a in range(8)]
    h = np.full(starts.size, SEED, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for align in range(8):
            group = np.flatnonzero(starts % 8 == align)
            if group.size == 0:
                continue
            group = group[np.argsort(-lengths[group], kind="stable")]  # longest first: live strings = a prefix
            g_starts, g_lengths = starts[group], lengths[group]
            g_h = h[group]
            n_words = (g_lengths + 7) // 8
            for i in range(int(n_words[0]) if group.size else 0):
                live = int(np.searchsorted(-n_words, -i, side="left"))  # strings with more than i words
                words = views[align][(g_starts[:live] + 8 * i - align) // 8]
                words &= _TAIL_MASKS[np.minimum(g_lengths[:live] - 8 * i, 8)]
                x = (g_h[:live] ^ words) * MULT
                g_h[:live] = x ^ (x >> np.uint64(32))
            h[group] = g_h
    return fmix64(h ^ lengths.astype(np.uint64))


def combine(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Order-dependent combination of two hash arrays: fmix64(first * MULT XOR second)."""
    with np.errstate(over="ignore"):
        return fmix64(first * MULT ^ second)


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
    """Ids ``prefix + 16 hex digits of hash64(s)`` for each string."""
    return hex_from_hashes(hash64(strings), prefix)


def hex_from_hashes(hashes: np.ndarray, prefix: str = "") -> pa.Array:
    """``prefix`` + the 16 lower-case hex digits of each hash, built as one Arrow buffer."""
    n = hashes.size
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nibbles = ((hashes[:, None] >> shifts[None, :]) & np.uint64(0xF)).astype(np.uint8)
    chars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
    offsets = np.arange(0, 16 * n + 1, 16, dtype=np.int32)
    out = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes())])
    return pc.binary_join_element_wise(prefix, out, "") if prefix else out


def unit_interval(strings: pa.Array | pa.ChunkedArray | list[str], salt: str = "") -> np.ndarray:
    """Map each string to a deterministic float in [0, 1): top 53 bits of hash64(salt + s)."""
    arr = pa.array(strings, type=pa.string()) if isinstance(strings, list) else strings
    if salt:
        arr = pc.binary_join_element_wise(salt, arr, "")
    return (hash64(arr) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
