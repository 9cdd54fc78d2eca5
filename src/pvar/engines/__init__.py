"""Where a stage runs: ``local`` (in process) or ``ray`` (Ray Data actor pool), same shards, same output."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pvar.engines.base import Stage, Tick
from pvar.engines.local import RunReport, run_local
from pvar.engines.shards import Layout, guarded_output, validate_source
from pvar.errors import ConfigError
from pvar.io.paths import check_output

ENGINES = ("local", "ray")
_RAY_ADDRESS = re.compile(r"^(auto|local|(ray://)?[\w.\-\[\]:]+:\d+)$")


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
    if engine not in ENGINES:
        raise ConfigError(f"engine: unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigError(f"shard_size: must be an integer >= 1, got {shard_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ConfigError(f"workers: must be an integer >= 1, got {num_workers!r}")
    for name, value in (("gpus-per-worker", gpus_per_worker), ("cpus-per-worker", cpus_per_worker)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not 0 <= value <= 1024 or value != value):
            raise ConfigError(f"{name}: must be a number in [0, 1024], got {value!r}")
    if ray_address is not None and not _RAY_ADDRESS.match(ray_address):
        raise ConfigError(f"ray-address: expected auto, local, HOST:PORT or ray://HOST:PORT, got {ray_address!r}")
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
