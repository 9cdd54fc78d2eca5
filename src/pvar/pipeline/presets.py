"""Built-in runs that work offline on bundled data."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from pvar.core.summary import PoolSummary
from pvar.io.arrow import to_numpy_float
from pvar.io.rows import read_rows
from pvar.pipeline import measure, pairs, select


def bundled(name: str) -> Path:
    """Path of a data file shipped inside the package."""
    return Path(str(resources.files("pvar") / "data" / name))


@dataclass(frozen=True)
class DemoResult:
    source: str
    pool: PoolSummary
    pvar: np.ndarray
    table: dict[str, Any]


def run_ultrafeedback(out_dir: str | Path, *, top: float = 0.25) -> DemoResult:
    """measure -> select top PVar -> best-worst pairs on the bundled UltraFeedback sample.

    Ratings (overall_score, 1-10) play the role of rewards, so no model is needed.
    """
    out_dir = Path(out_dir)
    source = bundled("ultrafeedback_sample.jsonl")
    measured, selected, pair_rows = (out_dir / f for f in
                                     ("01-measure.jsonl", "02-select.jsonl", "03-pairs.jsonl"))
    pool = measure.run(source, measured, measure.MeasureConfig.make(format="ultrafeedback"))
    sel = select.run(measured, selected, select.SelectConfig.make(mode="top", fraction=top))
    pr = pairs.run(selected, pair_rows, pairs.PairsConfig.make())
    pvar = np.concatenate([to_numpy_float(b.data.column("pvar")) for b in read_rows(measured)])
    table = {
        "prompts kept": f"{sel.n_kept} of {sel.n_eligible}",
        "PVar of kept prompts": f"{sel.kept_min:.4f} - {sel.kept_max:.4f}",
        "pool median PVar": f"{pool.quantiles.get(0.5, float('nan')):.4f}",
        "DPO pairs": pr.n_pairs,
        "measured rows": str(measured),
        "selected rows": str(selected),
        "pairs (TRL format)": str(pair_rows),
    }
    return DemoResult(str(source.name), pool, pvar, table)
