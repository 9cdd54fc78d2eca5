"""Verifiable tasks: prompts with instructions whose gold score is exact and deterministic.

An offline testbed needs a ground truth that no learned judge supplies: here every row carries its
constraints as a JSON spec in ``reference``, and `gold` recomputes the fraction satisfied from the
reply alone. `guard` is a separate content check, because degenerate replies ("no commas" is met
by an empty string) can satisfy constraints; report it next to gold so such gains show up.

Standard library only; importing this package never imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pvar.tasks.constraints import CHECKERS, Constraint, count_words, make_constraint
from pvar.tasks.families import (
    FAMILIES,
    TaskSpec,
    constrained_prompt,
    draw_spec,
    parse_spec,
    spec_json,
    target_text,
    task_rows,
)

__all__ = [
    "CHECKERS",
    "FAMILIES",
    "Constraint",
    "TaskSpec",
    "constrained_prompt",
    "count_words",
    "draw_spec",
    "gold",
    "gold_detail",
    "gold_scores",
    "guard",
    "make_constraint",
    "parse_spec",
    "spec_json",
    "target_text",
    "task_rows",
]

_WORD = re.compile(r"\w+")


def _spec(spec: str | TaskSpec) -> TaskSpec:
    return spec if isinstance(spec, TaskSpec) else parse_spec(spec)


def gold_detail(spec: str | TaskSpec, response: str) -> dict[str, bool]:
    """Whether the reply satisfies each constraint, keyed by instruction id."""
    return {c.id: c.check(response) for c in _spec(spec).constraints}


def gold(spec: str | TaskSpec, response: str) -> float:
    """Fraction of the spec's constraints the reply satisfies, in [0, 1]."""
    detail = gold_detail(spec, response)
    return sum(detail.values()) / len(detail)


def guard(response: str) -> float:
    """1.0 for a real answer, 0.0 for a degenerate one.

    A real answer has at least 3 words, at least 40 % distinct words (catches "a a a a" and loops)
    and at least 50 % letters among its non-space characters (catches punctuation or digit soup).
    Words are \\w+ runs, compared lowercased. Type-token ratios of normal English stay above 0.4 up
    to a few hundred words, so long honest replies pass.
    """
    words = [w.lower() for w in _WORD.findall(response)]
    if len(words) < 3 or len(set(words)) < 0.4 * len(words):
        return 0.0
    chars = [c for c in response if not c.isspace()]
    return 1.0 if sum(c.isalpha() for c in chars) >= 0.5 * len(chars) else 0.0


def gold_scores(prompts: Sequence[Any], responses: Sequence[Sequence[str]],
                references: Sequence[str | None]) -> list[list[float]]:
    """Gold of each response under its row's spec: usable as a "module:function" reward.

    Prompts are ignored (the spec in the reference is the whole task). A row without a valid spec
    is an error, not a zero, so a misrouted dataset cannot pass as a hard one.
    """
    if not len(prompts) == len(responses) == len(references):
        raise ValueError(f"prompts, responses and references differ in length: "
                         f"{len(prompts)}, {len(responses)}, {len(references)}")
    out = []
    for i, (resps, ref) in enumerate(zip(responses, references, strict=True)):
        if ref is None:
            raise ValueError(f"row {i}: no reference; gold scoring needs the task spec in 'reference'")
        try:
            spec = _spec(ref)
        except ValueError as exc:
            raise ValueError(f"row {i}: reference is not a task spec: {exc}") from None
        out.append([gold(spec, r) for r in resps])
    return out
