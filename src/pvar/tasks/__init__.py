"""Verifiable tasks: prompts with instructions whose gold score is exact and deterministic.

An offline testbed needs a ground truth that no learned judge supplies: here every row carries its
constraints as a JSON spec in ``reference``, and `gold` recomputes the fraction satisfied from the
reply alone. `guard` is a separate content check, because degenerate replies ("no commas" is met
by an empty string, an end phrase by a copy of its instruction) can satisfy constraints; report it
next to gold so such gains show up. `VERSION` names the rules of both.

Standard library only; importing this package never imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
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
    "VERSION",
    "Constraint",
    "TaskSpec",
    "constrained_prompt",
    "count_words",
    "draw_spec",
    "gold",
    "gold_detail",
    "gold_scores",
    "guard",
    "is_echo",
    "make_constraint",
    "parse_spec",
    "spec_json",
    "target_text",
    "task_rows",
]

VERSION = "tasks-v2"
"""Version of the verdicts of gold and guard: it enters the fingerprints of gold rewards and judges, so
a run folder scored under other rules is recomputed (or refused), never mixed. v2: start and end
phrases on word boundaries, the echo rule in the guard. Bump it whenever a verdict can change."""

_WORD = re.compile(r"\w+")
ECHO_N = 3  # copies are runs of this many words: shorter runs are common phrasing ("of the", "how to")
ECHO_SHARE = 0.6  # an answer whose word 3-grams are at least this share copies is an echo
ECHO_OWN = 2  # ... and so is one with fewer words than this outside its copied runs


def _spec(spec: str | TaskSpec) -> TaskSpec:
    return spec if isinstance(spec, TaskSpec) else parse_spec(spec)


def gold_detail(spec: str | TaskSpec, response: str) -> dict[str, bool]:
    """Whether the reply satisfies each constraint, keyed by instruction id."""
    return {c.id: c.check(response) for c in _spec(spec).constraints}


def constraint_key(spec: str | TaskSpec) -> str:
    """A task's constraint types as one label (its instruction ids, sorted, joined by '+'): a stratum."""
    return "+".join(sorted(c.id for c in _spec(spec).constraints))


def gold(spec: str | TaskSpec, response: str) -> float:
    """Fraction of the spec's constraints the reply satisfies, in [0, 1]."""
    detail = gold_detail(spec, response)
    return sum(detail.values()) / len(detail)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _prompt_text(prompt: str | Sequence[Mapping[str, str]]) -> str:
    """A text prompt as is; chat messages joined, so echoing any of them counts."""
    return prompt if isinstance(prompt, str) else "\n".join(str(m.get("content", "")) for m in prompt)


def is_echo(response: str, prompt: str | Sequence[Mapping[str, str]]) -> bool:
    """Whether the answer mostly repeats the prompt (its question or its instructions) instead of answering.

    Both are cut into lowercase word tokens (\\w+ runs); a *copy* is a run of 3 consecutive answer
    words that also occurs consecutively in the prompt. The answer is an echo when at least 60 % of
    its word 3-grams are copies, or when fewer than 2 of its words lie outside every copy: once the
    copied question and instructions are removed, at most one word is left (the "Sure" before a
    copied end phrase), which is not an answer. Answers under 3 words have no 3-gram and are not
    echoes here (`guard` rejects them for length).

    The thresholds were read off the greedy answers of small models on the format testbed (the
    cpu-full run of docs/results among them; 5,747 passed the rest of the guard). Echoes sit at or
    above them: "RRT is sampling-based method." to "RRT is sampling-based method or searching-based
    method?", "Sure! I hope this helps.", a copied instruction. An answer that quotes a phrase of
    the question and says something passes: "The capital of France is Paris." has half its 3-grams
    copied and 2 words of its own. The cost: a one-word answer wrapped in a restated question ("The
    capital of France: Paris.") reads as an echo too.
    """
    words = _words(response)
    grams = [tuple(words[i:i + ECHO_N]) for i in range(len(words) - ECHO_N + 1)]
    if not grams:
        return False
    source = _words(_prompt_text(prompt))
    seen = {tuple(source[i:i + ECHO_N]) for i in range(len(source) - ECHO_N + 1)}
    copied = [i for i, g in enumerate(grams) if g in seen]
    covered = {i + j for i in copied for j in range(ECHO_N)}
    return len(copied) >= ECHO_SHARE * len(grams) or len(words) - len(covered) < ECHO_OWN


def guard(response: str, prompt: str | Sequence[Mapping[str, str]] | None = None) -> float:
    """1.0 for a real answer, 0.0 for a degenerate one.

    A real answer has at least 3 words, at least 40 % distinct words (catches "a a a a" and loops)
    and at least 50 % letters among its non-space characters (catches punctuation or digit soup).
    Words are \\w+ runs, compared lowercased. Type-token ratios of normal English stay above 0.4 up
    to a few hundred words, so long honest replies pass. Given the prompt, it must also not be an
    echo of it (`is_echo`): copying the question or the instructions meets some constraints (an
    end phrase, a word limit) without answering anything.
    """
    words = _words(response)
    if len(words) < 3 or len(set(words)) < 0.4 * len(words):
        return 0.0
    chars = [c for c in response if not c.isspace()]
    if sum(c.isalpha() for c in chars) < 0.5 * len(chars):
        return 0.0
    return 0.0 if prompt is not None and is_echo(response, prompt) else 1.0


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
