"""The run folder's ledger: which steps finished, under which key, how long they took.

A step is skipped on a rerun when ``state.json`` records it done under the same key (a hash of its
settings and of the keys of the steps it reads) and its output is still there. The ledger is
rewritten atomically after every step, so a killed run loses at most the step in flight; the
sharded stages (generate, reward) resume inside the step too, shard by shard.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pvar.errors import InputError
from pvar.io.writers import atomic_write_text

STATE_FILE = "state.json"


def read_state(run_dir: Path) -> dict[str, Any]:
    """A run folder's ``state.json`` for reading (the report): a corrupt one is an error naming it."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return {"steps": {}, "runs": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(str(path), f"corrupt run state ({type(exc).__name__}); rerun `pvar run` on the folder "
                                    "to rebuild it") from None
    if not (isinstance(data, dict) and isinstance(data.get("steps", {}), dict)
            and isinstance(data.get("runs", []), list)):
        raise InputError(str(path), "corrupt run state (expected steps and runs); rerun `pvar run` on the folder")
    for name, record in data.get("steps", {}).items():
        if not isinstance(record, dict):
            raise InputError(str(path), f"corrupt run state (step {name!r} is a {type(record).__name__}, not a "
                                        "record); rerun `pvar run` on the folder", field=f"steps.{name}")
    data.setdefault("steps", {})
    data.setdefault("runs", [])
    return data


class Ledger:
    """``state.json`` of a run folder: {"steps": {name: record}, "runs": [...]}."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / STATE_FILE
        self.data: dict[str, Any] = {"steps": {}, "runs": []}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError:
                self.data = {"steps": {}, "runs": []}  # a torn ledger only costs recomputation
            self.data.setdefault("steps", {})
            self.data.setdefault("runs", [])

    def done(self, step: str, key: str, *outputs: Path) -> bool:
        rec = self.data["steps"].get(step)
        return bool(rec and rec.get("key") == key and rec.get("done") and all(p.exists() for p in outputs))

    def record(self, step: str, key: str, seconds: float, **info: Any) -> None:
        prev = self.data["steps"].get(step, {})
        self.data["steps"][step] = {"key": key, "done": True, "seconds": round(seconds, 2),
                                    "computed": prev.get("computed", 0) + 1, "finished": _now(), **info}
        self.save()

    def forget(self, step: str) -> None:
        if self.data["steps"].pop(step, None) is not None:
            self.save()

    def start_run(self, info: dict[str, Any]) -> None:
        self.data["runs"].append({"started": _now(), **info})
        self.save()

    def finish_run(self, seconds: float, peak_rss_mb: float) -> None:
        if self.data["runs"]:
            self.data["runs"][-1].update(finished=_now(), seconds=round(seconds, 1), peak_rss_mb=round(peak_rss_mb))
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=2, ensure_ascii=False, default=str) + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
