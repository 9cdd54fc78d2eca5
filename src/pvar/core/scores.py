"""Prompt scores from the preference-data selection literature, beside PVar (numpy only).

Each works on the padded reward matrix (prompts x responses, NaN = no reward) or on per-prompt
columns, so it runs on a million-prompt pool in one call, and selection stays ``core.select``'s
top / bottom / threshold on the resulting column.

* ``reward_margin``: best minus worst reward ("Less is More", arXiv 2502.14560, which selects the
  pairs with the largest margin). pvar's ``reward_range`` column is this margin.
* ``alignment_potential``: z(reward margin) - z(|policy log-prob margin|) (arXiv 2503.01864).
* ``rip_keep``: the RIP filter (arXiv 2501.18578) on rejected reward, rejected length and gap.
"""

from __future__ import annotations

import numpy as np

from pvar.core.ragged import RewardsLike, to_padded


def reward_margin(rewards: RewardsLike) -> np.ndarray:
    """Best minus worst valid reward per prompt; NaN with fewer than two valid rewards.

    >>> reward_margin([[1.0, 3.0, 2.0], [5.0]]).tolist()
    [2.0, nan]
    """
    x = to_padded(rewards).astype(np.float64, copy=False)
    ok = ~np.isnan(x)
    hi = np.max(x, axis=1, where=ok, initial=-np.inf)
    lo = np.min(x, axis=1, where=ok, initial=np.inf)
    with np.errstate(all="ignore"):  # empty rows give -inf - inf; they are NaN below
        return np.where(ok.sum(axis=1) >= 2, hi - lo, np.nan)


def zscore(values: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the finite entries (population std); NaN stays NaN; a constant column is 0."""
    x = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(x)
    if not ok.any():
        return np.full_like(x, np.nan)
    mu, sd = x[ok].mean(), x[ok].std()
    out = np.where(ok, x - mu, np.nan)
    return out / sd if sd > 0 else np.where(ok, 0.0, np.nan)


def alignment_potential(margin: np.ndarray, logp_margin: np.ndarray) -> np.ndarray:
    """Alignment Potential of each prompt's (chosen, rejected) pair (Huang et al., arXiv 2503.01864).

    The paper's M_AP measures the gap from the model's *current implicit* reward margin to the
    *target explicit* one: a pair whose reward model margin is large while the policy already
    separates chosen from rejected has little left to teach, one the policy cannot yet tell apart
    has much. Here the explicit margin is the reward margin (best - worst reward) and the implicit
    one the policy's summed log-probability margin log pi(chosen|x) - log pi(rejected|x); the two
    live on unrelated scales, so each is standardised over the pool first:

        AP = z(reward margin) - z(|log-prob margin|)

    Higher is selected. Checked against the paper's definition (abstract and method section);
    its code was not available offline, so the z-standardisation is pvar's reading of "integrates
    both margins", not a transcription.
    """
    return zscore(margin) - zscore(np.abs(np.asarray(logp_margin, dtype=np.float64)))


def rip_keep(
    rejected_reward: np.ndarray,
    rejected_length: np.ndarray,
    gap: np.ndarray,
    *,
    reward_quantile: float = 0.25,
    length_quantile: float = 0.25,
    gap_quantile: float = 0.75,
) -> np.ndarray:
    """Which prompts survive the RIP filter (Yu et al., "R.I.P.", arXiv 2501.18578).

    RIP assumes a low-quality prompt yields low-quality or high-variance responses, and reads it
    off the (chosen, rejected) pair: it keeps prompts whose rejected response has a reward and a
    length *at least* a threshold, and whose reward gap chosen - rejected is *at most* one (a large
    gap marks an ambiguous prompt). Thresholds are pool quantiles here (the paper tunes percentiles
    per dataset): by default the bottom quarter of rejected rewards and lengths and the top quarter
    of gaps are dropped. Direction checked against the paper's method section. NaN never survives.

    >>> rip_keep(np.array([0.0, 5.0, 5.0, 5.0]), np.array([9, 9, 1, 9]), np.array([1.0, 1.0, 1.0, 9.0]),
    ...          reward_quantile=0.25, length_quantile=0.25, gap_quantile=0.75).tolist()
    [False, True, False, False]
    """
    for name, q in (("reward_quantile", reward_quantile), ("length_quantile", length_quantile),
                    ("gap_quantile", gap_quantile)):
        if not 0 <= q <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {q}")
    rr, rl, g = (np.asarray(a, dtype=np.float64) for a in (rejected_reward, rejected_length, gap))
    ok = np.isfinite(rr) & np.isfinite(rl) & np.isfinite(g)
    if not ok.any():
        return ok
    with np.errstate(invalid="ignore"):  # NaN comparisons are False, and ``ok`` drops them anyway
        return (ok & (rr >= np.quantile(rr[ok], reward_quantile)) & (rl >= np.quantile(rl[ok], length_quantile))
                & (g <= np.quantile(g[ok], gap_quantile)))
