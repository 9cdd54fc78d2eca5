"""Verifiable instructions with exact checkers, after IFEval (Zhou et al. 2023, arXiv:2311.07911).

Each checker is a frozen dataclass: its fields are the instruction's arguments (so a spec is plain
JSON), `describe()` is the sentence appended to the prompt and `check(response)` is the gold verdict.
The semantics follow the reference implementation (google-research ``instruction_following_eval``,
as vendored in lm-evaluation-harness, Apache-2.0), minus its language detection, so that a gold
score here means what an IFEval score means. Deliberate differences are noted on each class.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

RELATIONS = ("less than", "at least")

_WORD = re.compile(r"\w+")  # IFEval counts words with nltk's RegexpTokenizer(r"\w+"): the same tokens
_BULLET_STAR = re.compile(r"^\s*\*[^\*].*$", re.MULTILINE)
_BULLET_DASH = re.compile(r"^\s*-.*$", re.MULTILINE)
_TITLE = re.compile(r"<<[^\n]+>>")
_CAPITAL_TOKEN = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")


def count_words(text: str) -> int:
    """Words as IFEval counts them: maximal runs of word characters (so "don't" is two)."""
    return len(_WORD.findall(text))


def _compare(value: int, relation: str, threshold: int) -> bool:
    return value < threshold if relation == RELATIONS[0] else value >= threshold


def _joined(left: str, right: str) -> bool:
    """Whether two adjacent characters both are word characters (\\w, Unicode): a phrase ending on
    one and text going on with the other is a fragment of a longer word ("Sure" in "Surefire")."""
    return bool(left and right and _WORD.match(left) and _WORD.match(right))


def _has_word(word: str, text: str) -> bool:
    """Whole-word, case-insensitive match: "art" is not found in "start"."""
    return re.search(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE) is not None


def _quoted(words: tuple[str, ...]) -> str:
    items = [f"'{w}'" for w in words]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@dataclass(frozen=True)
class Constraint:
    """Base class: subclasses set `id` and implement `describe` and `check`."""

    id: ClassVar[str] = ""

    def describe(self) -> str:
        raise NotImplementedError

    def check(self, response: str) -> bool:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The spec entry: ``{"id": ..., **arguments}`` with tuples as lists (JSON-ready)."""
        args = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return {"id": self.id, **args}

    # validation helpers, called from __post_init__ so a bad spec fails where it is parsed
    def _int(self, name: str, lo: int) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{self.id}: {name} must be an integer >= {lo}, got {value!r}")

    def _relation(self, name: str) -> None:
        if getattr(self, name) not in RELATIONS:
            raise ValueError(f"{self.id}: {name} must be one of {RELATIONS}, got {getattr(self, name)!r}")

    def _text(self, name: str) -> None:
        value = getattr(self, name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{self.id}: {name} must be a non-empty string, got {value!r}")

    def _words(self, name: str) -> None:
        value = getattr(self, name)
        if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
            raise ValueError(f"{self.id}: {name} must be a non-empty list of words, got {value!r}")
        for w in value:
            if not isinstance(w, str) or not re.fullmatch(r"\w+(?:[ '-]\w+)*", w):
                raise ValueError(f"{self.id}: {name} entries must be words, got {w!r}")
        object.__setattr__(self, name, tuple(value))  # lists from JSON become hashable tuples


@dataclass(frozen=True)
class Lowercase(Constraint):
    """All lowercase, with at least one letter (IFEval also requires langdetect to say English)."""

    id: ClassVar[str] = "change_case:english_lowercase"

    def describe(self) -> str:
        return (
            "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed."
        )

    def check(self, response: str) -> bool:
        return response == response.lower() and any(c.isalpha() for c in response)


@dataclass(frozen=True)
class NoComma(Constraint):
    id: ClassVar[str] = "punctuation:no_comma"

    def describe(self) -> str:
        return "In your entire response, refrain from the use of any commas."

    def check(self, response: str) -> bool:
        return "," not in response


@dataclass(frozen=True)
class NumberOfWords(Constraint):
    """Word count ``< num_words`` ("less than") or ``>= num_words`` ("at least"), words as \\w+ runs."""

    id: ClassVar[str] = "length_constraints:number_words"
    num_words: int
    relation: str

    def __post_init__(self) -> None:
        self._int("num_words", 1)
        self._relation("relation")

    def describe(self) -> str:
        return f"Answer with {self.relation} {self.num_words} words."

    def check(self, response: str) -> bool:
        return _compare(count_words(response), self.relation, self.num_words)


@dataclass(frozen=True)
class KeywordExistence(Constraint):
    """Every keyword appears as a whole word, any case.

    IFEval matches keywords as substrings ("art" inside "start" counts); a whole-word match keeps
    a reward from paying for accidental fragments, so verdicts differ only on such fragments.
    """

    id: ClassVar[str] = "keywords:existence"
    keywords: tuple[str, ...]

    def __post_init__(self) -> None:
        self._words("keywords")

    def describe(self) -> str:
        noun = "keyword" if len(self.keywords) == 1 else "keywords"
        return f"Include the {noun} {_quoted(self.keywords)} in the response."

    def check(self, response: str) -> bool:
        return all(_has_word(k, response) for k in self.keywords)


@dataclass(frozen=True)
class ForbiddenWords(Constraint):
    """No forbidden word appears as a whole word, any case (as IFEval)."""

    id: ClassVar[str] = "keywords:forbidden_words"
    forbidden_words: tuple[str, ...]

    def __post_init__(self) -> None:
        self._words("forbidden_words")

    def describe(self) -> str:
        return f"Do not include the words {_quoted(self.forbidden_words)} in the response."

    def check(self, response: str) -> bool:
        return not any(_has_word(w, response) for w in self.forbidden_words)


@dataclass(frozen=True)
class StartPhrase(Constraint):
    """The stripped reply starts with the phrase, any case, and the phrase ends on a word boundary.

    A bare prefix test would let "Surefire ..." meet "begin with 'Sure'", so a word character may
    not follow a phrase that ends in one; a phrase ending in punctuation ("Great question!") is a
    whole unit already and may be followed by anything. Not an IFEval instruction (IFEval's closest,
    combination:repeat_prompt, uses a bare prefix test); it gives a single opening phrase whose
    probability can also be read off by teacher forcing.
    """

    id: ClassVar[str] = "startend:start_phrase"
    start_phrase: str

    def __post_init__(self) -> None:
        self._text("start_phrase")

    def describe(self) -> str:
        return f"Begin your reply with the exact phrase '{self.start_phrase}'."

    def check(self, response: str) -> bool:
        text, phrase = response.strip().lower(), self.start_phrase.strip().lower()
        return text.startswith(phrase) and not _joined(phrase[-1], text[len(phrase):len(phrase) + 1])


@dataclass(frozen=True)
class EndPhrase(Constraint):
    """The reply, stripped of whitespace and then of double quotes, ends with the phrase, any case,
    and the phrase starts on a word boundary.

    IFEval's test is a bare suffix test, under which "...xIs there anything else I can help with?"
    passes; here a word character may not precede a phrase that starts with one. The phrase must
    be last (after the stripping), so nothing can follow it.
    """

    id: ClassVar[str] = "startend:end_checker"
    end_phrase: str

    def __post_init__(self) -> None:
        self._text("end_phrase")

    def describe(self) -> str:
        return f"Finish your response with this exact phrase '{self.end_phrase}'. No other words should follow it."

    def check(self, response: str) -> bool:
        text, phrase = response.strip().strip('"').lower(), self.end_phrase.strip().lower()
        return text.endswith(phrase) and not _joined(text[: len(text) - len(phrase)][-1:], phrase[0])


@dataclass(frozen=True)
class BulletLists(Constraint):
    """Exactly ``num_bullets`` lines that start with "* " or "-" (IFEval's two patterns, summed)."""

    id: ClassVar[str] = "detectable_format:number_bullet_lists"
    num_bullets: int

    def __post_init__(self) -> None:
        self._int("num_bullets", 1)

    def describe(self) -> str:
        return (
            f"Your answer must contain exactly {self.num_bullets} bullet points. "
            "Use the markdown bullet points such as:\n* This is point 1.\n* This is point 2"
        )

    def check(self, response: str) -> bool:
        found = len(_BULLET_STAR.findall(response)) + len(_BULLET_DASH.findall(response))
        return found == self.num_bullets


@dataclass(frozen=True)
class CapitalWordFrequency(Constraint):
    """Count of all-capital words compared with a threshold.

    IFEval tokenizes with nltk's word_tokenize; here a word is a run of letters/digits joined by
    hyphens or apostrophes, which agrees on ordinary prose and avoids an nltk dependency.
    """

    id: ClassVar[str] = "change_case:capital_word_frequency"
    capital_frequency: int
    capital_relation: str

    def __post_init__(self) -> None:
        self._int("capital_frequency", 1)
        self._relation("capital_relation")

    def describe(self) -> str:
        return (
            f"In your response, words with all capital letters should appear "
            f"{self.capital_relation} {self.capital_frequency} times."
        )

    def check(self, response: str) -> bool:
        n = sum(1 for w in _CAPITAL_TOKEN.findall(response) if w.isupper())
        return _compare(n, self.capital_relation, self.capital_frequency)


@dataclass(frozen=True)
class Title(Constraint):
    """A non-blank title on one line inside double angular brackets, <<like this>>."""

    id: ClassVar[str] = "detectable_format:title"

    def describe(self) -> str:
        return "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>."

    def check(self, response: str) -> bool:
        return any(t.lstrip("<").rstrip(">").strip() for t in _TITLE.findall(response))


CHECKERS: dict[str, type[Constraint]] = {
    cls.id: cls
    for cls in (Lowercase, NoComma, NumberOfWords, KeywordExistence, ForbiddenWords, StartPhrase, EndPhrase,
                BulletLists, CapitalWordFrequency, Title)
}


def make_constraint(entry: Any) -> Constraint:
    """Build a checker from a spec entry ``{"id": ..., **arguments}``; ValueError names what is wrong."""
    if not isinstance(entry, dict):
        raise ValueError(f"a constraint must be an object with an 'id', got {entry!r:.100}")
    entry = dict(entry)
    cid = entry.pop("id", None)
    if cid not in CHECKERS:
        raise ValueError(f"unknown constraint id {cid!r}; known: {', '.join(sorted(CHECKERS))}")
    cls = CHECKERS[cid]
    expected = {f.name for f in fields(cls)}
    if set(entry) != expected:
        missing, extra = sorted(expected - set(entry)), sorted(set(entry) - expected)
        raise ValueError(f"{cid}: arguments must be {sorted(expected)}; missing {missing}, unexpected {extra}")
    return cls(**entry)
