"""What a policy (generation) and a scorer (reward) backend must provide.

Backends are cheap to construct and load their model in ``setup()``, which an engine calls once
per worker (a Ray actor, or the local process) before the first batch. Heavy imports happen there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

Prompt = str | list[dict[str, str]]  # text, or chat messages [{"role", "content"}]


@dataclass
class Generation:
    """``n`` responses per prompt, whether each ended with EOS, and the tokens generated."""

    responses: list[list[str]]
    stopped: list[list[bool]]
    new_tokens: int = 0


@dataclass
class Scores:
    """One raw score per response (never sigmoid-ed); ``truncated`` counts inputs cut to fit."""

    rewards: list[list[float]]
    truncated: int = 0
    info: dict[str, Any] = field(default_factory=dict)


class Policy(Protocol):
    def setup(self) -> None: ...

    def generate(self, prompts: list[Prompt], n: int, seeds: list[int]) -> Generation:
        """Sample ``n`` responses per prompt; sample j of a prompt depends only on (seeds[i], j)."""
        ...


class Scorer(Protocol):
    def setup(self) -> None: ...

    def score(
        self, prompts: list[Prompt], responses: list[list[str]], references: list[str | None]
    ) -> Scores:
        """Score each response of each prompt; ``references`` is None where a row has none."""
        ...


def prompt_text(prompt: Prompt) -> str:
    """The last user message of a chat prompt, or the text itself (for non-chat scorers)."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else prompt[-1]["content"]
