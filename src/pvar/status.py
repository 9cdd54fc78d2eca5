"""Where long work reports its progress and notes: silent by default, the CLI plugs rich in.

Library code (stages, the experiment runner) calls `progress` and `log`; it never draws. The
command line sets `set_reporter(render.progress, ...)` once, so a notebook or a script that
imports pvar gets no bars unless it asks for them, the way ``logging`` has no handler until one
is configured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

Tick = Callable[..., None]  # tick(rows, counters=None)
ProgressFactory = Callable[..., AbstractContextManager[Tick]]

_progress: ProgressFactory | None = None
_log: Callable[[str], None] | None = None


def set_reporter(progress: ProgressFactory | None = None, log: Callable[[str], None] | None = None) -> None:
    """Route progress bars and log lines (None: drop them)."""
    global _progress, _log
    _progress, _log = progress, log


@contextmanager
def progress(label: str, source: str | Path | None = None, total: int | None = None,
             unit: str = "prompts") -> Iterator[Tick]:
    """A progress display for ``label``; yields ``tick(rows, counters)`` (a no-op without a reporter)."""
    if _progress is None:
        yield _ignore
        return
    with _progress(label, source=source, total=total, unit=unit) as tick:
        yield tick


def log(message: str) -> None:
    if _log is not None:
        _log(message)


def _ignore(*_: Any, **__: Any) -> None:
    return None
