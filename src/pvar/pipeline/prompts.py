"""prompts: write prompt rows (with reference answers) from a built-in offline source."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import Field

from pvar.config import Seed, StageConfig
from pvar.errors import ConfigError
from pvar.io.writers import atomic_rows

SOURCES = ("sharegpt",)


class PromptSetConfig(StageConfig):
    count: int = Field(64, ge=1, le=10_000_000, description="Number of prompts.")
    split: Literal["pool", "eval"] = Field("pool", description="pool (for selection) or eval (held out; never "
                                           "overlaps the pool).")
    seed: Seed = Field(0, description="Which prompts of the split to take.")
    task: str | None = Field(None, description="Attach a verifiable task family (pvar.tasks: ifeval, format, "
                             "phrase, graded) to each prompt; the reference then holds its spec for the gold reward.")


def run(source: str, output: str | Path, cfg: PromptSetConfig) -> int:
    """The verb: ``cfg.count`` prompts of ``source`` written to ``output``; returns how many."""
    return write_prompts(source, output, count=cfg.count, split=cfg.split, seed=cfg.seed, task=cfg.task)


def write_prompts(source: str, output: str | Path, *, count: int, split: str = "pool", seed: int = 0,
                  task: str | None = None) -> int:
    """Write ``count`` prompts of ``split`` (pool and eval never overlap) atomically; returns the count.

    ``task`` (a family of :mod:`pvar.tasks`) attaches verifiable instructions to each prompt; the
    row's ``reference`` then holds the task spec its gold scorer reads, instead of an answer.
    """
    if source not in SOURCES:
        raise ConfigError(f"source: unknown prompt source {source!r}; choose one of {', '.join(SOURCES)}")
    if split not in ("pool", "eval"):
        raise ConfigError(f"split: must be pool or eval, got {split!r}")
    if count < 1:
        raise ConfigError(f"count: must be >= 1, got {count}")
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed: must be in [0, 2**32), got {seed}")
    from pvar.io.sharegpt import sharegpt_prompts

    try:
        rows = sharegpt_prompts(count, split, seed)
    except ValueError as exc:
        raise ConfigError(f"count: {exc}") from None
    if task is not None:
        from pvar.tasks import FAMILIES, task_rows

        if task not in FAMILIES:
            raise ConfigError(f"task: unknown task family {task!r}; choose one of {', '.join(FAMILIES)}")
        rows = task_rows(task, rows, seed)
    with atomic_rows(output) as writer:
        writer.write(pa.RecordBatch.from_pylist(rows))
    return len(rows)
