"""Selectors: which prompts to keep, by any per-prompt score.

Each selector returns positions (int64) in rank order: best first for ``top``, worst first for
``bottom``, draw order for ``random``. Prompts whose score is NaN (e.g. no PVar: fewer than two
valid responses) are never selected; callers report how many there were. Ties are broken by
prompt id (then position), so the result never depends on input order or sharding.
"""

from __future__ import annotations

import math

import numpy as np


def budget(n_eligible: int, *, fraction: float | None = None, count: int | None = None) -> int:
    """Number of prompts to keep: round-half-up of ``fraction * n_eligible``, capped by ``count``.

    With only ``count``, keep ``min(count, n_eligible)``. A fraction must lie in (0, 1]. At least
    one prompt is kept when any is eligible, so a tiny pool never yields an empty arm.
    """
    if fraction is None and count is None:
        raise ValueError("give a fraction or a count")
    k = n_eligible
    if fraction is not None:
        if not (isinstance(fraction, int | float) and 0 < fraction <= 1):
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        k = min(n_eligible, max(1, math.floor(fraction * n_eligible + 0.5))) if n_eligible else 0
    if count is not None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        k = min(k, count)
    return int(k)


def _tiebreak_keys(ids: np.ndarray | None, n: int) -> np.ndarray:
    return np.arange(n) if ids is None else np.asarray(ids)


def _rank(positions: np.ndarray, scores: np.ndarray, keys: np.ndarray, descending: bool) -> np.ndarray:
    s = scores[positions]
    order = np.lexsort((positions, keys[positions], -s if descending else s))
    return positions[order]


def select_top(scores: np.ndarray, k: int, *, ids: np.ndarray | None = None) -> np.ndarray:
    """Positions of the ``k`` highest finite scores, best first; ties by ``ids`` then position.

    Linear time: a partition finds the k-th value, only the tie group at that value is sorted.
    """
    scores = np.asarray(scores, dtype=np.float64)
    keys = _tiebreak_keys(ids, scores.size)
    valid = np.flatnonzero(~np.isnan(scores))
    k = min(int(k), valid.size)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    vals = scores[valid]
    kth = np.partition(vals, vals.size - k)[vals.size - k]
    above = valid[vals > kth]
    tied = valid[vals == kth]
    need = k - above.size
    if need < tied.size:
        tied = tied[np.lexsort((tied, keys[tied]))][:need]
    return _rank(np.concatenate([above, tied]), scores, keys, descending=True)


def select_bottom(scores: np.ndarray, k: int, *, ids: np.ndarray | None = None) -> np.ndarray:
    """Positions of the ``k`` lowest finite scores, worst first; ties by ``ids`` then position."""
    return select_top(-np.asarray(scores, dtype=np.float64), k, ids=ids)


def select_random(
    scores: np.ndarray, k: int, *, seed: int, ids: np.ndarray | None = None
) -> np.ndarray:
    """``k`` positions drawn uniformly without replacement among finite scores, in draw order.

    The draw is a seeded permutation of the eligible prompts sorted by ``ids``, so it depends
    only on (seed, the set of ids): the same at any sharding or input order, which is what makes
    the random arm at equal budget a fair comparison across runs.
    """
    scores = np.asarray(scores, dtype=np.float64)
    keys = _tiebreak_keys(ids, scores.size)
    valid = np.flatnonzero(~np.isnan(scores))
    valid = valid[np.lexsort((valid, keys[valid]))]
    k = min(int(k), valid.size)
    perm = np.random.default_rng(seed).permutation(valid.size)[:k]
    return valid[perm]


def select_threshold(
    scores: np.ndarray, minimum: float, *, ids: np.ndarray | None = None
) -> np.ndarray:
    """Positions of all scores >= ``minimum``, best first; ties by ``ids`` then position."""
    scores = np.asarray(scores, dtype=np.float64)
    keep = np.flatnonzero(scores >= minimum)  # NaN compares False
    return _rank(keep, scores, _tiebreak_keys(ids, scores.size), descending=True)
