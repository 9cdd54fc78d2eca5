"""Selectors: which prompts to keep, by any per-prompt score.

Each selector returns positions (int64) in rank order: best first for ``top`` and ``stratified``,
worst first for ``bottom``, draw order for ``random``. Prompts whose score is NaN (e.g. no PVar:
fewer than two valid responses) are never selected; callers report how many there were. Ties are
broken by prompt id (then position), so the result never depends on input order or sharding.
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


def apportion(sizes: np.ndarray, k: int, *, capacity: np.ndarray | None = None) -> np.ndarray:
    """Counts of ``k`` slots over strata, proportional to ``sizes`` and capped by ``capacity``.

    Largest remainder (Hamilton): each stratum's quota is ``k * size / total``. A stratum whose quota
    reaches its capacity gets its capacity, and the slots left are shared again, the same way, among
    the others (repeated until none saturates): so a stratum never gets more than it has and its
    shortfall goes to the strata with room. The rest get the floor of their quota plus one slot each
    for the largest remainders; equal remainders go to the larger stratum (its share then moves
    least), then to the earlier one. Quotas are exact integer fractions, so ties are exact. Counts
    sum to ``min(k, capacity.sum())``; a stratum that no stratum capped is within 1 of its quota.

    >>> apportion(np.array([6, 3, 1]), 5).tolist()  # quotas 3, 1.5, 0.5: the tie goes to the 3
    [3, 2, 0]
    >>> apportion(np.array([6, 3, 1]), 5, capacity=np.array([6, 1, 1])).tolist()  # 4 left: 24/7, 4/7
    [3, 1, 1]
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    cap = sizes if capacity is None else np.asarray(capacity, dtype=np.int64)
    if sizes.ndim != 1 or cap.shape != sizes.shape or (sizes < 0).any() or (cap < 0).any():
        raise ValueError("sizes and capacity must be equal-length arrays of counts >= 0")
    k = min(max(int(k), 0), int(cap.sum()))
    counts = np.zeros_like(sizes)
    free = np.ones(sizes.size, dtype=bool)
    while True:  # saturate the strata whose quota of what is left reaches their capacity
        left, total = k - int(counts.sum()), int(sizes[free].sum())
        full = free & (left * sizes >= cap * total)
        if not full.any():
            break
        counts[full], free = cap[full], free & ~full
    left, total = k - int(counts.sum()), int(sizes[free].sum())
    if left > 0 and total > 0:
        idx = np.flatnonzero(free)
        base, rem = np.divmod(left * sizes[idx], total)
        counts[idx] = base
        extra = left - int(base.sum())
        counts[idx[np.lexsort((idx, -sizes[idx], -rem))[:extra]]] += 1
    return counts


def select_stratified(
    scores: np.ndarray, strata: np.ndarray, k: int, *, ids: np.ndarray | None = None
) -> np.ndarray:
    """``k`` positions, the top scores within each stratum, best first; ties by ``ids`` then position.

    Each stratum's share of ``k`` follows its share of the whole pool (NaN scores included), capped
    by its finite scores (:func:`apportion`): top-k over the pool would let the stratum whose scores
    run highest (an easy instruction type, a verbose source) crowd out the others, while this keeps
    the selection's mix that of the pool and ranks only within a stratum. NaN scores are never
    selected, as in ``select_top``. ``strata`` holds one sortable label per prompt.
    """
    scores = np.asarray(scores, dtype=np.float64)
    strata = np.asarray(strata)
    if strata.shape != scores.shape:
        raise ValueError(f"one stratum per score: got {strata.shape} for {scores.shape}")
    if scores.size == 0:
        return np.empty(0, dtype=np.int64)
    keys = _tiebreak_keys(ids, scores.size)
    labels, inverse = np.unique(strata, return_inverse=True)
    inverse = inverse.ravel()
    valid = ~np.isnan(scores)
    counts = apportion(np.bincount(inverse, minlength=labels.size), k,
                       capacity=np.bincount(inverse[valid], minlength=labels.size))
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    picked = [m[select_top(scores[m], c, ids=keys[m])] for m, c in zip(members, counts, strict=True) if c]
    return _rank(np.concatenate(picked) if picked else np.empty(0, np.int64), scores, keys, descending=True)
