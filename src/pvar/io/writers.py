"""Atomic outputs: rows go to a temp file beside the target, renamed into place only on success.

A failed or killed run therefore leaves either the previous output or none, never a partial one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pvar.errors import InputError
from pvar.io.paths import temp_path
from pvar.io.readers import JSONL_SUFFIXES, PARQUET_SUFFIXES


def _nan_to_null(batch: pa.RecordBatch) -> pa.RecordBatch:
    """JSON has no NaN: store NaN floats as null (which reads back as NaN)."""
    cols = []
    for col in batch.columns:
        if pa.types.is_floating(col.type):
            col = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, schema=batch.schema)


class RowWriter:
    """Writes record batches to JSONL or Parquet; the first batch fixes the schema.

    Nothing touches the disk before the first ``write`` (or ``close``): an input that fails
    validation in its first batch leaves no folder and no temp file.
    """

    def __init__(self, tmp: Path, kind: str) -> None:
        self.tmp, self.kind, self.rows = tmp, kind, 0
        self._schema: pa.Schema | None = None
        self._pq: pq.ParquetWriter | None = None
        self._fh: Any = None
        self.made: list[Path] = []  # folders created for the output, removed again on failure

    def _open(self) -> None:
        folder = self.tmp.parent
        if not folder.exists():
            self.made = [p for p in (folder, *folder.parents) if not p.exists()]
            folder.mkdir(parents=True, exist_ok=True)
        if self.kind == "jsonl" and self._fh is None:
            self._fh = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed in close)

    def write(self, batch: pa.RecordBatch) -> None:
        if self._schema is None:
            self._schema = batch.schema
        elif batch.schema != self._schema:
            batch = batch.cast(self._schema)
        self._open()
        if self.kind == "jsonl":
            lines = (json.dumps(r, ensure_ascii=False) for r in _nan_to_null(batch).to_pylist())
            self._fh.writelines(line + "\n" for line in lines)
        else:
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.tmp, self._schema)
            self._pq.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        self._open()
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        elif self._pq is not None:
            self._pq.close()
        elif self._schema is None:
            self._schema = pa.schema([])
        if self.kind == "parquet" and self._pq is None:  # no rows: still a valid, empty file
            pq.write_table(pa.Table.from_batches([], schema=self._schema), self.tmp)

    def discard(self) -> None:
        """Close quietly (a full disk may fail the flush again) and remove what was created."""
        with suppress(Exception):
            if self._fh is not None and not self._fh.closed:
                self._fh.close()
        with suppress(Exception):
            if self._pq is not None:
                self._pq.close()
        self.tmp.unlink(missing_ok=True)
        for folder in self.made:  # innermost first
            with suppress(OSError):
                folder.rmdir()


class MemorySink:
    """An output kept in memory (the notebook API): batches as a file writer would write them
    (NaN as null), read back as one table."""

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        for rb in (batch.to_batches() if isinstance(batch, pa.Table) else [batch]):
            if rb.num_rows:
                self.batches.append(_nan_to_null(rb))

    def table(self) -> pa.Table:
        if not self.batches:
            return pa.table({})
        return pa.concat_tables([pa.Table.from_batches([b]) for b in self.batches], promote_options="default")


@contextmanager
def open_output(output: str | Path | MemorySink) -> Iterator[RowWriter | MemorySink]:
    """``atomic_rows(output)`` for a path; a `MemorySink` as is."""
    if isinstance(output, MemorySink):
        yield output
        return
    with atomic_rows(output) as writer:
        yield writer


def output_kind(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise InputError(str(path), f"unsupported output type '{suffix or '(none)'}' (use .jsonl or .parquet)")


class OutputError(InputError):
    """Writing an output failed (full disk, no permission): names the file."""


def _write_failed(path: Path, exc: OSError) -> OutputError:
    return OutputError(str(path), f"cannot write ({exc.strerror or exc})")


@contextmanager
def atomic_rows(path: str | Path, schema: pa.Schema | None = None) -> Iterator[RowWriter]:
    """Yield a ``RowWriter`` on a temp file; rename it to ``path`` only if the block succeeds.

    The temp file is removed on every failure, including one while closing it (a full disk
    fails the final flush); a write error names ``path``.
    """
    path = Path(path)
    kind = output_kind(path)
    writer = RowWriter(temp_path(path), kind)
    if schema is not None:
        writer._schema = schema
    try:
        yield writer
        writer.close()
        os.replace(writer.tmp, path)
    except BaseException as exc:
        writer.discard()
        if isinstance(exc, OSError):
            raise _write_failed(path, exc) from None
        raise


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write by any means; renamed into place on success.

    The temp file is removed on every failure; a write error names ``path``.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _write_failed(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside ``path`` to fill; on success it replaces ``path`` (an old one goes).

    A reader sees the old folder or the whole new one, never a half-written one; the temp folder
    is removed on every failure.
    """
    import shutil

    path = Path(path)
    tmp = temp_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_failed(path, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename; no temp file survives a failure."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
