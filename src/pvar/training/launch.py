"""Training under ``accelerate launch``: one `train` call per process, from a JSON job file.

``pvar run`` with ``train.launcher: accelerate`` writes the job (pairs, output folder, the
TrainConfig, the reference cache) and starts::

    python -m accelerate.commands.launch [--config_file FILE] [--num_processes N] \\
        -m pvar.pipeline.train JOB.json

``pvar.pipeline.train``'s ``main`` reads the job. Every process builds the same trainer
(accelerate shards the batches: DDP, FSDP or ZeRO-3 as the config file says); only the main
process writes the checkpoint, the log, the reference cache and ``JOB.result.json``, which the
runner reads back. ``launch_command`` builds that command line.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

CONFIGS = ("ddp", "fsdp", "zero3")


def accelerate_config(name: str) -> Path:
    """A shipped accelerate config by name (ddp, fsdp, zero3), or a path to one of the user's."""
    if name in CONFIGS:
        return Path(str(resources.files("pvar") / "accelerate_configs" / f"{name}.yaml"))
    path = Path(name)
    if not path.is_file():
        from pvar.errors import ConfigError

        raise ConfigError(f"train.accelerate_config: no such file {name!r} (or use one of {', '.join(CONFIGS)})")
    return path


def launch_command(job: Path, *, config: str | None, num_processes: int | None,
                   extra: tuple[str, ...] = ()) -> list[str]:
    """The ``accelerate launch`` command line that runs ``job`` (see the module docstring)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config:
        cmd += ["--config_file", str(accelerate_config(config))]
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    return [*cmd, *extra, "-m", "pvar.pipeline.train", str(job)]


def write_job(path: Path, pairs: Path, out: Path, cfg: Any, ref_cache: Path | None) -> None:
    from pvar.io.writers import atomic_write_text

    atomic_write_text(path, json.dumps({"pairs": str(pairs), "out": str(out), "config": cfg.model_dump(mode="json"),
                                        "ref_cache": None if ref_cache is None else str(ref_cache)}, indent=2))


def result_path(job: Path) -> Path:
    return job.with_name(job.stem + ".result.json")
