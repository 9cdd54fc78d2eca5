"""Pool-level summaries of measured prompts: what ``pvar stats`` and ``pvar measure`` print."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pvar.core.stats import spearman

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


@dataclass(frozen=True)
class PoolSummary:
    """Counts, PVar quantiles and agreement with the reward-std baseline for one pool."""

    n_prompts: int
    n_with_pvar: int
    quantiles: dict[float, float] = field(default_factory=dict)
    mean_pvar: float = float("nan")
    spearman_pvar_std: float = float("nan")
    median_interval_width: float = float("nan")

    @property
    def n_lacking(self) -> int:
        """Prompts with fewer than two valid rewards: reported, never selected."""
        return self.n_prompts - self.n_with_pvar


def summarize(
    pvar: np.ndarray,
    reward_std: np.ndarray | None = None,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
) -> PoolSummary:
    pvar = np.asarray(pvar, dtype=np.float64)
    ok = ~np.isnan(pvar)
    if not ok.any():
        return PoolSummary(pvar.size, 0)
    values = pvar[ok]
    width = float("nan")
    if low is not None and high is not None:
        w = np.asarray(high, dtype=np.float64) - np.asarray(low, dtype=np.float64)
        width = float(np.nanmedian(w)) if np.isfinite(w).any() else float("nan")
    return PoolSummary(
        n_prompts=int(pvar.size),
        n_with_pvar=int(ok.sum()),
        quantiles={q: float(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True)},
        mean_pvar=float(values.mean()),
        spearman_pvar_std=spearman(pvar, reward_std) if reward_std is not None else float("nan"),
        median_interval_width=width,
    )


def histogram(values: np.ndarray, bins: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges over the finite values (for text and image histograms alike)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.histogram(values, bins=bins)
