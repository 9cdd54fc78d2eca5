"""Values as plain JSON: the one converter every JSON file pvar writes goes through."""

from __future__ import annotations

import math
from typing import Any


def jsonable(value: Any) -> Any:
    """NaN/inf become null, tensors and numpy scalars become numbers, tuples lists, other objects strings."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)
