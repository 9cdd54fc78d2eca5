"""Stream rows from JSONL, Parquet or a Hugging Face ``datasets`` folder/name, in Arrow batches.

Every batch carries where its rows came from, so a bad row is reported by file and line (JSONL)
or row number (Parquet, datasets), both 1-based. Parquet is read in record batches, so a
1M-prompt pool never has to fit in Python objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pvar.errors import InputError

JSONL_SUFFIXES = (".jsonl", ".ndjson")
MANIFEST = "_manifest.json"  # marks a pvar stage folder of Parquet shards
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class Batch:
    """An Arrow record batch plus where each row came from (for error messages)."""

    data: pa.RecordBatch
    source: str
    lines: np.ndarray | None = None  # JSONL: the 1-based line of each row
    first_row: int = 1  # otherwise: the 1-based row number of the first row

    def where(self, i: int) -> dict[str, int]:
        """Keyword arguments locating row ``i`` of this batch, for ``InputError``."""
        if self.lines is not None:
            return {"line": int(self.lines[i])}
        return {"row": self.first_row + int(i)}

    def error(self, i: int, field: str | None, message: str) -> InputError:
        return InputError(self.source, message, field=field, **self.where(i))


@dataclass
class RawRows:
    """Parsed JSON objects with their line numbers, before any conversion to Arrow."""

    rows: list[dict[str, Any]]
    lines: list[int]
    source: str


def kind_of(path: str | Path) -> str:
    """'jsonl', 'parquet', 'shards' (a pvar stage folder) or 'datasets' (a saved folder or a hub name)."""
    if (Path(path) / MANIFEST).is_file():
        return "shards"
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in (".json", ".csv", ".txt", ".arrow"):
        raise InputError(str(path), f"unsupported file type '{suffix}' (use .jsonl or .parquet)")
    return "datasets"


def iter_jsonl(path: str | Path, batch_size: int = 4096) -> Iterator[RawRows]:
    """Parse a JSONL file into chunks of dicts; blank lines are skipped."""
    source = str(path)
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(source, f"malformed JSON ({exc.msg} at column {exc.colno})",
                                 line=lineno) from None
            if not isinstance(obj, dict):
                raise InputError(source, f"expected a JSON object, got {type(obj).__name__}",
                                 line=lineno)
            rows.append(obj)
            lines.append(lineno)
            if len(rows) >= batch_size:
                yield RawRows(rows, lines, source)
                rows, lines = [], []
    if rows:
        yield RawRows(rows, lines, source)


def iter_parquet(
    path: str | Path, batch_size: int = 65536, columns: list[str] | None = None
) -> Iterator[Batch]:
    source = str(path)
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(source, f"not a readable Parquet file ({exc})") from None
    if columns is not None:  # absent columns are named by the caller's validation
        columns = [c for c in columns if c in pf.schema_arrow.names]
    first = 1
    for rb in pf.iter_batches(batch_size=batch_size, columns=columns):
        yield Batch(rb, source, first_row=first)
        first += rb.num_rows


def shard_files(shard_dir: Path) -> list[Path]:
    """The shard files of a complete stage folder, in order (an incomplete one is an error)."""
    manifest = json.loads((Path(shard_dir) / MANIFEST).read_text())
    if not manifest.get("complete"):
        raise InputError(str(shard_dir), f"stage output is incomplete ({len(manifest.get('shards', {}))} shards "
                                         "done); re-run that stage to finish it")
    return [Path(shard_dir) / v["file"] for _, v in sorted(manifest["shards"].items())]


def iter_shards(
    shard_dir: str | Path, batch_size: int = 65536, columns: list[str] | None = None
) -> Iterator[Batch]:
    """Rows of a stage folder, shard after shard; row numbers run on across shards."""
    first = 1
    for f in shard_files(Path(shard_dir)):
        for batch in iter_parquet(f, batch_size, columns):
            yield Batch(batch.data, str(shard_dir), first_row=first)
            first += batch.data.num_rows


def _load_datasets(name: str) -> Any:
    """A saved dataset folder, or a hub dataset ``NAME`` (split train) or ``NAME:SPLIT``."""
    try:
        import datasets
    except ImportError:
        raise InputError(name, "not a .jsonl/.parquet file; reading a Hugging Face dataset needs "
                               "`pip install datasets`") from None
    p = Path(name)
    if p.is_dir():
        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as exc:  # datasets raises several unrelated types here
            raise InputError(name, f"not a saved Hugging Face dataset folder ({exc})") from None
    else:
        repo, _, split = name.partition(":")
        try:
            ds = datasets.load_dataset(repo, split=split or "train")
        except Exception as exc:
            raise InputError(name, f"no such file, and loading it as a dataset name failed "
                                   f"({type(exc).__name__})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise InputError(name, f"dataset has splits {list(ds)}, none named 'train'")
        ds = ds["train"]
    return ds


def iter_datasets(name: str, batch_size: int = 65536) -> Iterator[Batch]:
    ds = _load_datasets(name)
    first = 1
    for rb in ds.data.table.to_batches(max_chunksize=batch_size):
        yield Batch(rb, name, first_row=first)
        first += rb.num_rows


def count_rows(path: str | Path) -> int | None:
    """Rows in a source without parsing them (None for datasets names): sizes progress bars."""
    kind = kind_of(path)
    if kind == "parquet" and Path(path).exists():
        return pq.ParquetFile(path).metadata.num_rows
    if kind == "shards":
        manifest = json.loads((Path(path) / MANIFEST).read_text())
        return sum(v["rows"] for v in manifest.get("shards", {}).values())
    if kind == "jsonl" and Path(path).exists():
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    return None


def read_column_names(path: str | Path) -> list[str]:
    """Column names without reading rows (JSONL: the keys of the first object)."""
    kind = kind_of(path)
    if kind == "shards":
        files = shard_files(Path(path))
        return list(pq.ParquetFile(files[0]).schema_arrow.names) if files else []
    if kind == "parquet":
        return list(pq.ParquetFile(path).schema_arrow.names)
    if kind == "jsonl":
        for raw in iter_jsonl(path, batch_size=1):
            return list(raw.rows[0])
        return []
    return list(_load_datasets(str(path)).column_names)


def check_exists(path: str | Path) -> None:
    p = Path(path)
    if kind_of(p) in ("jsonl", "parquet") and not p.exists():
        raise InputError(str(p), "no such file")
