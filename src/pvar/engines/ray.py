"""The Ray engine: the same stage, shards and manifest as ``local``, run by a Ray Data actor pool.

The driver stages each pending input shard as Parquet in the output folder (shared storage on a
cluster). Ray Data maps shard indices through an actor pool (``map_batches`` with
``ActorPoolStrategy``): each actor builds the stage once (``setup()`` loads the model once per
actor), reads its shard, runs it through the same ``process_shard`` as the local engine, and
commits the output shard atomically. The driver enters each finished shard in the manifest as it
streams back, so a killed run resumes exactly like a local one.

Cluster use: start Ray on the nodes (``ray start --head`` / ``ray start --address=HEAD:6379``),
put the run folder on storage every node sees, and pass ``--engine ray --ray-address HEAD:6379``.

Resources: each actor asks Ray for ``gpus_per_worker`` GPUs and ``cpus_per_worker`` CPUs
(``map_batches(num_gpus=, num_cpus=)``). Ray sets an actor's ``CUDA_VISIBLE_DEVICES`` to the GPUs
it was granted, and to *nothing* when it asked for none
(ray/_private/accelerators/nvidia_gpu.py ``set_current_process_visible_accelerator_ids``), so a
GPU stage must ask. By default a stage asks for what its config implies: a vLLM engine its
``tensor_parallel_size`` (one engine per actor, sharded over the GPUs the actor sees: outside a
placement group vLLM runs its tensor-parallel workers as local processes when the node has the
GPUs, per vLLM's distributed-serving docs), a CUDA device one GPU, anything else none.

A node that dies mid-shard loses only that shard: outputs are committed per shard by an atomic
rename and entered in the manifest by the driver after they land, so the shard is redone on the
next run (or by Ray's actor restart) and never counted twice.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pvar.engines.base import Stage, Tick, process_shard
from pvar.engines.local import RunReport, identity
from pvar.engines.shards import Layout, Manifest, assemble, iter_input_shards, write_shard
from pvar.io.writers import atomic_file

STAGED = "_input"


class _ShardWorker:
    """One per actor: holds a ready stage and turns staged input shards into output shards."""

    def __init__(self, stage: Stage, shard_dir: str) -> None:
        self.stage = stage
        self.stage.setup()
        self.shard_dir = Path(shard_dir)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        shards, rows, seconds, tokens = [], [], [], []
        for k in batch["shard"]:
            k = int(k)
            t0 = time.perf_counter()
            table = pq.read_table(self.shard_dir / STAGED / f"{k:05d}.parquet")
            before = self.stage.counters().get("tokens", 0)
            out = process_shard(self.stage, table)
            rows.append(write_shard(self.shard_dir, k, out))
            shards.append(k)
            seconds.append(round(time.perf_counter() - t0, 3))
            tokens.append(self.stage.counters().get("tokens", 0) - before)
        return {"shard": shards, "rows": rows, "seconds": seconds, "tokens": tokens}


def stage_gpus(stage: Stage) -> float:
    """GPUs one actor of this stage needs: a vLLM engine's tensor-parallel size, 1 for a CUDA device, else 0."""
    cfg = getattr(stage, "config", None)
    if getattr(cfg, "backend", None) == "vllm":
        return float(getattr(cfg, "tensor_parallel_size", 1))
    return 1.0 if str(getattr(cfg, "device", "cpu")).startswith("cuda") else 0.0


def actor_resources(stage: Stage, gpus_per_worker: float | None, cpus_per_worker: float) -> dict[str, float]:
    """The ``num_gpus`` / ``num_cpus`` each actor of the pool requests from Ray."""
    gpus = stage_gpus(stage) if gpus_per_worker is None else float(gpus_per_worker)
    return {"num_gpus": gpus, "num_cpus": float(cpus_per_worker)}


def _stage_inputs(source: str | Path, shard_size: int, require: tuple[str, ...], manifest: Manifest,
                  staged: Path, tick: Tick | None) -> tuple[list[int], int, int]:
    """Write each pending input shard to ``staged``; returns (pending, total shards, total rows)."""
    staged.mkdir(parents=True, exist_ok=True)
    pending, n_shards, n_rows = [], 0, 0
    for k, table in iter_input_shards(source, shard_size, require):
        n_shards, n_rows = k + 1, n_rows + table.num_rows
        if manifest.done(k):
            if tick:
                tick(table.num_rows, {})
            continue
        with atomic_file(staged / f"{k:05d}.parquet") as tmp:
            pq.write_table(table, tmp)
        pending.append(k)
    return pending, n_shards, n_rows


def run_ray(
    stage: Stage,
    source: str | Path,
    output: str | Path,
    *,
    shard_size: int,
    require: tuple[str, ...] = ("prompt_id", "prompt"),
    force: bool = False,
    tick: Tick | None = None,
    address: str | None = None,
    num_workers: int = 2,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float = 1.0,
) -> RunReport:
    try:
        import ray
    except ImportError:
        from pvar.errors import ConfigError

        raise ConfigError("engine ray needs Ray Data: pip install 'pvar[ray]'") from None
    layout = Layout.for_output(output)
    manifest = Manifest.open(layout.shard_dir, identity(stage, source, shard_size), force=force)
    report = RunReport(str(output))
    start = time.perf_counter()
    staged = layout.shard_dir / STAGED
    pending, report.shards, report.rows = _stage_inputs(source, shard_size, require, manifest, staged, tick)
    tokens = 0
    if pending:
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, **({} if address else {"num_cpus": max(2, num_workers)}))
            except (ConnectionError, ValueError, RuntimeError) as exc:
                from pvar.errors import ConfigError, one_line

                raise ConfigError(f"ray-address: cannot start or reach Ray at {address or 'a local instance'!r} "
                                  f"({one_line(exc, 160)})") from None
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours is on the driver
        ds = ray.data.from_items([{"shard": k} for k in pending], override_num_blocks=len(pending))
        done = ds.map_batches(
            _ShardWorker, fn_constructor_args=(stage, str(layout.shard_dir)), batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=max(1, min(num_workers, len(pending)))),
            **actor_resources(stage, gpus_per_worker, cpus_per_worker),
        )
        sizes = {k: pq.ParquetFile(staged / f"{k:05d}.parquet").metadata.num_rows for k in pending}
        for row in done.iter_rows():  # streams: each shard enters the manifest as soon as it lands
            k = int(row["shard"])
            manifest.commit(k, int(row["rows"]), {"seconds": float(row["seconds"])})
            tokens += int(row["tokens"])
            report.shards_run += 1
            if tick:
                tick(sizes[k], {"tokens": tokens})
    manifest.finish(report.shards)
    for f in staged.glob("*.parquet"):
        f.unlink()
    staged.rmdir()
    assemble(layout)
    report.seconds = time.perf_counter() - start
    report.counters = {"tokens": tokens} if tokens else {}
    return report
