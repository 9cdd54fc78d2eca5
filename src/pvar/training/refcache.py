"""Reference log-probs stored once per (model, pair) and reused across training runs.

Layout: ``<root>/<model_id>/part-*.parquet`` with columns ``key`` (see ``data.row_keys``),
``ref_chosen_logps`` and ``ref_rejected_logps`` (float32, as TRL computes them), plus ``model.json``
describing the model. Each run that computes new rows adds one part file, written to a temporary
name and renamed into place, so concurrent runs never see half a file; a key present in several
parts (two runs racing on the same rows) has equal values in each.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path

from pvar.io.writers import atomic_file, atomic_write_text

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class RefLogpCache:
    """Parquet store of reference log-probs for one model."""

    def __init__(self, root: str | Path, model_id: str, model_folder: str = "") -> None:
        self.dir = Path(root) / model_id
        self.model_folder = model_folder

    def lookup(self, keys: Sequence[str]) -> dict[str, tuple[float, float]]:
        """The cached ``(ref_chosen_logp, ref_rejected_logp)`` of each of ``keys`` that is stored."""
        import pyarrow.parquet as pq

        want = set(keys)
        found: dict[str, tuple[float, float]] = {}
        if not want or not self.dir.is_dir():
            return found
        for part in sorted(self.dir.glob("part-*.parquet")):
            table = pq.read_table(part)
            cols = zip(table["key"].to_pylist(), table["ref_chosen_logps"].to_pylist(),
                       table["ref_rejected_logps"].to_pylist(), strict=True)
            for key, chosen, rejected in cols:
                if key in want:
                    found[key] = (chosen, rejected)
        return found

    def add(self, keys: Sequence[str], chosen: Sequence[float], rejected: Sequence[float]) -> Path | None:
        """Store new rows as one more part file; returns its path (None when there was nothing to add)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not keys:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "model.json"
        if not meta.exists():
            atomic_write_text(meta, json.dumps({"model_folder": self.model_folder}) + "\n")
        table = pa.table({
            "key": pa.array(list(keys), pa.string()),
            "ref_chosen_logps": pa.array(list(chosen), pa.float32()),
            "ref_rejected_logps": pa.array(list(rejected), pa.float32()),
        })
        name = f"part-{uuid.uuid4().hex}.parquet"
        with atomic_file(self.dir / name) as tmp:
            pq.write_table(table, tmp)
        return self.dir / name

    def __len__(self) -> int:
        import pyarrow.parquet as pq

        if not self.dir.is_dir():
            return 0
        keys: set[str] = set()
        for part in self.dir.glob("part-*.parquet"):
            keys.update(pq.read_table(part, columns=["key"])["key"].to_pylist())
        return len(keys)
