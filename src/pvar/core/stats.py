"""Preference variance (PVar) and the per-prompt reward statistics reported beside it.

PVar[x] is the variance, over pairs of responses sampled for prompt x, of the Bradley-Terry
preference p(y_i > y_j | x) = sigmoid(scale * (r_i - r_j)). With n rewards we average over all
ordered pairs i != j. Because p_ji = 1 - p_ij their mean is exactly 1/2, so

    PVar = 1 / (n (n - 1)) * sum_{i != j} (sigmoid(scale (r_i - r_j)) - 1/2) ** 2.

This is invariant to response order and to a constant shift of the rewards, lies in [0, 1/4) and
is unbiased for the pair variance under i.i.d. sampling. (``np.var`` over unordered pairs i < j is
none of these: its mean is not 1/2 and depends on which response came first.)

Implementation notes. sigmoid(z) - 1/2 = tanh(z / 2) / 2 and the squared term is even in z, so
the sum over ordered pairs is twice the sum over i < j:

    PVar = sum_{i < j} tanh(scale (r_i - r_j) / 2) ** 2 / (2 n (n - 1)).

Rows are processed in chunks, transposed so each pair offset k is one contiguous subtraction over
prompts; float32 input stays float32 in the transcendental (the bottleneck), sums are float64.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pvar.core.ragged import RewardsLike, to_padded

ESTIMATOR = "pvar/ordered-pairs-v1"
INTERVAL_METHOD = "pvar/bootstrap-percentile-v1"
_CHUNK = 16384


def _check_scale(scale: float) -> float:
    scale = float(scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    return scale


def _chunks(n_rows: int) -> Iterator[slice]:
    for start in range(0, n_rows, _CHUNK):
        yield slice(start, min(start + _CHUNK, n_rows))


def _pair_tanh2(xt: np.ndarray, half_scale: float) -> np.ndarray:
    """tanh(half_scale * (x_a - x_b))**2 for every pair a < b of rows of ``xt`` (n x prompts).

    Returns (pairs x prompts), pairs ordered by offset k = b - a, then a (see ``_pair_order``);
    pairs touching a NaN are 0. Stays in the input's float dtype: tanh is the bottleneck.
    """
    n = xt.shape[0]
    out = np.empty((n * (n - 1) // 2, xt.shape[1]), dtype=xt.dtype)
    at = 0
    for k in range(1, n):
        d = out[at : at + n - k]
        np.subtract(xt[k:], xt[:-k], out=d)
        d *= half_scale
        np.tanh(d, out=d)
        np.square(d, out=d)
        at += n - k
    np.nan_to_num(out, copy=False, nan=0.0)
    return out


def _pair_order(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (a, b) of the pairs in the order ``_pair_tanh2`` lays them out."""
    a = np.concatenate([np.arange(n - k) for k in range(1, n)]) if n > 1 else np.empty(0, int)
    b = np.concatenate([np.arange(k, n) for k in range(1, n)]) if n > 1 else np.empty(0, int)
    return a.astype(np.int64), b.astype(np.int64)


def _valid_counts(xt: np.ndarray) -> np.ndarray:
    return xt.shape[0] - np.isnan(xt).sum(axis=0)


