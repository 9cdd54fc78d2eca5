"""Stable per-prompt seeds: the same (run seed, prompt_id) gives the same randomness anywhere.

Seeding per prompt, not per batch, is what keeps samples and random choices identical across
sharding, batch order and resumption.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np


def prompt_seed(seed: int, prompt_id: str) -> int:
    """A 63-bit seed derived from the run seed and the prompt id (blake2b; stable across runs)."""
    digest = hashlib.blake2b(f"{int(seed)}\x00{prompt_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def prompt_seeds(seed: int, prompt_ids: Iterable[str]) -> np.ndarray:
    """``prompt_seed`` for many prompts, as int64."""
    return np.fromiter((prompt_seed(seed, str(p)) for p in prompt_ids), dtype=np.int64)


def prompt_uniforms(seed: int, prompt_ids: Iterable[str]) -> np.ndarray:
    """One uniform number in [0, 1) per prompt, from its seed's top 53 bits."""
    return (prompt_seeds(seed, prompt_ids) >> 10).astype(np.float64) / float(1 << 53)
