"""Run a sharded stage (generate, reward) by name on an engine, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pvar.config import StageConfig
from pvar.engines.local import RunReport
from pvar.pipeline import generate, reward
from pvar.pipeline.generate import GenerateConfig
from pvar.pipeline.reward import RewardConfig

STAGES: dict[str, Callable[..., RunReport]] = {"generate": generate.run, "reward": reward.run}

__all__ = ["STAGES", "EngineConfig", "GenerateConfig", "RewardConfig", "run"]


class EngineConfig(StageConfig):
    """Where a sharded stage runs: this process, or a pool of Ray actors (each loads its model once)."""

    engine: Literal["local", "ray"] = Field("local", description="Engine of the sharded stages: local (this "
                                            "process) or ray (a Ray Data actor pool).")
    shard_size: int = Field(64, ge=1, le=10_000_000, description="Prompts per shard: the unit of resuming.")
    ray_address: str | None = Field(None, pattern=r"^(auto|local|(ray://)?[\w.\-\[\]:]+:\d+)$",
                                    description="engine ray: cluster address (auto, HOST:PORT, ray://HOST:PORT); "
                                    "None starts a local Ray.")
    workers: int = Field(2, ge=1, le=4096, description="engine ray: actors per stage (each loads its model once).")
    gpus_per_worker: float | None = Field(None, ge=0, le=1024, description="engine ray: GPUs per actor; None = "
                                          "what the stage needs (vllm: tensor_parallel_size, a cuda device: 1).")
    cpus_per_worker: float = Field(1.0, ge=0, le=1024, description="engine ray: CPUs per actor.")

    @classmethod
    def unchecked(cls, values: dict[str, Any]) -> EngineConfig:
        """Values as given, left for :func:`pvar.engines.run_stage` to check (its errors name the setting)."""
        return cls.model_construct(**values)

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`run` (and of adaptive sampling) for this engine."""
        return {"engine": self.engine, "shard_size": self.shard_size, "ray_address": self.ray_address,
                "num_workers": self.workers, "gpus_per_worker": self.gpus_per_worker,
                "cpus_per_worker": self.cpus_per_worker}


def run(name: str, cfg: Any, source: str | Path, output: str | Path, *, engine: str = "local",
        shard_size: int = 64, force: bool = False, ray_address: str | None = None,
        num_workers: int = 2, gpus_per_worker: float | None = None, cpus_per_worker: float = 1.0,
        show_progress: bool = True) -> RunReport:
    """The sharded verb ``name`` (generate or reward), by name: what the runner and adaptive sampling call."""
    return STAGES[name](source, output, cfg, engine=engine, shard_size=shard_size, force=force,
                        ray_address=ray_address, num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                        cpus_per_worker=cpus_per_worker, show_progress=show_progress)
