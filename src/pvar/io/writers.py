"""Atomic outputs: rows go to a temp file beside the target, renamed into place only on success.

A failed or killed run therefore leaves either the previous output or none, never a partial one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pvar.errors import InputError
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
    """Writes record batches to JSONL or Parquet; the first batch fixes the schema."""

    def __init__(self, tmp: Path, kind: str) -> None:
        self.tmp, self.kind, self.rows = tmp, kind, 0
        self._schema: pa.Schema | None = None
        self._pq: pq.ParquetWriter | None = None
        self._fh: Any = open(tmp, "w", encoding="utf-8") if kind == "jsonl" else None  # noqa: SIM115 (closed in close)

    def write(self, batch: pa.RecordBatch) -> None:
        if self._schema is None:
            self._schema = batch.schema
        elif batch.schema != self._schema:
            batch = batch.cast(self._schema)
        if self.kind == "jsonl":
            lines = (json.dumps(r, ensure_ascii=False) for r in _nan_to_null(batch).to_pylist())
            self._fh.writelines(line + "\n" for line in lines)
        else:
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.tmp, self._schema)
            self._pq.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
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


def output_kind(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise InputError(str(path), f"unsupported output type '{suffix or '(none)'}' (use .jsonl or .parquet)")


@contextmanager
def atomic_rows(path: str | Path, schema: pa.Schema | None = None) -> Iterator[RowWriter]:
    """Yield a ``RowWriter`` on a temp file; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    kind = output_kind(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    writer = RowWriter(tmp, kind)
    if schema is not None:
        writer._schema = schema
    try:
        yield writer
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        if writer._fh is not None and not writer._fh.closed:
            writer._fh.close()
        if writer._pq is not None:
            writer._pq.close()
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
