"""Where a stage runs: ``local`` (in process) or ``ray`` (Ray Data actor pool), same shards, same output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvar.engines.base import Stage, Tick
from pvar.engines.config import EngineConfig
from pvar.engines.local import RunReport, run_local
from pvar.engines.shards import Layout, guarded_output, validate_source
from pvar.io.paths import check_output

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
    gpus_per_worker: float | None = None,
    cpus_per_worker: float = 1.0,
) -> RunReport:
    """Run a stage on the chosen engine; both produce the same shards and manifest.

    Before any output exists: the settings are range-checked, the output must not be the input,
    and the whole input is read and validated. Then the output is locked (a second process waits
    and resumes from the first one's shards) and the engine runs.
    """
    EngineConfig.checked(engine=engine, shard_size=shard_size, ray_address=ray_address, workers=num_workers,
                         gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker)
    layout = Layout.for_output(output)
    check_output(source, output, layout.shard_dir)
    require = getattr(stage, "require", require)  # a stage may need more columns than its kind does
    validate_source(source, require, getattr(stage, "check_batch", None))
    with guarded_output(layout):
        if engine == "ray":
            from pvar.engines.ray import run_ray

            return run_ray(stage, source, output, shard_size=shard_size, require=require, force=force,
                           tick=tick, address=ray_address, num_workers=num_workers,
                           gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker)
        return run_local(stage, source, output, shard_size=shard_size, require=require, force=force, tick=tick)


def run_shown(stage: Stage, source: str | Path, output: str | Path, *, show_progress: bool = True,
              **opts: Any) -> RunReport:
    """:func:`run_stage` inside one progress display named for the stage (silent without a reporter)."""
    from pvar import status

    if not show_progress:
        return run_stage(stage, source, output, **opts)
    with status.progress(stage.name, source) as tick:
        return run_stage(stage, source, output, tick=tick, **opts)
