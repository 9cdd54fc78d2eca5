"""The report's format-free blocks, and how numbers are written in them (shared by every section)."""

from __future__ import annotations

import math
from typing import Any

Block = tuple  # ("h1"|"h2"|"h3", text) | ("p", text) | ("table", header, rows) | ("fig", key, caption) | ("pre", text)


def fmt(x: Any, spec: str = ".3f") -> str:
    """A number as text; '–' for a missing or non-finite one."""
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def pct(x: float | None, spec: str = ".0f") -> str:
    """A share as a percentage number (no sign)."""
    return fmt(None if x is None else 100 * x, spec)
