"""Run a sharded stage (generate, reward) by name on an engine, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvar.engines.config import EngineConfig
from pvar.engines.local import RunReport
from pvar.pipeline import generate, reward
from pvar.pipeline.generate import GenerateConfig
from pvar.pipeline.reward import RewardConfig

STAGES: dict[str, Callable[..., RunReport]] = {"generate": generate.run, "reward": reward.run}

__all__ = ["STAGES", "EngineConfig", "GenerateConfig", "RewardConfig", "run"]


def run(name: str, cfg: Any, source: str | Path, output: str | Path, *, engine: str = "local",
        shard_size: int = 64, force: bool = False, ray_address: str | None = None,
        num_workers: int = 2, gpus_per_worker: float | None = None, cpus_per_worker: float = 1.0,
        show_progress: bool = True) -> RunReport:
    """The sharded verb ``name`` (generate or reward), by name: what the runner and adaptive sampling call."""
    return STAGES[name](source, output, cfg, engine=engine, shard_size=shard_size, force=force,
                        ray_address=ray_address, num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                        cpus_per_worker=cpus_per_worker, show_progress=show_progress)
