"""Read a pairs file (JSONL or Parquet) into a ``datasets.Dataset`` and check it, with one-line errors."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from pvar.errors import InputError

REQUIRED = ("prompt", "chosen", "rejected")
FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def load_pairs(path: str | Path, weight_by: str | None = None) -> Any:
    """The pairs as a Dataset with ``prompt``, ``chosen``, ``rejected`` (and ``weight_by``), other columns dropped.

    Raises InputError naming the file, the line (JSONL) or row (Parquet) and the field.
    """
    from datasets import load_dataset

    path = Path(path)
    source = str(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(source, f"pairs must be .jsonl or .parquet, not {path.suffix or 'no extension'!r}")
    if not path.is_file():
        raise InputError(source, "no such file")
    try:
        data = load_dataset(fmt, data_files=source, split="train")
    except Exception as exc:  # datasets wraps parse errors in several types
        raise InputError(source, f"cannot read pairs: {_first_line(exc)}") from None
    if len(data) == 0:
        raise InputError(source, "holds no pairs")
    where = _locator(path.suffix.lower() == ".jsonl")
    for col in REQUIRED:
        if col not in data.column_names:
            raise InputError(source, "column missing (pairs need prompt, chosen, rejected)", field=col)
    columns = [data[col] for col in REQUIRED]
    for i, values in enumerate(zip(*columns, strict=True)):
        for col, value in zip(REQUIRED, values, strict=True):
            if value is None or (isinstance(value, (str, list)) and len(value) == 0):
                raise InputError(source, "empty value", field=col, **where(i))
            if not isinstance(value, (str, list)):
                raise InputError(source, f"expected text or chat messages, not {type(value).__name__}",
                                 field=col, **where(i))
        chat = isinstance(values[0], list)
        for col, value in zip(REQUIRED[1:], values[1:], strict=True):
            if isinstance(value, list) != chat:
                kind = "chat messages" if chat else "text"
                raise InputError(source, f"the prompt is {kind}, so {col} must be {kind} too", field=col, **where(i))
    keep = list(REQUIRED)
    if weight_by is not None:
        if weight_by not in data.column_names:
            raise InputError(source, f"weight_by column not found (columns: {', '.join(data.column_names)})",
                             field=weight_by)
        weights = data[weight_by]
        for i, w in enumerate(weights):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise InputError(source, f"weight must be a finite number >= 0, not {w!r}", field=weight_by, **where(i))
        if not any(w > 0 for w in weights):
            raise InputError(source, "every weight is 0: nothing would be trained", field=weight_by)
        keep.append(weight_by)
    return data.select_columns(keep)


def in_sampling_context(data: Any, tokenizer: Any) -> Any:
    """Pairs as the policy saw them when it sampled: text prompts become chat turns for a chat policy.

    pvar samples a text prompt from a chat model as one user message under its chat template
    (:func:`pvar.backends.base.generation_prompt`). Handed to TRL as plain text, the same pair would
    be tokenized raw (no template, no special tokens), so DPO would train on a context the policy
    never sees. Conversational rows make TRL apply the same template with a generation prompt, so
    the prompt token ids it trains on are the ones the policy was sampled with. A tokenizer without
    a chat template samples raw text, and so trains on it: rows are returned unchanged.
    """
    if not getattr(tokenizer, "chat_template", None) or isinstance(data[0]["prompt"], list):
        return data

    def to_chat(row: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": [{"role": "user", "content": row["prompt"]}],
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}]}

    return data.map(to_chat, desc=None)


def row_keys(data: Any, settings: dict[str, Any]) -> list[str]:
    """One key per pair: a hash of prompt, chosen, rejected and the settings that change reference log-probs."""
    tail = json.dumps(settings, sort_keys=True)
    keys = []
    for p, c, r in zip(data["prompt"], data["chosen"], data["rejected"], strict=True):
        blob = json.dumps([p, c, r, tail], ensure_ascii=False, sort_keys=True)
        keys.append(hashlib.sha256(blob.encode()).hexdigest()[:32])
    return keys


def _locator(jsonl: bool):
    """JSONL errors name the line (1-based, one pair per line); Parquet and JSON arrays the row (0-based)."""
    return (lambda i: {"line": i + 1}) if jsonl else (lambda i: {"row": i})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
