"""Every content and model hash pvar keys its caches and manifests with, in one place.

Each function's output is pinned by the outputs already on disk (manifests, run ledgers, eval
caches, reference log-prob caches), so none of them may change what it returns for a given input.
Seeds derived from ids (core/seeding.py, the ShareGPT split) are random-number derivations, not
fingerprints, and live with their users.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pvar.errors import resolved

MANIFEST = "_manifest.json"  # marks a pvar stage folder of Parquet shards (engines/shards.py writes it)


def text_digest(text: str, length: int = 16) -> str:
    """sha256 of a text, as hex, cut to ``length``."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def json_digest(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-serialisable value (keys sorted, so dict order does not matter)."""
    return text_digest(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str), length)


def digest(*parts: Any) -> str:
    """Short stable hash of JSON-serialisable parts (the run ledger's step keys)."""
    return json_digest(list(parts))


def source_fingerprint(source: str | Path) -> str:
    """Content hash of an input file, or of a stage folder's manifest (which pins its shards)."""
    p = Path(source)
    h = hashlib.sha256()
    if p.is_dir() and (p / MANIFEST).exists():
        manifest = json.loads((p / MANIFEST).read_text())
        h.update(json.dumps({k: manifest.get(k) for k in ("stage", "config", "input", "shards")},
                            sort_keys=True).encode())
    elif p.is_file():
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    else:
        h.update(str(source).encode())  # a datasets name: trust the name
    return h.hexdigest()[:16]


def model_fingerprint(folder: str | Path) -> str:
    """A cheap id of a local model folder, for caches of what its *weights* compute (reference
    log-probs): its resolved path, config.json, and every file's name/size/mtime, recursively.

    Re-saving or editing the model (or its tokenizer) changes the id; reading it does not. A name
    that is not a local folder is hashed as is.
    """
    path = Path(folder)
    h = hashlib.sha256()
    if not path.is_dir():
        h.update(f"name:{folder}".encode())
        return h.hexdigest()[:24]
    path = resolved(path)
    h.update(str(path).encode())
    config = path / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    for f in sorted(path.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"\0{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def model_record(name: str) -> dict[str, Any]:
    """What makes a model's (or a data file's) outputs, as a JSON record to hash: its name, or for
    a folder each top-level file's name, size and mtime.

    Cheap (no hashing of weights) and enough to notice a checkpoint retrained in place. Only the
    top level counts: that is what ``from_pretrained`` loads (trainer ``checkpoint-*`` folders or an
    eval folder placed inside must not change the key).
    """
    path = Path(name)
    if not path.exists():
        return {"name": name}
    if path.is_file():
        return {"path": str(resolved(path)), "size": path.stat().st_size, "mtime": path.stat().st_mtime_ns}
    files = sorted(p for p in path.iterdir() if p.is_file())
    return {"path": str(resolved(path)), "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}
