"""Where a sharded stage runs, declared and checked once: the engine, the shard size, Ray's address and resources."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from pvar.config import StageConfig
from pvar.errors import ConfigError

RAY_ADDRESS = re.compile(r"^(auto|local|(ray://)?[\w.\-\[\]:]+:\d+)$")
FLAGS = {"ray_address": "ray-address", "gpus_per_worker": "gpus-per-worker", "cpus_per_worker": "cpus-per-worker",
         "shard_size": "shard_size", "workers": "workers", "engine": "engine"}  # how errors name the settings


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # YAML's yes/true is not a count
        raise ValueError("expected a number, not a yes/no value")
    return value


NoBool = BeforeValidator(_not_bool)


def _ray_address(value: str | None) -> str | None:
    if value is not None and not RAY_ADDRESS.match(value):
        raise ValueError("expected auto, local, HOST:PORT or ray://HOST:PORT")
    return value


class EngineConfig(StageConfig):
    """Where a sharded stage runs: this process, or a pool of Ray actors (each loads its model once)."""

    engine: Literal["local", "ray"] = Field("local", description="Engine of the sharded stages: local (this "
                                            "process) or ray (a Ray Data actor pool).")
    shard_size: Annotated[int, NoBool] = Field(64, ge=1, le=10_000_000,
                                               description="Prompts per shard: the unit of resuming.")
    ray_address: Annotated[str | None, AfterValidator(_ray_address)] = Field(
        None, description="engine ray: cluster address (auto, HOST:PORT, ray://HOST:PORT); None starts a local Ray.")
    workers: Annotated[int, NoBool] = Field(2, ge=1, le=4096,
                                            description="engine ray: actors per stage (each loads its model once).")
    gpus_per_worker: Annotated[float | None, NoBool] = Field(
        None, ge=0, le=1024, description="engine ray: GPUs per actor; None = what the stage needs (vllm: "
        "tensor_parallel_size, a cuda device: 1).")
    cpus_per_worker: Annotated[float, NoBool] = Field(1.0, ge=0, le=1024, description="engine ray: CPUs per actor.")

    @classmethod
    def unchecked(cls, values: dict[str, Any]) -> EngineConfig:
        """Values as given, left for :func:`pvar.engines.run_stage` to check (its errors name the setting)."""
        return cls.model_construct(**values)

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`pvar.pipeline.sharded.run` and :func:`run_stage` for this engine."""
        return {"engine": self.engine, "shard_size": self.shard_size, "ray_address": self.ray_address,
                "num_workers": self.workers, "gpus_per_worker": self.gpus_per_worker,
                "cpus_per_worker": self.cpus_per_worker}

    @classmethod
    def checked(cls, **values: Any) -> EngineConfig:
        """The settings, checked; an error names the setting as the command line spells it."""
        try:
            return cls.make(**values)
        except ConfigError as exc:
            key, _, msg = str(exc).partition(": ")
            raise ConfigError(f"{FLAGS.get(key, key)}: {msg.removeprefix('Value error, ')}") from None
