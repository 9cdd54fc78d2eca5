"""Read a pairs file (JSONL or Parquet) into a ``datasets.Dataset`` and check it, with one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pvar.errors import InputError
from pvar.fingerprint import text_digest

REQUIRED = ("prompt", "chosen", "rejected")


def load_pairs(path: str | Path, weight_by: str | None = None) -> Any:
    """The pairs as a Dataset with ``prompt``, ``chosen``, ``rejected`` (and ``weight_by``), other columns dropped.

    Read through pvar's own readers, so errors name the file, the line (JSONL) or row (Parquet),
    both 1-based as in every verb, and the field. A pair whose chosen equals its rejected is
    refused: its DPO loss is log 2 whatever the policy does, so it would train nothing.
    """
    import pyarrow as pa
    from datasets import Dataset

    from pvar.io.rows import read_rows

    source = str(path)
    parts = []
    for batch in read_rows(path, require=REQUIRED, unique_ids=False):
        _check_batch(batch, weight_by)
        keep = [*REQUIRED, *([weight_by] if weight_by else [])]
        parts.append(pa.Table.from_batches([batch.data.select(keep)]))
    table = pa.concat_tables(parts, promote_options="permissive")
    if weight_by is not None and not pa.compute.any(pa.compute.greater(table[weight_by], 0)).as_py():
        raise InputError(source, "every weight is 0: nothing would be trained", field=weight_by)
    return Dataset(table)


def _check_batch(batch: Any, weight_by: str | None) -> None:
    data = batch.data
    if weight_by is not None and weight_by not in data.schema.names:
        raise InputError(batch.source, f"weight_by column not found (columns: {', '.join(data.schema.names)})",
                         field=weight_by)
    columns = [data.column(c).to_pylist() for c in REQUIRED]
    for i, values in enumerate(zip(*columns, strict=True)):
        for col, value in zip(REQUIRED, values, strict=True):
            if not isinstance(value, (str, list)):
                raise batch.error(i, col, f"expected text or chat messages, not {type(value).__name__}")
            if len(value) == 0 or (isinstance(value, str) and not value.strip()):
                raise batch.error(i, col, "empty value")
        chat = isinstance(values[0], list)
        for col, value in zip(REQUIRED[1:], values[1:], strict=True):
            if isinstance(value, list) != chat:
                kind = "chat messages" if chat else "text"
                raise batch.error(i, col, f"the prompt is {kind}, so {col} must be {kind} too")
        if values[1] == values[2]:
            raise batch.error(i, "rejected", "identical to chosen: the pair carries no preference "
                                             "(its loss is log 2 whatever the policy does)")
    if weight_by is not None:
        for i, w in enumerate(data.column(weight_by).to_pylist()):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise batch.error(i, weight_by, f"weight must be a finite number >= 0, not {w!r}")


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
        keys.append(text_digest(json.dumps([p, c, r, tail], ensure_ascii=False, sort_keys=True), 32))
    return keys
