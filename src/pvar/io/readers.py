"""Stream rows from JSONL, Parquet or a Hugging Face ``datasets`` folder/name, in Arrow batches.

Every batch carries where its rows came from, so a bad row is reported by file and line (JSONL)
or row number (Parquet, datasets), both 1-based. Parquet is read in record batches, so a
1M-prompt pool never has to fit in Python objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pvar.errors import InputError, one_line
from pvar.fingerprint import MANIFEST  # marks a pvar stage folder of Parquet shards

JSONL_SUFFIXES = (".jsonl", ".ndjson")
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


def in_memory(source: Any) -> bool:
    """Whether ``source`` is rows in memory (a ``pyarrow.Table``/``RecordBatch`` or ``datasets.Dataset``)."""
    return isinstance(source, pa.Table | pa.RecordBatch) or type(source).__name__ in ("Dataset", "IterableDataset")


def memory_name(source: Any) -> str:
    """How errors name an in-memory source: ``<Dataset>``, ``<pyarrow.Table>``."""
    return "<Dataset>" if type(source).__name__ == "Dataset" else f"<pyarrow.{type(source).__name__}>"


def memory_table(source: Any) -> pa.Table:
    """The Arrow table of an in-memory source (a ``datasets.Dataset`` is Arrow underneath)."""
    if isinstance(source, pa.Table):
        return source
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source])
    if type(source).__name__ == "IterableDataset":
        raise InputError(memory_name(source), "an IterableDataset has no length; materialise it first "
                         "(datasets.Dataset.from_generator)")
    return source.with_format("arrow")[:]


def iter_memory(source: Any, batch_size: int, columns: list[str] | None = None) -> Iterator[Batch]:
    """Batches of an in-memory source, numbered by 1-based row like a Parquet file's."""
    table, name, start = memory_table(source), memory_name(source), 1
    if columns is not None:
        table = table.select([c for c in columns if c in table.column_names])
    for rb in table.to_batches(max_chunksize=batch_size):
        yield Batch(rb, name, first_row=start)
        start += rb.num_rows


def kind_of(path: str | Path) -> str:
    """'jsonl', 'parquet', 'shards' (a pvar stage folder) or 'datasets' (a saved folder or a hub name)."""
    if in_memory(path):
        return "memory"
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


def parse_line(raw: bytes, source: str, lineno: int) -> Any:
    """One JSON line, or an `InputError` naming the file, line and (for text no encoder takes) field."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(source, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                         line=lineno) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(source, f"malformed JSON ({exc.msg} at column {exc.colno})", line=lineno) from None
    except RecursionError:
        raise InputError(source, "malformed JSON (nested too deeply)", line=lineno) from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's digit limit
        raise InputError(source, f"malformed JSON ({exc})", line=lineno) from None
    if _SURROGATE_ESCAPE.search(raw):  # JSON lets "\\ud800" through; UTF-8 cannot encode it, far from here
        _check_encodable(obj, source, lineno)
    return obj


# An escaped UTF-16 surrogate: a valid pair decodes to one character, a lone one stays unencodable.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _check_encodable(obj: Any, source: str, lineno: int, field: str | None = None) -> None:
    """Every string in a parsed line (keys included) must be encodable as UTF-8."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(source, f"a lone UTF-16 surrogate (\\u{ord(obj[exc.start]):04x}) is not text",
                             line=lineno, field=field) from None
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _check_encodable(key, source, lineno, field)
            _check_encodable(value, source, lineno, field or key)
    elif isinstance(obj, list):
        for value in obj:
            _check_encodable(value, source, lineno, field)


def iter_jsonl(path: str | Path, batch_size: int = 4096) -> Iterator[RawRows]:
    """Parse a JSONL file into chunks of dicts; blank lines are skipped, a leading BOM is accepted."""
    source = str(path)
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            obj = parse_line(raw, source, lineno)
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


def _open_parquet(path: str | Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(str(path), f"not a readable Parquet file ({one_line(exc)})") from None


def iter_parquet(
    path: str | Path, batch_size: int = 65536, columns: list[str] | None = None
) -> Iterator[Batch]:
    source = str(path)
    pf = _open_parquet(path)
    if columns is not None:  # absent columns are named by the caller's validation
        columns = [c for c in columns if c in pf.schema_arrow.names]
    first = 1
    batches = pf.iter_batches(batch_size=batch_size, columns=columns)
    while True:
        try:
            rb = next(batches)
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as exc:  # a corrupt page: name the file and where
            raise InputError(source, f"corrupt Parquet data near row {first} ({one_line(exc)})") from None
        yield Batch(rb, source, first_row=first)
        first += rb.num_rows


def read_manifest(shard_dir: Path) -> dict[str, Any]:
    """A stage folder's manifest; a corrupt one is named, not a JSON traceback."""
    path = Path(shard_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(str(path), f"corrupt stage manifest ({exc}); re-run that stage with --force") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards", {}), dict):
        raise InputError(str(path), "corrupt stage manifest (not a mapping of shards); re-run that stage with --force")
    return manifest


def shard_files(shard_dir: Path) -> list[Path]:
    """The shard files of a complete stage folder, in order (an incomplete one is an error)."""
    manifest = read_manifest(Path(shard_dir))
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
        return _open_parquet(path).metadata.num_rows
    if kind == "shards":
        manifest = read_manifest(Path(path))
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
        return list(_open_parquet(files[0]).schema_arrow.names) if files else []
    if kind == "parquet":
        return list(_open_parquet(path).schema_arrow.names)
    if kind == "jsonl":
        for raw in iter_jsonl(path, batch_size=1):
            return list(raw.rows[0])
        return []
    return list(_load_datasets(str(path)).column_names)


def check_exists(path: str | Path) -> None:
    p = Path(path)
    if kind_of(p) in ("jsonl", "parquet") and not p.exists():
        raise InputError(str(p), "no such file")
