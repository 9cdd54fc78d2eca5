"""The stage contract the engines run, and the one shard-processing routine both engines share.

A stage is a small object: a frozen config, ``setup()`` (loads models once per worker) and
``__call__(table) -> table`` over Arrow tables of prompt rows. Engines never import pipeline
modules: stages are handed to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pyarrow as pa


class Stage(Protocol):
    name: str
    config: Any  # a pvar.config.StageConfig: hashed into the manifest
    chunk_rows: int  # rows per call inside a shard (fixes batch composition for every engine)

    def setup(self) -> None: ...

    def __call__(self, table: pa.Table) -> pa.Table: ...

    def counters(self) -> dict[str, int]:
        """Running totals for progress and summaries (e.g. tokens generated, inputs truncated)."""
        ...


Tick = Callable[[int, dict[str, int]], None]


def process_shard(stage: Stage, table: pa.Table, tick: Tick | None = None) -> pa.Table:
    """Run ``stage`` over one shard in chunks of ``stage.chunk_rows`` rows.

    Every engine goes through here, so a shard is always cut into the same chunks and a batched
    model sees the same batches, whichever engine runs it.
    """
    step = max(1, int(stage.chunk_rows))
    outs = []
    for start in range(0, table.num_rows, step):
        part = table.slice(start, step)
        outs.append(stage(part))
        if tick:
            tick(part.num_rows, stage.counters())
    return pa.concat_tables(outs).combine_chunks() if outs else table


def describe(stage: Stage) -> dict[str, Any]:
    """The stage and its config, plus ``stage.rules_version`` where a stage has one (a gold reward's
    task rules): a folder scored under older rules then fails to resume instead of being mixed."""
    out = {"stage": stage.name, "config": stage.config.model_dump(mode="json")}
    version = getattr(stage, "rules_version", None)
    return {**out, "rules_version": version} if version else out
