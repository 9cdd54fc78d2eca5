"""The local engine: runs a stage shard by shard in this process, resumably."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pvar.engines.base import Stage, Tick, describe, process_shard
from pvar.engines.shards import Layout, Manifest, assemble, iter_input_shards, write_shard
from pvar.fingerprint import source_fingerprint


@dataclass
class RunReport:
    """What a sharded run did: shards computed now vs found done, rows, and stage counters."""

    output: str
    shards: int = 0
    shards_run: int = 0
    rows: int = 0
    seconds: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)


def identity(stage: Stage, source: str | Path, shard_size: int) -> dict:
    """What a stage folder was made from; resuming requires every entry to match."""
    return {**describe(stage), "input": source_fingerprint(source), "shard_size": shard_size}


def run_local(
    stage: Stage,
    source: str | Path,
    output: str | Path,
    *,
    shard_size: int,
    require: tuple[str, ...] = ("prompt_id", "prompt"),
    force: bool = False,
    tick: Tick | None = None,
) -> RunReport:
    """Run ``stage`` over ``source`` into ``output``; finished shards of an earlier run are kept.

    The model is loaded (``stage.setup()``) only if some shard still needs work.
    """
    layout = Layout.for_output(output)
    manifest = Manifest.open(layout.shard_dir, identity(stage, source, shard_size), force=force)
    report = RunReport(str(output))
    ready = False
    start = time.perf_counter()
    for k, table in iter_input_shards(source, shard_size, require):
        report.shards += 1
        report.rows += table.num_rows
        if manifest.done(k):
            if tick:
                tick(table.num_rows, {})
            continue
        if not ready:
            stage.setup()
            ready = True
        t0 = time.perf_counter()
        out = process_shard(stage, table, tick)
        write_shard(layout.shard_dir, k, out)
        manifest.commit(k, out.num_rows, {"seconds": round(time.perf_counter() - t0, 3)})
        report.shards_run += 1
    manifest.finish(report.shards)
    assemble(layout)
    report.seconds = time.perf_counter() - start
    report.counters = stage.counters() if ready else {}
    return report
