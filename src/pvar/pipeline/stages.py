"""Run a sharded stage (generate, reward) by name on an engine, with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvar import reporting
from pvar.engines import run_stage
from pvar.engines.local import RunReport
from pvar.pipeline.generate import GenerateConfig, GenerateStage
from pvar.pipeline.reward import RewardConfig, RewardStage

STAGES: dict[str, tuple[type, tuple[str, ...]]] = {
    "generate": (GenerateStage, ("prompt_id", "prompt")),
    "reward": (RewardStage, ("prompt_id", "prompt", "responses")),
}

__all__ = ["STAGES", "GenerateConfig", "RewardConfig", "run"]


def run(name: str, cfg: Any, source: str | Path, output: str | Path, *, engine: str = "local",
        shard_size: int = 64, force: bool = False, ray_address: str | None = None,
        num_workers: int = 2, gpus_per_worker: float | None = None, cpus_per_worker: float = 1.0,
        show_progress: bool = True) -> RunReport:
    stage_cls, require = STAGES[name]
    stage = stage_cls(cfg)
    opts: dict[str, Any] = dict(engine=engine, shard_size=shard_size, require=require, force=force,
                                ray_address=ray_address, num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                                cpus_per_worker=cpus_per_worker)
    if not show_progress:
        return run_stage(stage, source, output, **opts)
    with reporting.progress(name, source) as tick:
        return run_stage(stage, source, output, tick=tick, **opts)
