"""Shard bookkeeping shared by the engines: layout, manifest, resumable commits.

A stage's output is a folder of ``shard-00000.parquet``, ... of ``shard_size`` input rows each,
plus ``_manifest.json``. A shard is written to a temp name and renamed, and only then entered in
the manifest (itself replaced atomically), so a killed run leaves every shard either complete and
listed, or unlisted and redone: nothing lost, nothing duplicated. The manifest records the stage
config, the input's fingerprint and the shard size; resuming into an output made differently is
refused (``--force`` starts over). An output path ending in .parquet/.jsonl gets its shards in a
hidden folder beside it and is assembled from them at the end.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pvar.errors import ResumeMismatch
from pvar.io.paths import file_lock, refuse_foreign, remove_stale_temps
from pvar.io.readers import JSONL_SUFFIXES, MANIFEST, PARQUET_SUFFIXES, Batch, read_manifest, shard_files
from pvar.io.rows import read_rows
from pvar.io.writers import atomic_file, atomic_rows, atomic_write_text

MANIFEST_VERSION = 1


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.parquet"


@dataclass
class Layout:
    """Where shards go and what (if anything) is assembled from them."""

    shard_dir: Path
    final: Path | None  # a single .parquet/.jsonl file assembled at the end

    @property
    def lock(self) -> Path:
        """Held while a process writes this output: beside it, hidden."""
        target = self.final or self.shard_dir
        return target.parent / f".{target.name}.lock"

    @classmethod
    def for_output(cls, output: str | Path) -> Layout:
        out = Path(output)
        if out.suffix.lower() in JSONL_SUFFIXES + PARQUET_SUFFIXES:
            return cls(out.parent / f".{out.name}.shards", out)
        return cls(out, None)


class Manifest:
    """The stage folder's ``_manifest.json``: identity of the run plus the shards committed."""

    def __init__(self, shard_dir: Path, identity: dict[str, Any]) -> None:
        self.path = shard_dir / MANIFEST
        self.identity = identity
        self.shards: dict[str, dict[str, Any]] = {}

    @classmethod
    def open(cls, shard_dir: Path, identity: dict[str, Any], *, force: bool) -> Manifest:
        """Load an existing manifest for resuming, refusing one made with another identity."""
        m = cls(shard_dir, identity)
        if m.path.exists() and not force:
            old = read_manifest(shard_dir)
            diff = [k for k in identity if old.get(k) != identity[k]]
            if diff:
                raise ResumeMismatch(
                    f"{shard_dir}: existing output was made with a different {', '.join(diff)}; "
                    "use --force to discard it and start over, or choose another output"
                )
            m.shards = {k: v for k, v in old.get("shards", {}).items() if (shard_dir / v["file"]).exists()}
        elif shard_dir.exists() and force:
            shutil.rmtree(shard_dir)
        shard_dir.mkdir(parents=True, exist_ok=True)
        m.save()
        return m

    def done(self, k: int) -> bool:
        return f"{k:05d}" in self.shards

    def commit(self, k: int, rows: int, info: dict[str, Any] | None = None) -> None:
        self.shards[f"{k:05d}"] = {"file": shard_name(k), "rows": rows, **(info or {})}
        self.save()

    def finish(self, n_shards: int) -> None:
        self.identity = {**self.identity, "n_shards": n_shards}
        self.save(complete=True)

    def save(self, complete: bool = False) -> None:
        body = {"version": MANIFEST_VERSION, **self.identity, "complete": complete,
                "shards": dict(sorted(self.shards.items()))}
        atomic_write_text(self.path, json.dumps(body, indent=1))


def validate_source(source: str | Path, require: tuple[str, ...],
                    check: Callable[[Batch], None] | None = None) -> int:
    """Read and check the whole input once, before any output exists; returns its row count.

    ``check`` adds the stage's own checks (a reward's column or references). A bad row near the end
    of a large input then fails in seconds instead of after hours of sampling, and a refused input
    leaves nothing behind.
    """
    rows = 0
    for batch in read_rows(source, require=require, batch_size=65536):
        if check is not None:
            check(batch)
        rows += batch.data.num_rows
    return rows


@contextmanager
def guarded_output(layout: Layout) -> Iterator[None]:
    """One writer at a time; leftovers of killed writers removed; a failed fresh start leaves nothing.

    Temp files in the stage folder and beside the assembled file can only be a killed run's while
    we hold the lock, so they are deleted. If this run created the stage folder and fails before
    committing a shard, the folder is removed again (an error must not leave an empty output).
    """
    with file_lock(layout.lock, str(layout.final or layout.shard_dir)):
        # Under the lock: a second identical command started at the same moment must see the first one's
        # finished output, not its half-made folder (which has no manifest yet).
        refuse_foreign(layout.shard_dir, MANIFEST, "a pvar stage output")
        for folder in (layout.shard_dir, layout.shard_dir / "_input"):
            remove_stale_temps(folder)
        if layout.final is not None:
            remove_stale_temps(layout.final.parent, layout.final.name)
        fresh = not layout.shard_dir.exists()
        try:
            yield
        except BaseException:
            if fresh and layout.shard_dir.exists() and not _committed(layout.shard_dir):
                shutil.rmtree(layout.shard_dir, ignore_errors=True)
            raise


def _committed(shard_dir: Path) -> bool:
    try:
        return bool(json.loads((shard_dir / MANIFEST).read_text()).get("shards"))
    except (OSError, ValueError):
        return False


def write_shard(shard_dir: Path, k: int, table: pa.Table) -> int:
    """Write one shard atomically (temp + rename); returns its row count."""
    with atomic_file(shard_dir / shard_name(k)) as tmp:
        pq.write_table(table, tmp)
    return table.num_rows


def iter_input_shards(
    source: str | Path, shard_size: int, require: tuple[str, ...]
) -> Iterator[tuple[int, pa.Table]]:
    """Validated input rows cut into consecutive shards of ``shard_size`` rows."""
    buf: list[pa.RecordBatch] = []
    held = k = 0
    for batch in read_rows(source, require=require, batch_size=max(shard_size, 1024)):
        data = batch.data
        while data.num_rows:
            take = min(shard_size - held, data.num_rows)
            buf.append(data.slice(0, take))
            held += take
            data = data.slice(take)
            if held == shard_size:
                yield k, pa.Table.from_batches(buf)
                buf, held, k = [], 0, k + 1
    if held:
        yield k, pa.Table.from_batches(buf)


def assemble(layout: Layout) -> None:
    """Concatenate the shards into the single output file (atomic), in shard order."""
    if layout.final is None:
        return
    with atomic_rows(layout.final) as writer:
        for f in shard_files(layout.shard_dir):
            for rb in pq.ParquetFile(f).iter_batches():
                writer.write(rb)
