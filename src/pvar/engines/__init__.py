"""Where a stage runs: ``local`` (in process) or ``ray`` (Ray Data actor pool), same shards, same output."""

from __future__ import annotations

from pathlib import Path

from pvar.engines.base import Stage, Tick
from pvar.engines.local import RunReport, run_local

ENGINES = ("local", "ray")


def run_stage(
    stage: Stage,
    source: str | Path,
    output: str | Path,
    *,
    engine: str = "local",
    shard_size: int = 64,
    require: tuple[str, ...] = ("prompt_id", "prompt"),
    force: bool = False,
    tick: Tick | None = None,
    ray_address: str | None = None,
    num_workers: int = 2,
) -> RunReport:
    """Run a stage on the chosen engine; both produce the same shards and manifest."""
    if engine == "ray":
        from pvar.engines.ray import run_ray

        return run_ray(stage, source, output, shard_size=shard_size, require=require, force=force,
                       tick=tick, address=ray_address, num_workers=num_workers)
    return run_local(stage, source, output, shard_size=shard_size, require=require, force=force, tick=tick)
