"""select: keep a subset of prompts by any score column (the pipeline's one global step).

Pass 1 reads only ``prompt_id`` and the score (and the stratum, for ``stratified``: Parquet column
projection, tens of MB at 1M prompts) and decides; pass 2 streams the rows through a mask. Output
keeps input order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from pvar.config import Seed, StageConfig
from pvar.core import select as sel
from pvar.core.pairs import best_worst
from pvar.core.scores import rip_keep
from pvar.errors import ConfigError, InputError
from pvar.io.arrow import list_to_padded, to_numpy_float
from pvar.io.paths import check_output
from pvar.io.readers import Batch, in_memory, kind_of, memory_name
from pvar.io.rows import read_rows
from pvar.io.writers import open_output
from pvar.pipeline.measure import COLUMNS as MEASURE_COLUMNS

Mode = Literal["top", "bottom", "random", "threshold", "rip", "stratified"]
CONSTRAINTS = "constraints"
"""The default stratum: a column of that name, or else derived from each row's task spec in ``reference``
(its constraint ids, sorted, joined by '+'): the instruction types of a task pool, whose scores differ
by type (an end phrase is harder to meet than no commas), so a plain top-k would favour some types."""


class SelectConfig(StageConfig):
    by: str = Field("pvar", description="Score column to rank by (any numeric column: pvar, reward_std, ...).")
    mode: Mode = Field(..., description="top / bottom / random at a budget, threshold (score >= minimum), rip "
                       "(the RIP filter of arXiv 2501.18578 on the best-worst pair; a budget caps it, smallest gap "
                       "first), or stratified (top within each stratum, each stratum's share of the budget its "
                       "share of the pool).")
    fraction: float | None = Field(None, gt=0, le=1, description="Budget as a fraction of eligible prompts.")
    count: int | None = Field(None, ge=1, description="Budget as a count; with a fraction, a cap on it.")
    minimum: float | None = Field(None, description="Threshold mode: keep prompts whose score >= minimum.")
    seed: Seed = Field(0, description="Seed of the random arm.")
    rip_reward_quantile: float = Field(0.25, ge=0, le=1, description="rip: drop rejected rewards below this "
                                       "pool quantile.")
    rip_length_quantile: float = Field(0.25, ge=0, le=1, description="rip: drop rejected responses shorter (in "
                                       "words) than this pool quantile.")
    rip_gap_quantile: float = Field(0.75, ge=0, le=1, description="rip: drop reward gaps above this pool quantile.")
    stratum: str = Field(CONSTRAINTS, min_length=1, description="stratified: the column whose values are the "
                         "strata (task, a source, ...; values compared as text, null as ''). 'constraints', where "
                         "the pool has no such column, is derived from each task spec in 'reference': its "
                         "constraint ids, sorted, joined by '+'.")

    omit_at_default = ("stratum",)  # added later: fingerprints of earlier selections stay put

    @model_validator(mode="after")
    def _budget_given(self) -> Self:
        if self.mode == "threshold" and self.minimum is None:
            raise ValueError("threshold mode needs a minimum")
        if self.mode != "stratified" and self.stratum != CONSTRAINTS:
            raise ValueError("stratum applies to stratified mode only")
        if self.mode not in ("threshold", "rip") and self.fraction is None and self.count is None:
            raise ValueError(f"{self.mode} needs a fraction or a count")
        return self


@dataclass(frozen=True)
class SelectSummary:
    n_prompts: int
    n_eligible: int  # prompts with a finite score
    n_kept: int
    kept_min: float
    kept_max: float


def choose(scores: np.ndarray, ids: np.ndarray, cfg: SelectConfig, strata: np.ndarray | None = None) -> np.ndarray:
    """Positions to keep, in rank order (``strata``: one label per prompt, for stratified mode)."""
    n_eligible = int((~np.isnan(scores)).sum())
    if cfg.mode == "threshold":
        picked = sel.select_threshold(scores, cfg.minimum, ids=ids)
        return picked[: cfg.count] if cfg.count else picked
    if cfg.mode == "rip":  # scores are -gap for survivors, NaN otherwise
        if cfg.fraction is None and cfg.count is None:
            return sel.select_top(scores, n_eligible, ids=ids)
        return sel.select_top(scores, sel.budget(n_eligible, fraction=cfg.fraction, count=cfg.count), ids=ids)
    k = sel.budget(n_eligible, fraction=cfg.fraction, count=cfg.count)
    if cfg.mode == "top":
        return sel.select_top(scores, k, ids=ids)
    if cfg.mode == "bottom":
        return sel.select_bottom(scores, k, ids=ids)
    if cfg.mode == "stratified":
        if strata is None:
            raise ValueError("stratified mode needs one stratum per prompt")
        return sel.select_stratified(scores, strata, k, ids=ids)
    return sel.select_random(scores, k, seed=cfg.seed, ids=ids)


def _strata(batch: Batch, stratum: str, name: str) -> list[str]:
    """Each row's stratum label: the column's value as text ('' for null), or the derived constraint ids."""
    data = batch.data
    if stratum in data.schema.names:
        return ["" if v is None else str(v) for v in data.column(stratum).to_pylist()]
    if stratum != CONSTRAINTS or "reference" not in data.schema.names:
        hint = " (nor task specs in 'reference' to derive it from)" if stratum == CONSTRAINTS else ""
        raise InputError(name, f"no stratum column {stratum!r}{hint}", field=stratum)
    from pvar.tasks import constraint_key

    out = []
    for i, ref in enumerate(data.column("reference").to_pylist()):
        try:
            out.append(constraint_key(ref))
        except ValueError as exc:
            raise batch.error(i, "reference", f"not a task spec, so no constraints stratum: {exc}") from None
    return out


def _read_scores(source: Any, by: str, stratum: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """All prompt ids, scores and (given ``stratum``) strata; a null score (e.g. no PVar) reads as NaN:
    not eligible."""
    scores, ids, strata = [], [], []
    batch_size = 1 << 18 if kind_of(source) == "parquet" else 65536
    name = memory_name(source) if in_memory(source) else source
    extra = [] if stratum is None else [stratum, "reference"] if stratum == CONSTRAINTS else [stratum]
    for batch in read_rows(source, require=("prompt_id",), batch_size=batch_size,
                           columns=["prompt_id", by, *extra]):
        if by not in batch.data.schema.names:
            hint = " (run `pvar measure` first)" if by in MEASURE_COLUMNS else ""
            raise InputError(name, f"no score column {by!r}{hint}", field=by)
        typ = batch.data.schema.field(by).type
        if not (pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_null(typ)):
            raise InputError(name, f"score column must be numeric, got {typ}", field=by)
        scores.append(to_numpy_float(batch.data.column(by)))
        ids.append(batch.data.column("prompt_id").to_numpy(zero_copy_only=False))
        if stratum is not None:
            strata.extend(_strata(batch, stratum, name))
    return np.concatenate(scores), np.concatenate(ids), None if stratum is None else np.array(strata, dtype=object)


def _read_rip(source: Any, cfg: SelectConfig) -> tuple[np.ndarray, np.ndarray]:
    """-gap of each prompt that survives RIP, NaN for the others (see ``core.scores.rip_keep``)."""
    rejected_reward, rejected_length, gaps, ids = [], [], [], []
    for batch in read_rows(source, require=("prompt_id", "responses", "rewards"),
                           columns=["prompt_id", "responses", "rewards"]):
        rewards = list_to_padded(batch.data.column("rewards"))
        idx = best_worst(rewards)
        n = batch.data.num_rows
        rr, rl, gap = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        responses = batch.data.column("responses").to_pylist()
        rr[idx.prompt] = rewards[idx.prompt, idx.rejected]
        gap[idx.prompt] = rewards[idx.prompt, idx.chosen] - rr[idx.prompt]
        rl[idx.prompt] = [len(responses[p][r].split()) for p, r in zip(idx.prompt, idx.rejected, strict=True)]
        rejected_reward.append(rr)
        rejected_length.append(rl)
        gaps.append(gap)
        ids.append(batch.data.column("prompt_id").to_numpy(zero_copy_only=False))
    gap = np.concatenate(gaps)
    keep = rip_keep(np.concatenate(rejected_reward), np.concatenate(rejected_length), gap,
                    reward_quantile=cfg.rip_reward_quantile, length_quantile=cfg.rip_length_quantile,
                    gap_quantile=cfg.rip_gap_quantile)
    return np.where(keep, -gap, np.nan), np.concatenate(ids)


def run(
    source: str | Path,
    output: str | Path,
    cfg: SelectConfig,
    progress: Callable[[int], None] | None = None,
) -> SelectSummary:
    source = source if in_memory(source) else str(source)
    check_output(source, output)
    strata = None
    if cfg.mode == "rip":
        scores, ids = _read_rip(source, cfg)
    else:
        scores, ids, strata = _read_scores(source, cfg.by, cfg.stratum if cfg.mode == "stratified" else None)
    picked = choose(scores, ids, cfg, strata)
    mask = np.zeros(scores.size, dtype=bool)
    mask[picked] = True
    start = 0
    with open_output(output) as writer:
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


def chosen_mode(*, top: float | None = None, bottom: float | None = None, random: float | None = None,
                stratified: float | None = None, minimum: float | None = None, rip: bool = False,
                spell: Callable[[str], str] = lambda name: name) -> dict[str, Any]:
    """The mode and budget of a selection asked for by name: exactly one of ``top``, ``bottom``,
    ``random`` or ``stratified`` (a fraction), ``minimum`` (a threshold) or ``rip``. ``spell`` names
    the choices in the caller's words (``--min X`` on the command line) in the one-line error."""
    given = {k: v for k, v in (("top", top), ("bottom", bottom), ("random", random), ("stratified", stratified),
                               ("minimum", minimum)) if v is not None}
    if len(given) + bool(rip) != 1:
        names = ", ".join(spell(k) for k in ("top", "bottom", "random", "stratified", "minimum", "rip"))
        raise ConfigError(f"give exactly one of {names}")
    if rip:
        return {"mode": "rip"}
    (name, value), = given.items()
    if name == "minimum":
        return {"mode": "threshold", "minimum": value}
    if not 0 < value <= 1:
        raise ConfigError(f"{spell(name)}: fraction must be in (0, 1], got {value}")
    return {"mode": name, "fraction": value}
