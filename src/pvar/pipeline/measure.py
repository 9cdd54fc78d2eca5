"""measure: add PVar, its bootstrap interval and the reward baselines to every prompt row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import Field

from pvar.config import InputFormat, Rating, StageConfig
from pvar.core.stats import pvar_interval, reward_stats
from pvar.core.summary import PoolSummary, summarize
from pvar.io.arrow import float_column, list_to_padded
from pvar.io.paths import check_output
from pvar.io.rows import read_rows
from pvar.io.writers import open_output

COLUMNS = ("pvar", "pvar_low", "pvar_high", "reward_mean", "reward_std", "reward_range", "n_valid")


class MeasureConfig(StageConfig):
    scale: float = Field(1.0, gt=0, description=(
        "Reward scale s in sigmoid(s * (r_i - r_j)). Reward models differ in logit scale; cosine "
        "rewards have gaps of ~0.05-0.3 and need s ~ 5-20 for PVar to separate prompts."))
    n_boot: int = Field(200, ge=10, le=1_000_000, description="Bootstrap resamples per prompt for the PVar interval.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Coverage of the PVar interval.")
    seed: int = Field(0, ge=0, lt=2**32, description="Seed of the bootstrap resamples.")
    format: InputFormat = "auto"
    rating: Rating = "overall"


def _interval(padded: np.ndarray, cfg: MeasureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap interval in float32 (half the cost) where that is exact enough, else float64.

    PVar depends on reward gaps only, so each row is shifted to start at 0 first; rewards such as
    1e39 (finite in float64, infinite in float32) then keep their gaps. Rows whose scaled gaps
    would leave float32's range are computed in float64, row by row, so a row's interval never
    depends on which rows share its batch.
    """
    with np.errstate(all="ignore"):
        shifted = padded - np.min(np.where(np.isnan(padded), np.inf, padded), axis=1, keepdims=True)
        wide = np.nanmax(np.where(np.isnan(shifted), 0.0, np.abs(shifted)), axis=1, initial=0.0) * cfg.scale >= 1e30
    low, high = np.full(len(padded), np.nan), np.full(len(padded), np.nan)
    for mask, values in ((~wide, shifted[~wide].astype(np.float32)), (wide, shifted[wide])):
        if mask.any():
            low[mask], high[mask] = pvar_interval(values, cfg.scale, n_boot=cfg.n_boot,
                                                  confidence=cfg.confidence, seed=cfg.seed)
    return low, high


def measure_batch(data: pa.RecordBatch, cfg: MeasureConfig) -> pa.RecordBatch:
    """Append (or replace) the measure columns of one batch of scored rows."""
    padded = list_to_padded(data.column("rewards"))
    stats = reward_stats(padded, cfg.scale)
    low, high = _interval(padded, cfg)
    new = {
        "pvar": float_column(stats.pvar),
        "pvar_low": float_column(low),
        "pvar_high": float_column(high),
        "reward_mean": float_column(stats.reward_mean),
        "reward_std": float_column(stats.reward_std),
        "reward_range": float_column(stats.reward_range),
        "n_valid": pa.array(stats.n_valid, type=pa.int64()),
    }
    keep = [n for n in data.schema.names if n not in new]
    arrays = [data.column(n) for n in keep] + list(new.values())
    return pa.RecordBatch.from_arrays(arrays, names=keep + list(new))


def run(
    source: str | Path,
    output: str | Path,
    cfg: MeasureConfig,
    progress: Callable[[int], None] | None = None,
) -> PoolSummary:
    """Measure every row of ``source`` into ``output`` (atomic) and summarise the pool."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("pvar", "reward_std", "pvar_low", "pvar_high")}
    check_output(source, output)
    with open_output(output) as writer:
        for batch in read_rows(source, fmt=cfg.format, rating=cfg.rating,
                               require=("prompt_id", "prompt", "responses", "rewards")):
            out = measure_batch(batch.data, cfg)
            writer.write(out)
            for k, acc in parts.items():
                acc.append(out.column(k).to_numpy(zero_copy_only=False))
            if progress:
                progress(out.num_rows)
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return summarize(cat["pvar"], cat["reward_std"], cat["pvar_low"], cat["pvar_high"])
