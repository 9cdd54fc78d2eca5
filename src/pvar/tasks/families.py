"""Task families: turn real user prompts into prompts with verifiable instructions, deterministically.

A row's ``reference`` is its spec as JSON, ``{"task": family, "constraints": [{"id": ..., **args}]}``,
so any scorer that sees references can recompute the exact gold score offline. The draw for a row
depends only on (family, seed, prompt_id), through SHA-256 rather than Python's salted hash(), so a
row is the same in every process and does not move when other rows are added or removed.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pvar.tasks.constraints import (
    BulletLists,
    Constraint,
    EndPhrase,
    ForbiddenWords,
    KeywordExistence,
    Lowercase,
    NoComma,
    NumberOfWords,
    StartPhrase,
    make_constraint,
)

FAMILIES = ("ifeval", "format", "phrase", "graded")

# Parameter lists are short and easy on purpose: a 135M chat model should satisfy each instruction
# some of the time, so sampled replies differ in gold score and preference pairs carry signal.
KEYWORDS = ("river", "balance", "honest", "simple", "future", "garden", "friend", "light")
FORBIDDEN = ("very", "really", "important", "however", "basically", "actually")  # common filler words
START_WORDS = ("Sure", "Yes", "Certainly", "Well")
END_PHRASES = ("Is there anything else I can help with?", "Any other questions?", "I hope this helps.")
WORD_LIMITS = (30, 40, 40, 50)  # "less than N"; 40 drawn twice as often
BULLET_COUNTS = (2, 3, 4)
PHRASES = (
    "Great question!",
    "Here is my answer:",
    "In short,",
    "Let me explain.",
    "Good point.",
    "To put it simply,",
    "Thanks for asking!",
    "Here is what I think:",
)


def _number_words(rng: random.Random) -> Constraint:
    if rng.random() < 0.2:  # an easy "at least" keeps some length variance at the top
        return NumberOfWords(num_words=20, relation="at least")
    return NumberOfWords(num_words=rng.choice(WORD_LIMITS), relation="less than")


# (id, weight, maker). Ids are distinct within a row and the word lists share no word with the phrases,
# so two draws never contradict each other; _CLASHES keeps out pairs that merely read as contradictory.
_IFEVAL_DRAWS: tuple[tuple[str, int, Callable[[random.Random], Constraint]], ...] = (
    (Lowercase.id, 2, lambda rng: Lowercase()),
    (NoComma.id, 2, lambda rng: NoComma()),
    (StartPhrase.id, 3, lambda rng: StartPhrase(start_phrase=rng.choice(START_WORDS))),
    (NumberOfWords.id, 3, _number_words),
    (EndPhrase.id, 2, lambda rng: EndPhrase(end_phrase=rng.choice(END_PHRASES))),
    (KeywordExistence.id, 3, lambda rng: KeywordExistence(keywords=(rng.choice(KEYWORDS),))),
    (ForbiddenWords.id, 1, lambda rng: ForbiddenWords(forbidden_words=tuple(sorted(rng.sample(FORBIDDEN, 2))))),
    (BulletLists.id, 1, lambda rng: BulletLists(num_bullets=rng.choice(BULLET_COUNTS))),
)
# format: one instruction per prompt, each about the shape of the reply, never its content, so that one
# behaviour (open with a word, stop early, close with a phrase, drop commas, no capitals) carries across
# prompts. A 135M model learns these from a few dozen DPO pairs, where it barely learns keyword insertion.
_FORMAT_DRAWS: tuple[Callable[[random.Random], Constraint], ...] = (
    lambda rng: Lowercase(),
    lambda rng: NoComma(),
    lambda rng: StartPhrase(start_phrase=rng.choice(START_WORDS)),
    lambda rng: NumberOfWords(num_words=20, relation="less than"),
    lambda rng: EndPhrase(end_phrase=rng.choice(END_PHRASES)),
)
# "all lowercase" next to "begin with the exact phrase 'Sure'": the check ignores case, the reader may not.
_CLASHES = {frozenset((Lowercase.id, StartPhrase.id)), frozenset((Lowercase.id, EndPhrase.id))}


@dataclass(frozen=True)
class TaskSpec:
    """A family name and the constraints a reply must satisfy (gold = fraction satisfied)."""

    task: str
    constraints: tuple[Constraint, ...]

    def __post_init__(self) -> None:
        if self.task not in FAMILIES:
            raise ValueError(f"unknown task family {self.task!r}; known: {', '.join(FAMILIES)}")
        object.__setattr__(self, "constraints", tuple(self.constraints))
        if not self.constraints:
            raise ValueError("a task spec needs at least one constraint")
        ids = [c.id for c in self.constraints]
        if len(set(ids)) != len(ids):
            raise ValueError(f"a task spec lists a constraint id twice: {ids}")


def spec_json(spec: TaskSpec) -> str:
    """The canonical reference string (sorted keys), so equal specs give byte-equal references."""
    return json.dumps({"task": spec.task, "constraints": [c.to_dict() for c in spec.constraints]}, sort_keys=True)


def parse_spec(text: str) -> TaskSpec:
    """Read a reference written by `spec_json`; ValueError says what is wrong with it."""
    if not isinstance(text, str):
        raise ValueError(f"a task spec must be a JSON string, got {type(text).__name__}")
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"task spec is not valid JSON ({exc}): {text!r:.120}") from None
    if not isinstance(data, dict) or set(data) != {"task", "constraints"}:
        raise ValueError(f"a task spec must be an object with exactly 'task' and 'constraints': {text!r:.120}")
    if not isinstance(data["constraints"], list):
        raise ValueError(f"'constraints' must be a list, got {type(data['constraints']).__name__}")
    return TaskSpec(task=data["task"], constraints=tuple(make_constraint(c) for c in data["constraints"]))


def _rng(family: str, seed: int, prompt_id: str) -> random.Random:
    digest = hashlib.sha256(f"{family}\x00{seed}\x00{prompt_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def draw_spec(family: str, prompt_id: str, seed: int) -> TaskSpec:
    """The constraints for one base prompt: a pure function of (family, prompt_id, seed)."""
    rng = _rng(family, seed, prompt_id)
    if family == "phrase":
        return TaskSpec("phrase", (StartPhrase(start_phrase=rng.choice(PHRASES)),))
    if family == "format":
        return TaskSpec("format", (rng.choice(_FORMAT_DRAWS)(rng),))
    if family not in ("ifeval", "graded"):
        raise ValueError(f"unknown task family {family!r}; known: {', '.join(FAMILIES)}")
    # graded: 2 or 3 instructions, so gold (the fraction met) takes 3-4 levels and PVar is no longer a
    # function of the success rate alone (as it is under 0/1 gold, where it ranks exactly as reward std)
    count = (2 if rng.random() < 0.5 else 3) if family == "graded" else (1 if rng.random() < 0.5 else 2)
    pool = list(_IFEVAL_DRAWS)
    chosen: list[Constraint] = []
    for _ in range(count):
        i = rng.choices(range(len(pool)), weights=[w for _, w, _ in pool])[0]
        cid, _, make = pool.pop(i)
        chosen.append(make(rng))
        pool = [d for d in pool if frozenset((cid, d[0])) not in _CLASHES]
    return TaskSpec(family, tuple(chosen))


def constrained_prompt(prompt: str, spec: TaskSpec) -> str:
    """The base prompt, a blank line, then one instruction sentence per line."""
    return prompt + "\n\n" + "\n".join(c.describe() for c in spec.constraints)


def task_rows(family: str, base_rows: list[dict], seed: int) -> list[dict]:
    """Constrained rows ``{"prompt_id", "prompt", "reference", "task"}``, one per base row, in order."""
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; known: {', '.join(FAMILIES)}")
    rows, seen = [], set()
    for i, base in enumerate(base_rows):
        if not isinstance(base, dict) or "prompt_id" not in base or not isinstance(base.get("prompt"), str):
            raise ValueError(f"base row {i} needs a 'prompt_id' and a text 'prompt'")
        pid = str(base["prompt_id"])
        if pid in seen:
            raise ValueError(f"base row {i}: prompt_id {pid!r} appears twice")
        seen.add(pid)
        spec = draw_spec(family, pid, seed)
        rows.append({"prompt_id": f"{family}-{pid}", "prompt": constrained_prompt(base["prompt"], spec),
                     "reference": spec_json(spec), "task": family})
    return rows


def target_text(spec: str | TaskSpec) -> str | None:
    """The required opening phrase, for reading its probability off by teacher forcing; None if none."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    for c in spec.constraints:
        if isinstance(c, StartPhrase):
            return c.start_phrase
    return None
