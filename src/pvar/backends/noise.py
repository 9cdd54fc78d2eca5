"""Counter-based sampling noise: the uniform for (sample seed, decoding step, token id) is a pure function.

A seeded ``torch.Generator`` per row makes a row's noise a *stream*: to draw step t it must draw
steps 0..t-1 first, for the whole vocabulary, on the CPU. A counter-based generator (as in
Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) instead hashes the counter
(seed, step, token) into 64 random bits. The noise of any token at any step can then be computed
alone, on any device, in any batch arrangement, and only for the tokens that can win (the top-k
candidates of a nucleus), so it costs a few integer operations per candidate.

The hash is SplitMix64's finaliser (Steele, Lea, Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014) applied three times: to the seed, then with the step, then with the token
id. Everything is int64 arithmetic with wrap-around, which torch computes identically on every
device, so the uniforms are bit-identical on CPU and CUDA. The top 52 bits make a float64 uniform
``(2k + 1) / 2**53``: never 0 or 1, so the Gumbel transform stays finite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

VERSION = "splitmix64-v1"  # part of generate's fingerprint: other noise, other samples


def _signed(value: int) -> int:
    """A 64-bit constant as the int64 with the same bits (torch multiplies int64 with wrap-around)."""
    return value - 2**64 if value >= 2**63 else value


MUL1 = _signed(0xBF58476D1CE4E5B9)
MUL2 = _signed(0x94D049BB133111EB)
STEP_KEY = _signed(0x9E3779B97F4A7C15)  # the golden ratio; odd, so step -> step * key is a bijection
TOKEN_KEY = _signed(0xD6E8FEB86659FD93)


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic: it copies the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser: a bijection of 64-bit words whose output bits look independent."""
    x = x ^ _shr(x, 30)
    x = x * MUL1
    x = x ^ _shr(x, 27)
    x = x * MUL2
    return x ^ _shr(x, 31)


def uniforms(seeds: torch.Tensor, steps: torch.Tensor | int, tokens: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1), float64, for rows with ``seeds`` (R,) at ``steps`` (R,) or one int, and
    candidate ``tokens`` (R, K); computed on ``tokens``' device, a pure function of the three."""
    import torch

    seeds = seeds.to(device=tokens.device, dtype=torch.int64)
    if isinstance(steps, int):  # one step for every row: its product with the key, wrapped as torch would
        offset: torch.Tensor | int = _signed(steps * STEP_KEY % 2**64)
    else:
        offset = steps.to(device=tokens.device, dtype=torch.int64) * STEP_KEY
    row = mix64(mix64(seeds) + offset)
    bits = mix64(row[:, None] + tokens.to(torch.int64) * TOKEN_KEY)
    return (_shr(bits, 12).double() * 2 + 1) * 2.0**-53


def gumbel(seeds: torch.Tensor, steps: torch.Tensor | int, tokens: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise -log(-log(u)) for each candidate token, float64 (at most ~36.7)."""
    return uniforms(seeds, steps, tokens).log().neg_().log_().neg_()
