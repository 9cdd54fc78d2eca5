"""select: keep a subset of prompts by any score column (the pipeline's one global step).

Pass 1 reads only ``prompt_id`` and the score (Parquet column projection: tens of MB at 1M
prompts) and decides; pass 2 streams the rows through a mask. Output keeps input order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from pvar.config import StageConfig
from pvar.core import select as sel
from pvar.errors import InputError
from pvar.io.arrow import to_numpy_float
from pvar.io.paths import check_output
from pvar.io.readers import kind_of
from pvar.io.rows import read_rows
from pvar.io.writers import atomic_rows
from pvar.pipeline.measure import COLUMNS as MEASURE_COLUMNS

Mode = Literal["top", "bottom", "random", "threshold"]


class SelectConfig(StageConfig):
    by: str = Field("pvar", description="Score column to rank by (any numeric column: pvar, reward_std, ...).")
    mode: Mode = Field(..., description="top / bottom / random at a budget, or threshold (score >= minimum).")
    fraction: float | None = Field(None, gt=0, le=1, description="Budget as a fraction of eligible prompts.")
    count: int | None = Field(None, ge=1, description="Budget as a count; with a fraction, a cap on it.")
    minimum: float | None = Field(None, description="Threshold mode: keep prompts whose score >= minimum.")
    seed: int = Field(0, ge=0, lt=2**32, description="Seed of the random arm.")

    @model_validator(mode="after")
    def _budget_given(self) -> Self:
        if self.mode == "threshold" and self.minimum is None:
            raise ValueError("threshold mode needs a minimum")
        if self.mode != "threshold" and self.fraction is None and self.count is None:
            raise ValueError(f"{self.mode} needs a fraction or a count")
        return self


@dataclass(frozen=True)
class SelectSummary:
    n_prompts: int
    n_eligible: int  # prompts with a finite score
    n_kept: int
    kept_min: float
    kept_max: float


def choose(scores: np.ndarray, ids: np.ndarray, cfg: SelectConfig) -> np.ndarray:
    """Positions to keep, in rank order."""
    n_eligible = int((~np.isnan(scores)).sum())
    if cfg.mode == "threshold":
        picked = sel.select_threshold(scores, cfg.minimum, ids=ids)
        return picked[: cfg.count] if cfg.count else picked
    k = sel.budget(n_eligible, fraction=cfg.fraction, count=cfg.count)
    if cfg.mode == "top":
        return sel.select_top(scores, k, ids=ids)
    if cfg.mode == "bottom":
        return sel.select_bottom(scores, k, ids=ids)
    return sel.select_random(scores, k, seed=cfg.seed, ids=ids)


def _read_scores(source: str, by: str) -> tuple[np.ndarray, np.ndarray]:
    """All prompt ids and scores; a null score (e.g. no PVar) reads as NaN: not eligible."""
    scores, ids = [], []
    batch_size = 1 << 18 if kind_of(source) == "parquet" else 65536
    for batch in read_rows(source, require=("prompt_id",), batch_size=batch_size,
                           columns=["prompt_id", by]):
        if by not in batch.data.schema.names:
            hint = " (run `pvar measure` first)" if by in MEASURE_COLUMNS else ""
            raise InputError(source, f"no score column {by!r}{hint}", field=by)
        typ = batch.data.schema.field(by).type
        if not (pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_null(typ)):
            raise InputError(source, f"score column must be numeric, got {typ}", field=by)
        scores.append(to_numpy_float(batch.data.column(by)))
        ids.append(batch.data.column("prompt_id").to_numpy(zero_copy_only=False))
    return np.concatenate(scores), np.concatenate(ids)


def run(
    source: str | Path,
    output: str | Path,
    cfg: SelectConfig,
    progress: Callable[[int], None] | None = None,
) -> SelectSummary:
    source = str(source)
    check_output(source, output)
    scores, ids = _read_scores(source, cfg.by)
    picked = choose(scores, ids, cfg)
    mask = np.zeros(scores.size, dtype=bool)
    mask[picked] = True
    start = 0
    with atomic_rows(output) as writer:
        for batch in read_rows(source, require=("prompt_id",)):
            n = batch.data.num_rows
            writer.write(batch.data.filter(mask[start : start + n]))
            start += n
            if progress:
                progress(n)
    kept = scores[picked]
    return SelectSummary(
        n_prompts=int(scores.size),
        n_eligible=int((~np.isnan(scores)).sum()),
        n_kept=int(picked.size),
        kept_min=float(kept.min()) if kept.size else float("nan"),
        kept_max=float(kept.max()) if kept.size else float("nan"),
    )
