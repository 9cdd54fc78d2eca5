"""score: generate -> reward -> measure for any prompt set, the one chain every caller runs.

The pool's scoring in ``pvar run``, adaptive sampling's rounds, iterative rounds and the
diagnostics' fresh samples all go through :func:`score`, so each runs the same sharded path:
resumable shard by shard, on the configured engine (local or Ray) and device. Each part reads the
previous part's output, or ``source`` when it is the first part asked for; a caller that records
parts separately (``pvar run``'s ledger) asks for one part at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvar.errors import ResumeMismatch
from pvar.pipeline import measure, sharded
from pvar.pipeline.generate import GenerateConfig
from pvar.pipeline.reward import RewardConfig

PARTS = ("generate", "reward", "measure")


@dataclass(frozen=True)
class ScoredPaths:
    """Where a scoring writes: ``generate/`` and ``reward/`` shards, then the measured rows."""

    root: Path
    measured_name: str = "measured.parquet"

    @property
    def generated(self) -> Path:
        return self.root / "generate"

    @property
    def rewarded(self) -> Path:
        return self.root / "reward"

    @property
    def measured(self) -> Path:
        return self.root / self.measured_name


def score(source: str | Path, out: str | Path | ScoredPaths, gen: GenerateConfig | None = None,
          rew: RewardConfig | None = None, mcfg: measure.MeasureConfig | None = None, *,
          parts: Sequence[str] = PARTS, engine: str = "local", shard_size: int = 64, force: bool = False,
          restart_changed: bool = False, show_progress: bool = True,
          progress: Callable[[int], None] | None = None, **engine_opts: Any) -> dict[str, dict[str, Any]]:
    """Run ``parts`` of the chain on ``source`` into ``out``; returns each part's counters.

    ``force`` discards any earlier output; ``restart_changed`` discards only output made with other
    settings (for derived folders nobody else reads, such as a diagnostic's fresh samples), where
    the default refuses it with a one-line error.
    """
    paths = out if isinstance(out, ScoredPaths) else ScoredPaths(Path(out))
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"score: unknown part(s) {', '.join(unknown)} (known: {', '.join(PARTS)})")
    done: dict[str, dict[str, Any]] = {}
    reads: str | Path = source
    opts = dict(engine=engine, shard_size=shard_size, show_progress=show_progress, **engine_opts)
    for part in PARTS:
        if part not in parts:
            continue
        if part == "measure":
            if mcfg is None:
                raise ValueError("score: the measure part needs a MeasureConfig")
            pool = measure.run(reads, paths.measured, mcfg, progress)
            done[part] = {"prompts": pool.n_prompts}
            reads = paths.measured
            continue
        cfg, written = (gen, paths.generated) if part == "generate" else (rew, paths.rewarded)
        if cfg is None:
            raise ValueError(f"score: the {part} part needs its config")
        try:
            rep = sharded.run(part, cfg, reads, written, force=force, **opts)
        except ResumeMismatch:
            if not restart_changed:
                raise
            rep = sharded.run(part, cfg, reads, written, force=True, **opts)
        done[part] = {"shards": rep.shards, "shards_run": rep.shards_run, "rows": rep.rows, **rep.counters}
        reads = written
    return done
