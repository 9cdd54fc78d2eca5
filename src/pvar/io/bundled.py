"""Data files shipped with pvar (the bundled UltraFeedback-schema sample)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def bundled(name: str) -> Path:
    """Path of a data file shipped inside the package."""
    return Path(str(resources.files("pvar") / "data" / name))
