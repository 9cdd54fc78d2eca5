"""stats: summarise a pool's PVar (measured, or measured on the fly from its rewards)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from pvar.config import InputFormat, Rating, StageConfig
from pvar.core.summary import PoolSummary, summarize
from pvar.io.arrow import to_numpy_float
from pvar.io.rows import read_rows
from pvar.pipeline.measure import MeasureConfig, measure_batch

NEEDED = ("pvar", "reward_std", "pvar_low", "pvar_high")


class StatsConfig(StageConfig):
    scale: float = Field(1.0, gt=0, description="Reward scale, used only for rows not yet measured.")
    format: InputFormat = "auto"
    rating: Rating = "overall"


def run(source: str | Path, cfg: StatsConfig) -> tuple[dict[str, np.ndarray], PoolSummary]:
    """Per-prompt columns (pvar, reward_std, pvar_low, pvar_high) and the pool summary."""
    measure_cfg = MeasureConfig.make(scale=cfg.scale, format=cfg.format, rating=cfg.rating)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in NEEDED}
    for batch in read_rows(source, fmt=cfg.format, rating=cfg.rating, require=("prompt_id",)):
        data = batch.data
        if "pvar" not in data.schema.names:
            if "rewards" not in data.schema.names:
                raise batch.error(0, "pvar", "missing, and no rewards to measure it from")
            data = measure_batch(data, measure_cfg)
        for k in NEEDED:
            col = data.column(k) if k in data.schema.names else None
            parts[k].append(to_numpy_float(col) if col is not None else np.full(data.num_rows, np.nan))
    cols = {k: np.concatenate(v) for k, v in parts.items()}
    return cols, summarize(cols["pvar"], cols["reward_std"], cols["pvar_low"], cols["pvar_high"])
