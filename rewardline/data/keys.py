"""Integer codes for (combinations of) key columns: the grouping primitive of the data stages."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEP = "\x1f"  # unit separator: joins key parts that may contain any printable text


def key_codes(*columns: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Integer code per row for the combination of ``columns`` (equal keys ↔ equal codes)."""
    keys = columns[0] if len(columns) == 1 else pc.binary_join_element_wise(*columns, SEP)
    encoded = pc.fill_null(keys, "\x00null").dictionary_encode()
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.unify_dictionaries() if encoded.num_chunks > 1 else encoded
        indices = [c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks]
        return np.concatenate(indices).astype(np.int64) if indices else np.zeros(0, np.int64)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
