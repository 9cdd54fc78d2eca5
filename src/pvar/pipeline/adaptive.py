"""Adaptive sampling: spend samples only on prompts whose place in the selection is still open.

Every prompt starts with ``n0`` samples. After each round, PVar and its bootstrap interval are
measured on all samples so far, and the selection cut-off is the PVar of the k-th prompt for the
requested budget. A prompt whose interval lies wholly above or below the cut is decided; only the
undecided ones (interval straddling the cut, fewer than ``n_max`` samples) get ``step`` more
samples in the next round. Rounds end when nothing is undecided, or the sample budget is spent.

Each round runs the ordinary sharded ``generate`` and ``reward`` stages on the undecided prompts,
asking for samples ``start ..``: samples are seeded per (prompt, sample index), so adding samples
never changes earlier ones, the result does not depend on sharding, and a killed run resumes
(finished rounds are reused, the current one continues from its shards). With ``stop`` off every
prompt grows to ``n_max``: exactly the samples of a fixed ``n = n_max`` run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from pvar.config import Seed, StageConfig, like
from pvar.core.select import budget
from pvar.io.readers import iter_shards
from pvar.io.rows import read_rows
from pvar.io.writers import atomic_rows, atomic_write_text
from pvar.pipeline.generate import GenerateConfig
from pvar.pipeline.measure import MeasureConfig, measure_batch
from pvar.pipeline.reward import RewardConfig
from pvar.pipeline.scoring import score

SUMMARY = "adaptive.json"


class AdaptiveConfig(StageConfig):
    n0: int = Field(3, ge=2, le=1024, description="Samples every prompt gets first.")
    step: int = Field(2, ge=1, le=1024, description="Samples added per round to each undecided prompt.")
    n_max: int = Field(16, ge=2, le=1024, description="Most samples any prompt gets.")
    fraction: float = Field(0.25, gt=0, le=1, description="The selection budget whose cut-off decides prompts.")
    max_samples: int | None = Field(None, ge=1, description="Total sample budget (None: until decided or n_max); "
                                    "when a round would exceed it, the prompts nearest the cut go first.")
    stop: bool = Field(True, description="Stop sampling decided prompts; False grows every prompt to n_max.")
    scale: float = like(MeasureConfig, "scale", description="Reward scale of PVar.")
    n_boot: int = like(MeasureConfig, "n_boot")
    confidence: float = like(MeasureConfig, "confidence", default=0.8, description="Coverage of the interval that "
                             "decides (lower: fewer prompts stay open, fewer samples, more misplaced prompts).")
    seed: Seed = like(MeasureConfig, "seed")

    @model_validator(mode="after")
    def _sizes(self) -> Self:
        if self.n_max < self.n0:
            raise ValueError(f"n_max ({self.n_max}) must be >= n0 ({self.n0})")
        return self


@dataclass
class AdaptiveResult:
    measured: Path
    samples: int  # responses sampled and scored in total
    prompts: int
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "measured": str(self.measured)}


def undecided(pvar: np.ndarray, low: np.ndarray, high: np.ndarray, n: np.ndarray, cfg: AdaptiveConfig) -> np.ndarray:
    """Positions of prompts that get more samples: interval straddling the cut, below n_max.

    The cut is the PVar of the k-th highest prompt (k from ``cfg.fraction``); a prompt whose whole
    interval is at or above it is in, at or below it out, whatever more samples would say at this
    confidence. Prompts without a PVar yet (fewer than two valid rewards) stay undecided.
    """
    room = n < cfg.n_max
    if not cfg.stop:
        return np.flatnonzero(room)
    finite = np.isfinite(pvar)
    if not finite.any():
        return np.flatnonzero(room)
    cut = _cut(pvar, cfg.fraction)
    open_ = ~finite | ((low < cut) & (high > cut))
    return np.flatnonzero(open_ & room)


def _order_by_closeness(todo: np.ndarray, pvar: np.ndarray, low: np.ndarray, high: np.ndarray,
                        cut: float) -> np.ndarray:
    """Undecided prompts, the most uncertain about their side of the cut first (for a capped budget)."""
    width = np.where(high > low, high - low, 1.0)
    closeness = np.abs(np.nan_to_num(pvar[todo], nan=cut) - cut) / width[todo]
    return todo[np.argsort(closeness, kind="stable")]


def _merge(rounds: list[Path], n_prompts_order: list[str]) -> pa.Table:
    """All rounds' responses and rewards per prompt, in sample order, rows in the input's order."""
    base: dict[str, dict[str, Any]] = {}
    for k, folder in enumerate(rounds):
        for batch in iter_shards(folder):
            for row in batch.data.to_pylist():
                pid = row["prompt_id"]
                if k == 0:
                    base[pid] = {**row, "n_samples": len(row["responses"])}
                else:
                    acc = base[pid]
                    acc["responses"] = acc["responses"] + row["responses"]
                    acc["rewards"] = acc["rewards"] + row["rewards"]
                    if "stopped_at_eos" in acc and "stopped_at_eos" in row:
                        acc["stopped_at_eos"] = acc["stopped_at_eos"] + row["stopped_at_eos"]
                    acc["n_samples"] = len(acc["responses"])
    return pa.Table.from_pylist([base[pid] for pid in n_prompts_order])


def run(source: str | Path, out_dir: str | Path, gen: GenerateConfig, reward: RewardConfig,
        cfg: AdaptiveConfig, *, engine: str = "local", shard_size: int = 64,
        log: Callable[[str], None] | None = None, show_progress: bool = True, **engine_opts: Any) -> AdaptiveResult:
    """Adaptive rounds over the prompts of ``source`` into ``out_dir``; returns where the measured pool is.

    ``out_dir`` holds ``round-K/{input.parquet, generate, reward}``, ``measured.parquet`` (every
    prompt's samples, PVar columns and ``n_samples``) and ``adaptive.json`` (samples per round).
    """
    out = Path(out_dir)
    _reset_if_changed(out, source, gen, reward, cfg, shard_size)
    ids = [pid for b in read_rows(source, require=("prompt_id", "prompt")) for pid in
           b.data.column("prompt_id").to_pylist()]
    mcfg = MeasureConfig.make(scale=cfg.scale, n_boot=cfg.n_boot, confidence=cfg.confidence, seed=cfg.seed)
    rounds: list[Path] = []
    result = AdaptiveResult(out / "measured.parquet", 0, len(ids))
    todo_source: str | Path = source
    active = np.ones(len(ids), dtype=bool)  # prompts still sampled; a decided prompt stays decided
    start, n_now = 0, cfg.n0
    while True:
        folder = out / f"round-{len(rounds):02d}"
        g = gen.model_copy(update={"n": n_now, "start": start})
        score(todo_source, folder, g, reward, parts=("generate", "reward"), engine=engine, shard_size=shard_size,
              show_progress=show_progress, **engine_opts)  # measured below, over every round's samples
        rounds.append(folder / "reward")
        sampled = n_now * int(active.sum())
        result.samples += sampled
        table = _merge(rounds, ids)
        measured = pa.Table.from_batches([measure_batch(rb, mcfg) for rb in table.to_batches()])
        pvar, low, high = (measured.column(c).to_numpy(zero_copy_only=False) for c in ("pvar", "pvar_low", "pvar_high"))
        n = measured.column("n_samples").to_numpy()
        todo = undecided(pvar, low, high, n, cfg)
        todo = todo[active[todo]]
        step = min(cfg.step, cfg.n_max - start - n_now)
        if todo.size and cfg.max_samples is not None:
            room = max((cfg.max_samples - result.samples) // step, 0)
            if room < todo.size:
                todo = np.sort(_order_by_closeness(todo, pvar, low, high, _cut(pvar, cfg.fraction))[:room])
        result.rounds.append({"round": len(rounds) - 1, "start": start, "prompts": int(active.sum()),
                              "samples": sampled, "undecided": int(todo.size)})
        if log:
            log(f"  round {len(rounds) - 1}: {sampled:,} samples on {int(active.sum())} prompts; "
                f"{todo.size} undecided")
        if not todo.size or step < 1:
            break
        active = np.zeros(len(ids), dtype=bool)
        active[todo] = True
        start, n_now = start + n_now, step
        nxt = folder / "next.parquet"  # the undecided rows (all with samples 0 .. start - 1)
        keep = measured.select([c for c in ("prompt_id", "prompt", "reference") if c in measured.column_names])
        with atomic_rows(nxt) as writer:
            writer.write(keep.take(pa.array(todo)).combine_chunks().to_batches()[0])
        todo_source = nxt
    with atomic_rows(result.measured) as writer:
        for rb in measured.to_batches():
            writer.write(rb)
    atomic_write_text(out / SUMMARY, json.dumps(result.to_dict(), indent=1))
    return result


def _reset_if_changed(out: Path, source: str | Path, gen: GenerateConfig, reward: RewardConfig,
                      cfg: AdaptiveConfig, shard_size: int) -> None:
    """Keep what a rerun can reuse: all rounds under the same settings, round 0 when only the stop
    rule changed (it samples every prompt the same way), nothing when sampling or scoring changed."""
    import shutil

    from pvar.fingerprint import source_fingerprint

    first = {"input": source_fingerprint(source), "generate": gen.model_copy(update={"n": cfg.n0}).fingerprint(),
             "reward": reward.fingerprint(), "shard_size": shard_size}
    settings = {"first": first, "rounds": cfg.fingerprint()}
    path = out / "settings.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    if old != settings and out.exists():
        for folder in sorted(out.glob("round-*")):
            if old is None or old.get("first") != first or folder.name != "round-00":
                shutil.rmtree(folder)
        (out / "measured.parquet").unlink(missing_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=1))


def _cut(pvar: np.ndarray, fraction: float) -> float:
    finite = pvar[np.isfinite(pvar)]
    k = budget(finite.size, fraction=fraction) if finite.size else 0
    return float(np.sort(finite)[::-1][k - 1]) if k else 0.0


__all__ = ["AdaptiveConfig", "AdaptiveResult", "run", "undecided"]
