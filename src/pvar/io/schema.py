"""The row contract: one row per prompt, responses nested, and the checks that enforce it.

JSON has no types, so JSONL rows are coerced field by field in Python (errors name the line).
Parquet and datasets carry a schema, checked once per column. The semantic checks (reward count
equals response count, finite rewards, unique prompt ids) run vectorized on Arrow for both.
A ``null`` reward means "not scored" and is left out of PVar; NaN and inf are errors.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pvar.core.scores import reward_margin
from pvar.errors import InputError, one_line, short_repr
from pvar.fingerprint import text_digest
from pvar.io.arrow import combine, list_lengths, list_to_padded
from pvar.io.readers import Batch, RawRows

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
ROLES = ("system", "user", "assistant", "tool")  # what chat templates accept
KNOWN_TYPES: dict[str, pa.DataType] = {
    "prompt_id": pa.string(),
    "responses": pa.list_(pa.string()),
    "rewards": pa.list_(pa.float64()),
    "reference": pa.string(),
}


def derive_prompt_id(prompt: Any) -> str:
    """Stable id from the prompt text (or messages): the same prompt gets the same id anywhere."""
    return text_digest(prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True))


class _FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _prompt(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            raise _FieldError("prompt", "empty prompt")
        return value
    if not isinstance(value, list) or not value:
        raise _FieldError("prompt", "expected text or a non-empty list of {role, content} messages")
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise _FieldError("prompt", f"message {i} is not a {{role, content}} object of strings")
        if m["role"] not in ROLES:
            raise _FieldError("prompt", f"message {i} has role {short_repr(m['role'])}; expected one of "
                                        f"{', '.join(ROLES)}")
    if not any(m["role"] == "user" and m["content"].strip() for m in value):
        raise _FieldError("prompt", "no non-empty user message")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _prompt_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _FieldError("prompt_id", f"expected a string or integer, got {type(value).__name__}")
    return str(value)


def _responses(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise _FieldError("responses", f"expected a list of strings, got {type(value).__name__}")
    for i, r in enumerate(value):
        if not isinstance(r, str):
            raise _FieldError("responses", f"item {i} is {type(r).__name__}, expected a string")
    return value


def _rewards(value: Any) -> list[float | None]:
    if not isinstance(value, list):
        raise _FieldError("rewards", f"expected a list of numbers, got {type(value).__name__}")
    out: list[float | None] = []
    for i, r in enumerate(value):
        if r is None:
            out.append(None)
        elif isinstance(r, bool) or not isinstance(r, int | float):
            raise _FieldError("rewards", f"item {i} is not a number: {short_repr(r)}")
        else:
            try:
                value = float(r)
            except OverflowError:
                raise _FieldError("rewards", f"item {i} is too large for a float: {short_repr(r)}") from None
            if not math.isfinite(value):
                raise _FieldError("rewards", f"item {i} is not finite: {r!r}")
            out.append(value)
    return out


def _reference(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _FieldError("reference", f"expected a string, got {type(value).__name__}")


_COERCE = {
    "prompt": _prompt,
    "prompt_id": _prompt_id,
    "responses": _responses,
    "rewards": _rewards,
    "reference": _reference,
}


def coerce_row(row: dict[str, Any]) -> dict[str, Any]:
    """Type-check and normalise the known fields of one row; raises ``_FieldError``."""
    out = dict(row)
    for field, fn in _COERCE.items():
        if field in out:
            out[field] = fn(out[field])
    if "prompt_id" not in out and "prompt" in out:
        out["prompt_id"] = derive_prompt_id(out["prompt"])
    return out


def rows_to_batch(raw: RawRows, rows: list[dict[str, Any]] | None = None) -> Batch:
    """Coerce parsed JSON rows (or adapter output for them) into one Arrow batch."""
    rows = raw.rows if rows is None else rows
    coerced = []
    for row, line in zip(rows, raw.lines, strict=True):
        try:
            coerced.append(coerce_row(row))
        except _FieldError as exc:
            raise InputError(raw.source, str(exc), line=line, field=exc.field) from None
    names = list(dict.fromkeys(k for r in coerced for k in r))
    arrays = []
    for name in names:
        values = [r.get(name) for r in coerced]
        typ = KNOWN_TYPES.get(name)
        if name == "prompt":
            texts = [isinstance(v, str) for v in values if v is not None]
            typ = pa.string() if all(texts) else MESSAGES
            if typ == MESSAGES and any(texts):
                line = raw.lines[next(i for i, v in enumerate(values) if isinstance(v, str))]
                raise InputError(raw.source, "mixes text prompts and message prompts", line=line,
                                 field="prompt")
        try:
            arrays.append(pa.array(values, type=typ))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            i = _first_bad(values, typ)
            raise InputError(raw.source, f"value does not fit the column's type ({one_line(exc, 160)})",
                             line=raw.lines[i], field=name) from None
    return Batch(pa.RecordBatch.from_arrays(arrays, names=names), raw.source,
                 lines=np.asarray(raw.lines, dtype=np.int64))


def _first_bad(values: list[Any], typ: pa.DataType | None) -> int:
    """Index of the first value that breaks the column: the shortest prefix Arrow refuses.

    A prefix that fails stays failing when extended, so a binary search finds it in log(n) tries.
    """
    lo, hi = 0, len(values) - 1  # the prefix up to hi fails
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            pa.array(values[: mid + 1], type=typ)
            lo = mid + 1
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            hi = mid
    return lo


def _check_messages_type(batch: Batch, typ: pa.DataType) -> None:
    """A typed prompt column of messages must be list<struct<role: string, content: string>>."""
    value = typ.value_type
    names = [value.field(i).name for i in range(value.num_fields)] if pa.types.is_struct(value) else []
    if not pa.types.is_struct(value) or not {"role", "content"} <= set(names):
        raise InputError(batch.source, f"expected text or a list of {{role, content}} messages, got {typ}",
                         field="prompt")
    for name in ("role", "content"):
        t = value.field(name).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise InputError(batch.source, f"message {name} must be a string, got {t}", field="prompt")


def check_prompts(batch: Batch) -> None:
    """No blank prompt; messages have known roles and a non-empty user turn (vectorized)."""
    if "prompt" not in batch.data.schema.names:
        return
    col = combine(batch.data.column("prompt"))
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0)
        bad = np.flatnonzero(pc.fill_null(blank, False).to_numpy(zero_copy_only=False))
        if bad.size:
            raise batch.error(int(bad[0]), "prompt", "empty prompt")
        return
    lengths = list_lengths(col)
    empty = np.flatnonzero(lengths == 0)
    flat = pc.list_flatten(col)
    roles, contents = pc.struct_field(flat, "role"), pc.struct_field(flat, "content")
    row_of = np.repeat(np.arange(len(col)), lengths)
    unknown = np.flatnonzero(~pc.fill_null(pc.is_in(roles, pa.array(ROLES)), False).to_numpy(zero_copy_only=False))
    user_ok = pc.and_(pc.equal(roles, "user"),
                      pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(contents)), 0))
    has_user = np.zeros(len(col), bool)
    np.logical_or.at(has_user, row_of, pc.fill_null(user_ok, False).to_numpy(zero_copy_only=False))
    has_user &= ~col.is_null().to_numpy(zero_copy_only=False)
    first = [(int(row_of[unknown[0]]), "unknown")] if unknown.size else []
    first += [(int(empty[0]), "empty")] if empty.size else []
    no_user = np.flatnonzero(~has_user & (lengths > 0))
    first += [(int(no_user[0]), "no user")] if no_user.size else []
    if not first:
        return
    row, why = min(first)
    if why == "unknown":
        role = roles[int(unknown[0])].as_py()
        raise batch.error(row, "prompt", f"a message has role {short_repr(role)}; expected one of {', '.join(ROLES)}")
    raise batch.error(row, "prompt", "empty list of messages" if why == "empty" else "no non-empty user message")


def normalize_arrow(batch: Batch) -> Batch:
    """Check and cast the known columns of a typed (Parquet/datasets) batch; derive prompt_id."""
    data = batch.data
    for name in ("prompt_id", "responses", "rewards", "reference"):
        if name not in data.schema.names:
            continue
        col, want = data.column(name), KNOWN_TYPES[name]
        if name == "prompt_id" and pa.types.is_integer(col.type):
            col = pc.cast(col, pa.string())
        ok = col.type == want or (
            name == "rewards" and pa.types.is_list(col.type)
            and (pa.types.is_floating(col.type.value_type) or pa.types.is_integer(col.type.value_type))
        ) or (name == "responses" and pa.types.is_list(col.type)
              and pa.types.is_large_string(col.type.value_type))
        if not ok:
            raise InputError(batch.source, f"expected {want}, got {col.type}", field=name)
        data = data.set_column(data.schema.get_field_index(name), name, pc.cast(col, want))
    if "prompt" in data.schema.names:
        typ = data.column("prompt").type
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_list(typ)
                or pa.types.is_large_list(typ)):
            raise InputError(batch.source, f"expected text or messages, got {typ}", field="prompt")
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            _check_messages_type(batch, typ)
            col = combine(data.column("prompt"))
            value = typ.value_type
            if value.num_fields != 2 or pa.types.is_large_list(typ) or typ != MESSAGES:  # keep role, content
                flat = pc.list_flatten(col)
                structs = pa.StructArray.from_arrays(
                    [pc.cast(pc.struct_field(flat, n), pa.string()) for n in ("role", "content")],
                    names=["role", "content"])
                offsets = pc.cast(col.offsets, pa.int32())
                col = pa.ListArray.from_arrays(offsets, structs, mask=col.is_null())
                data = data.set_column(data.schema.get_field_index("prompt"), "prompt", col)
        if "prompt_id" not in data.schema.names:
            prompts = data.column("prompt").to_pylist()
            data = data.append_column("prompt_id", pa.array([derive_prompt_id(p) for p in prompts]))
    return Batch(data, batch.source, batch.lines, batch.first_row)


def require_columns(batch: Batch, fields: tuple[str, ...]) -> None:
    for field in fields:
        if field not in batch.data.schema.names:
            raise batch.error(0, field, "missing (required here)")
        nulls = np.flatnonzero(combine(batch.data.column(field)).is_null().to_numpy(zero_copy_only=False))
        if nulls.size:
            raise batch.error(int(nulls[0]), field, "missing (null)")


def check_rewards(batch: Batch) -> None:
    """One reward per response, and every non-null reward finite."""
    data = batch.data
    if "rewards" not in data.schema.names:
        return
    n_rew = list_lengths(data.column("rewards"))
    if "responses" in data.schema.names:
        n_resp = list_lengths(data.column("responses"))
        bad = np.flatnonzero(n_rew != n_resp)
        if bad.size:
            i = int(bad[0])
            raise batch.error(i, "rewards", f"{n_rew[i]} rewards for {n_resp[i]} responses")
    values = pc.list_flatten(combine(data.column("rewards"))).to_numpy(zero_copy_only=False)
    bad_values = np.flatnonzero(np.isinf(values) | (np.isnan(values) & ~_null_mask(data)))
    if bad_values.size:
        k = int(bad_values[0])
        row = int(np.searchsorted(np.cumsum(n_rew), k, side="right"))
        raise batch.error(row, "rewards", f"item {k - int(np.cumsum(n_rew)[row] - n_rew[row])} "
                                          f"is not finite ({values[k]})")
    span = reward_margin(list_to_padded(data.column("rewards")))
    wide = np.flatnonzero(np.isinf(span))
    if wide.size:  # e.g. -1e308 and 1e308: every gap-based statistic would be infinite
        raise batch.error(int(wide[0]), "rewards", "the rewards span more than a float64 can hold")


def _null_mask(data: pa.RecordBatch) -> np.ndarray:
    flat = pc.list_flatten(combine(data.column("rewards")))
    return flat.is_null().to_numpy(zero_copy_only=False)


class UniqueIds:
    """Tracks prompt ids across batches and names the first duplicate.

    The common case (no duplicates) is two C-level set operations per batch; only an error
    walks the rows to find where the duplicate is.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def check(self, batch: Batch) -> None:
        ids = batch.data.column("prompt_id").to_pylist()
        fresh = set(ids)
        if len(fresh) == len(ids) and self._seen.isdisjoint(fresh):
            self._seen |= fresh
            return
        first: dict[str, int] = {}
        for i, pid in enumerate(ids):
            if pid in self._seen:
                raise batch.error(i, "prompt_id", f"duplicate id {pid!r} (already seen earlier in the input)")
            if pid in first:
                earlier = batch.where(first[pid])
                at = f"line {earlier['line']}" if "line" in earlier else f"row {earlier['row']}"
                raise batch.error(i, "prompt_id", f"duplicate id {pid!r} (first at {at})")
            first[pid] = i
