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
    truncated: int = 0  # prompts cut from the left to fit the context with max_new_tokens


@dataclass
class Scores:
    """One raw score per response (never sigmoid-ed); ``truncated`` counts inputs cut to fit."""

    rewards: list[list[float]]
    truncated: int = 0
    info: dict[str, Any] = field(default_factory=dict)


class Policy(Protocol):
    def setup(self) -> None: ...

    def generate(self, prompts: list[Prompt], n: int, seeds: list[int], start: int = 0) -> Generation:
        """Samples ``start .. start + n - 1`` of each prompt; sample j depends only on (seeds[i], j)."""
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


def check_sampling(*, max_new_tokens: int, temperature: float, top_p: float, batch_size: int) -> None:
    """Refuse sampling settings no backend can honour (shared by every policy constructor)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, not {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, not {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], not {top_p}")


def generation_prompt(tokenizer: Any, prompt: Prompt) -> tuple[str, bool]:
    """The text a policy continues, and whether it came from the chat template.

    Chat models get their template with a generation prompt (a text prompt becomes one user
    message); others get the raw text. Templated text already holds its special tokens, so the
    caller must not add BOS again (the flag says so).
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), True
    return (prompt if isinstance(prompt, str) else "\n\n".join(m["content"] for m in prompt)), False


def generation_prompt_ids(tokenizer: Any, prompt: Prompt, *, limit: int | None = None,
                          max_new_tokens: int = 0) -> list[int]:
    """Token ids of ``generation_prompt`` (special tokens added only when no template was applied).

    Every policy backend hands the model these ids (vLLM as a token prompt), so a chat template's
    BOS is never doubled. With a context ``limit``, prompts longer than ``limit - max_new_tokens``
    keep their end: it holds the question (`keep_end`; callers count the prompts it cut).
    """
    return keep_end(prompt_token_ids(tokenizer, prompt), limit=limit, max_new_tokens=max_new_tokens)


def prompt_token_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """``generation_prompt``'s token ids, whatever their length."""
    text, templated = generation_prompt(tokenizer, prompt)
    return list(tokenizer(text, add_special_tokens=not templated)["input_ids"])


def keep_end(ids: list[int], *, limit: int | None, max_new_tokens: int = 0) -> list[int]:
    """``ids`` cut from the left to leave ``max_new_tokens`` of a context of ``limit`` (at least one id kept)."""
    if limit and len(ids) > limit - max_new_tokens:
        return ids[len(ids) - max(1, limit - max_new_tokens):]
    return ids