def _pvar_from_tanh2(t2: np.ndarray, nv: np.ndarray) -> np.ndarray:
    total = t2.sum(axis=0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(nv >= 2, total / (2.0 * nv * (nv - 1)), np.nan)


def _pvar_padded(padded: np.ndarray, scale: float) -> np.ndarray:
    out = np.empty(padded.shape[0], dtype=np.float64)
    for rows in _chunks(padded.shape[0]):
        xt = np.ascontiguousarray(padded[rows].T)
        out[rows] = _pvar_from_tanh2(_pair_tanh2(xt, scale / 2.0), _valid_counts(xt))
    return out


def preference_variance(rewards: RewardsLike, scale: float = 1.0) -> np.ndarray:
    """PVar per prompt, shape ``(prompts,)``, float64; NaN where fewer than two valid rewards.

    Args:
        rewards: 2-D array (prompts x n) with NaN for missing rewards, or a ragged list of 1-D
            arrays. Raw reward-model scores (logits), never probabilities.
        scale: reward scale s in sigmoid(s * (r_i - r_j)); reward models differ in logit scale.

    >>> preference_variance([[0.0, 0.0], [0.0, 2.0], [1.0]]).round(4)
    array([0.   , 0.145,   nan])
    """
    return _pvar_padded(to_padded(rewards), _check_scale(scale))


@dataclass(frozen=True)
class RewardStats:
    """Per-prompt statistics of one batch of prompts; every array has shape ``(prompts,)``."""

    pvar: np.ndarray
    reward_mean: np.ndarray
    reward_std: np.ndarray
    reward_range: np.ndarray
    n_valid: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _baselines(xt: np.ndarray, nan: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Mean, population std, range and n_valid of each column of ``xt`` (n x prompts).

    Works on the transposed chunk so every reduction runs across contiguous prompt rows;
    NaN where fewer than two values are valid.
    """
    x = xt.astype(np.float64)
    n = x.shape[0]
    if nan is None:
        nv = np.full(x.shape[1], n, dtype=np.int64)
        mean = x.sum(axis=0) / n if n else np.full(x.shape[1], np.nan)
        dev = x - mean
        hi, lo = (x.max(axis=0), x.min(axis=0)) if n else (mean, mean)
    else:
        nv = n - nan.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(nan, 0.0, x).sum(axis=0) / nv
        dev = np.where(nan, 0.0, x - mean)
        hi = np.where(nan, -np.inf, x).max(axis=0)
        lo = np.where(nan, np.inf, x).min(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        std = np.sqrt(np.einsum("ij,ij->j", dev, dev) / nv)
    rng = hi - lo
    few = nv < 2
    mean, std, rng = (np.where(few, np.nan, a) for a in (mean, std, rng))
    return mean, std, rng, nv.astype(np.int64)


def reward_stats(rewards: RewardsLike, scale: float = 1.0) -> RewardStats:
    """PVar and its baselines in one pass (one padding, one finiteness check).

    Reward std is the closest baseline: for small gaps PVar ~ scale**2 * Var(r) / 8, so it must
    always be reported beside PVar. Every statistic is NaN where fewer than two rewards are valid,
    so the prompts that drop out of PVar drop out of every baseline too.
    """
    padded = to_padded(rewards)
    scale = _check_scale(scale)
    n_rows = padded.shape[0]
    pvar, mean, std, rng = (np.empty(n_rows) for _ in range(4))
    nv = np.empty(n_rows, dtype=np.int64)
    for rows in _chunks(n_rows):
        xt = np.ascontiguousarray(padded[rows].T)
        nan = np.isnan(xt)
        nan = nan if nan.any() else None
        mean[rows], std[rows], rng[rows], nv[rows] = _baselines(xt, nan)
        pvar[rows] = _pvar_from_tanh2(_pair_tanh2(xt, scale / 2.0), nv[rows])
    return RewardStats(pvar, mean, std, rng, nv)


def reward_mean(rewards: RewardsLike) -> np.ndarray:
    """Mean reward per prompt over valid rewards; NaN where fewer than two are valid."""
    return reward_stats(rewards).reward_mean


def reward_std(rewards: RewardsLike) -> np.ndarray:
    """Population standard deviation per prompt; NaN where fewer than two rewards are valid."""
    return reward_stats(rewards).reward_std


def reward_range(rewards: RewardsLike) -> np.ndarray:
    """max - min reward per prompt; NaN where fewer than two rewards are valid."""
    return reward_stats(rewards).reward_range


# -- bootstrap interval ---------------------------------------------------------------------------


def _count_products(m: int, width: int, n_boot: int, seed: int) -> np.ndarray:
    """(pairs x n_boot) products c_a * c_b of multinomial resample counts over the first m slots.

    Depends only on (seed, m): the same resamples serve every prompt with m valid rewards, which
    turns the bootstrap into one matrix product and makes it independent of batching.
    """
    rng = np.random.default_rng([seed, m])
    counts = np.zeros((n_boot, width))
    counts[:, :m] = rng.multinomial(m, np.full(m, 1.0 / m), size=n_boot)
    a, b = _pair_order(width)
    return (counts[:, a] * counts[:, b]).T


def pvar_interval(
    rewards: RewardsLike,
    scale: float = 1.0,
    *,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of each prompt's PVar over its responses: ``(low, high)``.

    The interval shows when n is too small to rank prompts reliably. A resample draws n_valid
    responses with replacement; its PVar is c^T H c / (n - 1)**2 for counts c and the pair-kernel
    matrix H, i.e. rescaled by n / (n - 1) so that resamples average to the estimate (duplicated
    responses add zero-gap pairs, which would otherwise bias them low). Rewards are sorted first,
    so the interval does not depend on response order. NaN where PVar is NaN.
    """
    scale = _check_scale(scale)
    boot = _Bootstrap(np.sort(to_padded(rewards), axis=1), n_boot, confidence, seed)
    for rows in _chunks(boot.padded.shape[0]):
        boot.interval(rows, _pair_tanh2(np.ascontiguousarray(boot.padded[rows].T), scale / 2.0))
    return boot.low, boot.high


class _Bootstrap:
    """The percentile bootstrap of PVar over sorted rows, chunk by chunk from the pair kernel."""

    def __init__(self, padded: np.ndarray, n_boot: int, confidence: float, seed: int,
                 dtype: np.dtype | None = None) -> None:
        if n_boot < 10:
            raise ValueError(f"n_boot must be >= 10, got {n_boot}")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        self.padded = padded  # NaN sorts last: valid rewards fill slots 0..m-1
        self.dtype = padded.dtype if dtype is None else dtype
        n_rows, width = padded.shape
        alpha = 1.0 - confidence
        self.k_lo = int(np.floor(alpha / 2 * (n_boot - 1)))
        self.k_hi = int(np.ceil((1 - alpha / 2) * (n_boot - 1)))
        self.low, self.high = np.full(n_rows, np.nan), np.full(n_rows, np.nan)
        self.nv = (~np.isnan(padded)).sum(axis=1)
        self.products = {int(m): _count_products(int(m), width, n_boot, seed).astype(self.dtype)
                         for m in np.unique(self.nv) if m >= 2}

    def interval(self, rows: slice, t2: np.ndarray) -> None:
        """Fill low/high of ``rows`` from their pair kernel ``t2`` (pairs x rows)."""
        t2 = t2.astype(self.dtype, copy=False)
        nv = self.nv[rows]
        for m, q in self.products.items():
            sel = np.flatnonzero(nv == m)
            if sel.size == 0:
                continue
            h = t2.T if sel.size == nv.size else t2[:, sel].T
            boot = _fixed_shape_matmul(h, q)  # (prompts x n_boot) sums of c_a c_b tanh^2 over pairs a < b
            part = np.sort(boot, axis=1)  # SIMD sort beats np.partition ~5x on 200-wide rows
            factor = 1.0 / (2.0 * (m - 1) ** 2)
            self.low[rows.start + sel] = part[:, self.k_lo] * factor
            self.high[rows.start + sel] = part[:, self.k_hi] * factor


def measured_stats(rewards: RewardsLike, scale: float = 1.0, *, n_boot: int = 200, confidence: float = 0.95,
                   seed: int = 0, boot_dtype: type = np.float32) -> tuple[RewardStats, np.ndarray, np.ndarray]:
    """:func:`reward_stats` and :func:`pvar_interval` in one pass: the pair kernel runs once per row.

    The kernel is computed in float64 (tanh**2 lies in [0, 1], so any reward gap is safe) and the
    bootstrap's matrix product runs in ``boot_dtype`` (float32 halves its cost; the interval is a
    percentile of 200 resamples, far coarser than float32's precision).
    """
    scale = _check_scale(scale)
    padded = np.sort(to_padded(rewards), axis=1)
    n_rows = padded.shape[0]
    boot = _Bootstrap(padded, n_boot, confidence, seed, np.dtype(boot_dtype))
    pvar, mean, std, rng = (np.empty(n_rows) for _ in range(4))
    nv = np.empty(n_rows, dtype=np.int64)
    for rows in _chunks(n_rows):
        xt = np.ascontiguousarray(padded[rows].T)
        nan = np.isnan(xt)
        mean[rows], std[rows], rng[rows], nv[rows] = _baselines(xt, nan if nan.any() else None)
        t2 = _pair_tanh2(xt, scale / 2.0)
        pvar[rows] = _pvar_from_tanh2(t2, nv[rows])
        boot.interval(rows, t2)
    return RewardStats(pvar, mean, std, rng, nv), boot.low, boot.high


_GEMM_ROWS = 1024


def _fixed_shape_matmul(h: np.ndarray, q: np.ndarray) -> np.ndarray:
    """h @ q computed in blocks of exactly _GEMM_ROWS rows (the last one zero-padded).

    BLAS picks kernels and thread splits by matrix shape, so a plain h @ q gives a row results that
    differ in the last bit with the number of other rows (seen on a 2-core EPYC): a prompt's interval
    would depend on its batch. With one shape for every call, each row takes the same path.
    """
    out = np.empty((h.shape[0], q.shape[1]), dtype=np.result_type(h, q))
    block = np.zeros((_GEMM_ROWS, h.shape[1]), dtype=h.dtype)
    for start in range(0, h.shape[0], _GEMM_ROWS):
        rows = h[start : start + _GEMM_ROWS]
        block[: rows.shape[0]] = rows
        block[rows.shape[0] :] = 0.0
        out[start : start + rows.shape[0]] = (block @ q)[: rows.shape[0]]
    return out


# -- rank correlation -----------------------------------------------------------------------------


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    _, first, counts = np.unique(sorted_x, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(avg, counts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation over entries where both are finite (ties get average ranks)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return float("nan")
    ra, rb = _average_ranks(a[keep]), _average_ranks(b[keep])
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")
