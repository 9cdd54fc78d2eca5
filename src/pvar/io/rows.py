"""``read_rows``: one entry point that reads any supported source as validated pipeline rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pvar.errors import InputError
from pvar.io import formats
from pvar.io.readers import (
    Batch,
    RawRows,
    check_exists,
    in_memory,
    iter_datasets,
    iter_jsonl,
    iter_memory,
    iter_parquet,
    iter_shards,
    kind_of,
    memory_name,
)
from pvar.io.schema import (
    UniqueIds,
    check_prompts,
    check_rewards,
    normalize_arrow,
    require_columns,
    rows_to_batch,
)


def _adapt(raw: RawRows, fmt: str, rating: str) -> Batch:
    if fmt != "ultrafeedback":
        return rows_to_batch(raw)
    adapted = []
    for row, line in zip(raw.rows, raw.lines, strict=True):
        try:
            adapted.append(formats.ultrafeedback(row, rating))
        except formats.FormatError as exc:
            raise InputError(raw.source, str(exc), line=line, field=exc.field) from None
    return rows_to_batch(raw, adapted)


def _batches(
    path: str, fmt: str, rating: str, batch_size: int, columns: list[str] | None
) -> Iterator[Batch]:
    kind = kind_of(path)
    if kind == "jsonl":
        for raw in iter_jsonl(path, batch_size=min(batch_size, 8192)):
            use = formats.detect(list(raw.rows[0])) if fmt == "auto" else fmt
            yield _adapt(raw, use, rating)
        return
    if kind == "memory":
        typed = iter_memory(path, batch_size, columns)
    elif kind == "parquet":
        typed = iter_parquet(path, batch_size, columns)
    elif kind == "shards":
        typed = iter_shards(path, batch_size, columns)
    else:
        typed = iter_datasets(path, batch_size)
    for batch in typed:
        use = formats.detect(batch.data.schema.names) if fmt == "auto" else fmt
        if use == "ultrafeedback":
            yield from _adapt_ultrafeedback(batch, rating)
        else:
            yield normalize_arrow(batch)


def _adapt_ultrafeedback(batch: Batch, rating: str) -> Iterator[Batch]:
    """Nested ratings: adapted in Python, row numbers kept."""
    adapted = []
    for i, row in enumerate(batch.data.to_pylist()):
        try:
            adapted.append(formats.ultrafeedback(row, rating))
        except formats.FormatError as exc:
            raise batch.error(i, exc.field, str(exc)) from None
    lines = list(range(batch.first_row, batch.first_row + batch.data.num_rows))
    out = rows_to_batch(RawRows(adapted, lines, batch.source))
    yield normalize_arrow(Batch(out.data, batch.source, first_row=batch.first_row))


def read_rows(
    path: Any,
    *,
    fmt: str = "auto",
    rating: str = "overall",
    require: tuple[str, ...] = ("prompt_id", "prompt"),
    batch_size: int = 65536,
    columns: list[str] | None = None,
    unique_ids: bool = True,
) -> Iterator[Batch]:
    """Yield validated batches of pipeline rows from a JSONL/Parquet file or a datasets source.

    Checks, with file + line/row + field in every error: the ``require``d columns exist and are
    not null, rewards match responses one to one and are finite, prompt ids are unique, and the
    source is not empty. ``columns`` narrows what Parquet reads (other sources read everything).
    """
    path = path if in_memory(path) else str(path)
    name = memory_name(path) if in_memory(path) else path
    if fmt not in formats.FORMATS:
        raise InputError(name, f"unknown format {fmt!r}; choose one of {', '.join(formats.FORMATS)}")
    if rating not in formats.RATINGS:
        raise InputError(name, f"unknown rating {rating!r}; choose one of {', '.join(formats.RATINGS)}")
    if not in_memory(path):
        check_exists(path)
    ids = UniqueIds()
    seen_rows = 0
    for batch in _batches(path, fmt, rating, batch_size, columns):
        if batch.data.num_rows == 0:
            continue
        require_columns(batch, require)
        check_rewards(batch)
        check_prompts(batch)
        if unique_ids:  # one row per prompt; pair files hold several rows per prompt
            ids.check(batch)
        seen_rows += batch.data.num_rows
        yield batch
    if seen_rows == 0:
        raise InputError(name, "empty file (no rows)" if name == path else "no rows")

