"""Pair rules: which (chosen, rejected) responses to take from each prompt.

Rules return index triples, never text, so the same rule serves any row layout. Prompts with
fewer than two valid rewards, or whose best and worst reward tie, give no pair: a pair between
equally rated responses teaches nothing and only adds noise to DPO.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pvar.core.ragged import RewardsLike, to_padded

RULES = ("best-worst", "best-random", "all")


@dataclass(frozen=True)
class PairIndex:
    """Parallel int64 arrays: prompt position, chosen response index, rejected response index."""

    prompt: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray

    def __len__(self) -> int:
        return int(self.prompt.size)


def _extremes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """argmax, argmin (first occurrence) and whether a strict gap exists, NaN ignored."""
    if x.shape[1] == 0:
        zeros = np.zeros(x.shape[0], dtype=np.int64)
        return zeros, zeros, np.zeros(x.shape[0], dtype=bool)
    nan = np.isnan(x)
    hi = np.where(nan, -np.inf, x)
    lo = np.where(nan, np.inf, x)
    best, worst = hi.argmax(axis=1), lo.argmin(axis=1)
    rows = np.arange(x.shape[0])
    ok = ((~nan).sum(axis=1) >= 2) & (hi[rows, best] > lo[rows, worst])
    return best, worst, ok


def best_worst(rewards: RewardsLike) -> PairIndex:
    """Highest vs lowest reward per prompt (SimPO's on-policy recipe)."""
    x = to_padded(rewards)
    best, worst, ok = _extremes(x)
    rows = np.flatnonzero(ok)
    return PairIndex(rows, best[rows].astype(np.int64), worst[rows].astype(np.int64))


def best_random(rewards: RewardsLike, uniforms: np.ndarray) -> PairIndex:
    """Highest reward vs one response drawn among those strictly below it (Zephyr's recipe).

    ``uniforms`` holds one number in [0, 1) per prompt (see ``seeding.prompt_uniforms``), so the
    draw is reproducible per prompt rather than per batch.
    """
    x = to_padded(rewards)
    uniforms = np.asarray(uniforms, dtype=np.float64)
    if uniforms.shape != (x.shape[0],):
        raise ValueError(f"need one uniform per prompt: {x.shape[0]}, got {uniforms.shape}")
    best, _, ok = _extremes(x)
    rows = np.flatnonzero(ok)
    if rows.size == 0:
        return PairIndex(rows, rows.copy(), rows.copy())
    xr = x[rows]
    below = xr < xr[np.arange(rows.size), best[rows]][:, None]  # NaN compares False
    target = np.floor(uniforms[rows] * below.sum(axis=1)).astype(np.int64)
    rejected = np.argmax(below & (np.cumsum(below, axis=1) == (target + 1)[:, None]), axis=1)
    return PairIndex(rows, best[rows].astype(np.int64), rejected.astype(np.int64))


def sweet_spot(rewards: RewardsLike, k: float = 2.0) -> PairIndex:
    """Best response vs the one nearest mu - k*sigma of the prompt's rewards (arXiv 2502.16825).

    "Finding the Sweet Spot" samples many responses per prompt, models their rewards as normal,
    and finds that a rejected response at mu - 2 sigma trains better than the minimum (an outlier
    that the policy rarely produces) or one near the mean. mu and sigma are over the valid
    rewards (population sigma); the rejected candidate must lie strictly below the best, and ties
    in distance go to the lower reward, then the earlier response. Prompts with fewer than two
    valid rewards or all rewards equal give no pair. With n = 2 this is best-worst.
    """
    x = to_padded(rewards).astype(np.float64)
    best, _, ok = _extremes(x)
    rows = np.flatnonzero(ok)
    if rows.size == 0:
        return PairIndex(rows, rows.copy(), rows.copy())
    xr = x[rows]
    top = xr[np.arange(rows.size), best[rows]][:, None]
    target = np.nanmean(xr, axis=1) - k * np.nanstd(xr, axis=1)
    below = xr < top  # NaN compares False
    dist = np.where(below, np.abs(xr - target[:, None]), np.inf)
    # lexicographic (distance, reward, index): argmin of distance, lower reward among exact ties
    rank = np.lexsort((np.broadcast_to(np.arange(x.shape[1]), xr.shape), np.where(below, xr, np.inf), dist), axis=1)
    rejected = rank[:, 0]
    return PairIndex(rows, best[rows].astype(np.int64), rejected.astype(np.int64))


def all_pairs(rewards: RewardsLike, max_per_prompt: int = 8) -> PairIndex:
    """Every pair with r_i > r_j, largest reward gap first, at most ``max_per_prompt`` per prompt.

    Ties in the gap keep (i, j) order, so the cap is deterministic.
    """
    if max_per_prompt < 1:
        raise ValueError(f"max_per_prompt must be >= 1, got {max_per_prompt}")
    x = to_padded(rewards).astype(np.float64)
    n = x.shape[1]
    gaps = (x[:, :, None] - x[:, None, :]).reshape(x.shape[0], n * n)
    gaps = np.where(gaps > 0, gaps, -np.inf)  # NaN and non-positive gaps are not pairs
    order = np.argsort(-gaps, axis=1, kind="stable")[:, :max_per_prompt]
    keep = np.isfinite(np.take_along_axis(gaps, order, axis=1))
    prompt = np.broadcast_to(np.arange(x.shape[0])[:, None], order.shape)[keep]
    flat = order[keep]
    return PairIndex(prompt.astype(np.int64), (flat // n).astype(np.int64), (flat % n).astype(np.int64))
