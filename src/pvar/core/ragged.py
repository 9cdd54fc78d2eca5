"""Ragged per-prompt rewards <-> NaN-padded 2-D arrays.

Every core function takes rewards as a 2-D array (prompts x n, NaN for a missing reward) or as a
ragged sequence of 1-D arrays, and works on the padded form internally.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RewardsLike = np.ndarray | Sequence[Sequence[float]] | Sequence[np.ndarray]


def to_padded(rewards: RewardsLike) -> np.ndarray:
    """Return rewards as a float 2-D array padded with NaN; float32 input stays float32.

    Raises ``ValueError`` for infinite values (a reward model never returns inf: it is a bug
    upstream, and silently dropping it would bias PVar) and for 1-D numeric input, whose meaning
    (one prompt, or one reward per prompt) is ambiguous.
    """
    if isinstance(rewards, np.ndarray) and rewards.dtype != object:
        if rewards.ndim != 2:
            raise ValueError(
                f"rewards must be 2-D (prompts x responses) or a list of 1-D arrays; got shape "
                f"{rewards.shape} (wrap a single prompt's rewards as [rewards])"
            )
        dtype = np.float32 if rewards.dtype == np.float32 else np.float64
        padded = np.asarray(rewards, dtype=dtype)
    else:
        rows = [np.asarray(r, dtype=np.float64).reshape(-1) for r in rewards]
        if rows and all(np.ndim(r) == 0 for r in rewards):
            raise ValueError(
                "rewards must be 2-D (prompts x responses) or a list of 1-D arrays; got a flat "
                "list of numbers (wrap a single prompt's rewards as [rewards])"
            )
        lengths = np.fromiter((r.size for r in rows), dtype=np.int64, count=len(rows))
        padded = pad_flat(np.concatenate(rows) if rows else np.empty(0), lengths)
    check_finite_or_nan(padded)
    return padded


def pad_flat(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Scatter a flat array of concatenated rows into a NaN-padded (rows x max length) array."""
    width = int(lengths.max()) if lengths.size else 0
    if lengths.size and (lengths == width).all():
        return values.reshape(lengths.size, width).copy()
    out = np.full((lengths.size, width), np.nan, dtype=values.dtype)
    out[np.arange(width) < lengths[:, None]] = values
    return out


def check_finite_or_nan(padded: np.ndarray) -> None:
    """Raise ``ValueError`` naming the first prompt holding an infinite reward."""
    bad = np.isinf(padded)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"reward {col} of prompt {row} is infinite ({padded[row, col]})")


def n_valid(rewards: RewardsLike) -> np.ndarray:
    """Number of non-NaN rewards per prompt (int64)."""
    return (~np.isnan(to_padded(rewards))).sum(axis=1)
