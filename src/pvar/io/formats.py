"""Adapters from other datasets' schemas to pipeline rows (one row per prompt).

An adapter maps one raw row to ``{prompt_id, prompt, responses, rewards, ...}`` and raises
``FormatError(field, message)`` on bad data; the reader adds file and line.
"""

from __future__ import annotations

import math
from typing import Any

FORMATS = ("auto", "pipeline", "ultrafeedback")
RATINGS = ("overall", "aspects")
UF_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")


class FormatError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def detect(columns: list[str]) -> str:
    """'ultrafeedback' for rows with ``instruction`` + ``completions`` and no ``responses``."""
    if "completions" in columns and "instruction" in columns and "responses" not in columns:
        return "ultrafeedback"
    return "pipeline"


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FormatError(field, f"expected a finite number, got {value!r}")
    return float(value)


def _aspect_mean(annotations: Any, field: str) -> float | None:
    """Mean of the numeric aspect ratings ("1".."5"); "N/A" is ignored; None if none is numeric."""
    if not isinstance(annotations, dict):
        raise FormatError(field, f"expected an object of aspect ratings, got {annotations!r}")
    scores = []
    for aspect in UF_ASPECTS:
        entry = annotations.get(aspect)
        if entry is None:
            continue
        rating = entry.get("Rating") if isinstance(entry, dict) else None
        if rating in (None, "N/A"):
            continue
        try:
            scores.append(float(rating))
        except (TypeError, ValueError):
            raise FormatError(f"{field}.{aspect}.Rating", f"expected '1'..'5' or 'N/A', got {rating!r}") from None
    return sum(scores) / len(scores) if scores else None


def ultrafeedback(row: dict[str, Any], rating: str = "overall") -> dict[str, Any]:
    """UltraFeedback row -> pipeline row; ratings play the role of rewards.

    ``rating="overall"`` uses each completion's ``overall_score`` (1-10); ``"aspects"`` the mean
    of its numeric aspect ratings (a completion whose aspects are all "N/A" gets a null reward,
    which leaves it out of PVar). Other columns (e.g. ``source``) are kept; ``models`` lists each
    response's model. Idempotent: a row that already has ``responses`` is returned unchanged.

    >>> ultrafeedback({"instruction": "Hi", "completions": [
    ...     {"response": "Hello!", "model": "a", "overall_score": 8},
    ...     {"response": "Go away.", "model": "b", "overall_score": 2}]})["rewards"]
    [8.0, 2.0]
    """
    if "responses" in row:
        return row
    if rating not in RATINGS:
        raise FormatError("rating", f"unknown rating {rating!r}; choose one of {', '.join(RATINGS)}")
    instruction = row.get("instruction")
    if not isinstance(instruction, str) or not instruction:
        raise FormatError("instruction", "missing or not text")
    completions = row.get("completions")
    if not isinstance(completions, list):
        raise FormatError("completions", "missing or not a list")
    responses, rewards, models = [], [], []
    for i, comp in enumerate(completions):
        field = f"completions[{i}]"
        if not isinstance(comp, dict) or not isinstance(comp.get("response"), str):
            raise FormatError(f"{field}.response", "missing or not text")
        responses.append(comp["response"])
        models.append(str(comp.get("model", "")))
        if rating == "overall":
            rewards.append(_number(comp.get("overall_score"), f"{field}.overall_score"))
        else:
            rewards.append(_aspect_mean(comp.get("annotations"), f"{field}.annotations"))
    out = {k: v for k, v in row.items() if k not in ("instruction", "completions", "models")}
    out.update(prompt=instruction, responses=responses, rewards=rewards, models=models)
    return out
