"""Arrow list columns <-> numpy without a Python object per row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pvar.core.ragged import pad_flat


def combine(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def list_lengths(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Length of each list (0 for a null list), int64."""
    return pc.fill_null(pc.list_value_length(combine(column)), 0).to_numpy().astype(np.int64)


def list_to_padded(column: pa.Array | pa.ChunkedArray, dtype: type = np.float64) -> np.ndarray:
    """list<number> column -> (rows x max length) array, NaN for padding and null values."""
    col = combine(column)
    values = pc.cast(pc.list_flatten(col), pa.float64() if dtype == np.float64 else pa.float32())
    flat = values.to_numpy(zero_copy_only=False)  # nulls become NaN for floating types
    return pad_flat(flat.astype(dtype, copy=False), list_lengths(col))


def padded_to_list(padded: np.ndarray, lengths: np.ndarray | None = None) -> pa.ListArray:
    """Inverse of ``list_to_padded``: rows cut to ``lengths`` (default: full width)."""
    rows, width = padded.shape
    lengths = np.full(rows, width) if lengths is None else np.asarray(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = padded[np.arange(width) < lengths[:, None]]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def float_column(values: np.ndarray) -> pa.Array:
    """float64 column with NaN stored as null (JSON has no NaN; null reads back as NaN)."""
    values = np.asarray(values, dtype=np.float64)
    return pa.array(values, mask=np.isnan(values))


def to_numpy_float(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Numeric column -> float64 array with null as NaN."""
    return pc.cast(combine(column), pa.float64()).to_numpy(zero_copy_only=False)
