"""Exact gold rewards of the verifiable tasks (:mod:`pvar.tasks`): a program, not a model.

Each row's ``reference`` holds its task spec (the constraints as JSON); the reward of a response
is the fraction of them it satisfies. ``gold-guarded`` multiplies that by the content guard, so a
degenerate reply (empty, looping, an echo of the prompt) that happens to meet a constraint earns
nothing.
"""

from __future__ import annotations

from pvar.backends.base import Prompt, Scores
from pvar.errors import ConfigError

KINDS = ("gold", "gold-guarded")


def rules_version(spec: str) -> str | None:
    """The version of the task rules a gold reward or judge ``spec`` scores by (``pvar.tasks.VERSION``);
    None for any other spec. Fingerprints of configs that name a gold spec include it, so outputs
    scored under older rules are recomputed rather than mixed, and other fingerprints do not move."""
    if not (isinstance(spec, str) and spec.strip().lower() in KINDS):
        return None
    from pvar.tasks import VERSION

    return VERSION


class GoldReward:
    """Scores with :func:`pvar.tasks.gold` (and :func:`pvar.tasks.guard` for ``gold-guarded``)."""

    needs_reference = True

    def __init__(self, kind: str = "gold") -> None:
        if kind not in KINDS:
            raise ConfigError(f"reward: unknown gold reward {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind = kind

    def setup(self) -> None:
        pass

    def check_reference(self, reference: str | None) -> str | None:
        """Why ``reference`` is not a task spec (None when it is): checked before scoring starts."""
        from pvar.tasks import parse_spec

        try:
            parse_spec(reference)
        except (TypeError, ValueError) as exc:
            return f"not a task spec (gold scoring reads the task from 'reference'): {exc}"
        return None

    def score(self, prompts: list[Prompt], responses: list[list[str]], references: list[str | None]) -> Scores:
        from pvar import tasks

        try:
            rewards = tasks.gold_scores(prompts, responses, references)
        except ValueError as exc:
            raise ValueError(f"reward {self.kind!r}: {exc}") from None
        if self.kind == "gold-guarded":
            rewards = [[g * tasks.guard(r, p) for g, r in zip(row, resps, strict=True)]
                       for row, resps, p in zip(rewards, responses, prompts, strict=True)]
        return Scores(rewards)

    def __repr__(self) -> str:
        return f"GoldReward({self.kind!r})"
