"""Deterministic, dependency-free policy and scorer for tests and dry runs.

Outputs are pure functions of (prompt, seed, sample index): they behave like a seeded sampler
(sharding, batching and resuming cannot change them) and cost microseconds.
"""

from __future__ import annotations

import hashlib
import time

from pvar.backends.base import Generation, Prompt, Scores, prompt_text

WORDS = ("yes", "no", "maybe", "certainly", "perhaps", "indeed", "rarely", "often", "always", "never")


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b("\x00".join(map(str, parts)).encode(), digest_size=8).digest(), "little")


class FakePolicy:
    """Answers with 2-12 hash-chosen words; ``delay`` seconds per prompt simulates a slow model."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def setup(self) -> None:
        pass

    def generate(self, prompts: list[Prompt], n: int, seeds: list[int], start: int = 0) -> Generation:
        responses, stopped, tokens = [], [], 0
        for prompt, seed in zip(prompts, seeds, strict=True):
            if self.delay:
                time.sleep(self.delay)
            text = prompt_text(prompt)
            outs = []
            for j in range(start, start + n):
                k = 2 + _h(text, seed, j) % 11
                outs.append(" ".join(WORDS[_h(text, seed, j, t) % len(WORDS)] for t in range(k)))
                tokens += k
            responses.append(outs)
            stopped.append([_h(text, seed, j, "eos") % 5 != 0 for j in range(start, start + n)])
        return Generation(responses, stopped, tokens)


class FakeScorer:
    """Score = hash of (prompt, response) mapped to [-2, 2], plus 0.1 per word of overlap with the
    reference: deterministic, varied across prompts, and sensitive to the reference."""

    def setup(self) -> None:
        pass

    def score(self, prompts: list[Prompt], responses: list[list[str]], references: list[str | None]) -> Scores:
        out = []
        for prompt, resps, ref in zip(prompts, responses, references, strict=True):
            ref_words = set((ref or "").lower().split())
            text = prompt_text(prompt)
            out.append([
                (_h(text, r) % 4001) / 1000.0 - 2.0 + 0.1 * len(ref_words & set(r.lower().split()))
                for r in resps
            ])
        return Scores(out)
