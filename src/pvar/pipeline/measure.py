"""measure: add PVar, its bootstrap interval and the reward baselines to every prompt row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import Field

from pvar.config import InputFormat, Rating, Seed, StageConfig
from pvar.core.stats import measured_stats, preference_variance
from pvar.core.summary import PoolSummary, summarize
from pvar.io.arrow import float_column, list_to_padded
from pvar.io.paths import check_output
from pvar.io.rows import read_rows
from pvar.io.writers import open_output

COLUMNS = ("pvar", "pvar_low", "pvar_high", "reward_mean", "reward_std", "reward_range", "n_valid", "pvar_half")
HALF = "pvar_half"
"""PVar of each prompt's first half of samples: what half the gold labels would select (a cheaper proxy)."""


class MeasureConfig(StageConfig):
    scale: float = Field(1.0, gt=0, description=(
        "Reward scale s in sigmoid(s * (r_i - r_j)). Reward models differ in logit scale; cosine "
        "rewards have gaps of ~0.05-0.3 and need s ~ 5-20 for PVar to separate prompts."))
    n_boot: int = Field(200, ge=10, le=1_000_000, description="Bootstrap resamples per prompt for the PVar interval.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Coverage of the PVar interval.")
    seed: Seed = Field(0, description="Seed of the bootstrap resamples.")
    format: InputFormat = "auto"
    rating: Rating = "overall"


def measure_batch(data: pa.RecordBatch, cfg: MeasureConfig) -> pa.RecordBatch:
    """Append (or replace) the measure columns of one batch of scored rows."""
    padded = list_to_padded(data.column("rewards"))
    stats, low, high = measured_stats(padded, cfg.scale, n_boot=cfg.n_boot, confidence=cfg.confidence, seed=cfg.seed)
    half = preference_variance(padded[:, : max(2, padded.shape[1] // 2)], cfg.scale)
    new = {
        "pvar": float_column(stats.pvar),
        "pvar_low": float_column(low),
        "pvar_high": float_column(high),
        "reward_mean": float_column(stats.reward_mean),
        "reward_std": float_column(stats.reward_std),
        "reward_range": float_column(stats.reward_range),
        "n_valid": pa.array(stats.n_valid, type=pa.int64()),
        HALF: float_column(half),
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


SUMMARY_COLUMNS = ("pvar", "reward_std", "pvar_low", "pvar_high")


def summarize_pool(source: str | Path, cfg: MeasureConfig) -> tuple[dict[str, np.ndarray], PoolSummary]:
    """Per-prompt summary columns (pvar, reward_std, pvar_low, pvar_high) and the pool summary of
    ``source``, measured rows as they are and unmeasured ones measured on the fly (nothing written)."""
    from pvar.io.arrow import to_numpy_float

    parts: dict[str, list[np.ndarray]] = {k: [] for k in SUMMARY_COLUMNS}
    for batch in read_rows(source, fmt=cfg.format, rating=cfg.rating, require=("prompt_id",)):
        data = batch.data
        if "pvar" not in data.schema.names:
            if "rewards" not in data.schema.names:
                raise batch.error(0, "pvar", "missing, and no rewards to measure it from")
            data = measure_batch(data, cfg)
        for k in SUMMARY_COLUMNS:
            col = data.column(k) if k in data.schema.names else None
            parts[k].append(to_numpy_float(col) if col is not None else np.full(data.num_rows, np.nan))
    cols = {k: np.concatenate(v) for k, v in parts.items()}
    return cols, summarize(cols["pvar"], cols["reward_std"], cols["pvar_low"], cols["pvar_high"])
