"""Seeded top-p sampling as a choice of token per row, from counter-based Gumbel noise.

The argmax of ``logits / T + Gumbel`` over the top-p nucleus is an exact draw from the
top-p-filtered ``softmax(logits / T)`` (the Gumbel-max trick). The Gumbel noise of token v at
decoding step t of a row with seed s is a pure function of (s, t, v) (`pvar.backends.noise`),
computed on the logits' device for the candidate tokens only, so a row's samples depend on its
seed alone: not on its batch, its slot, the device, or how many samples were asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SEED_MULTIPLIER = 1_000_003


def sample_seed(seed: int, j: int) -> int:
    """The noise seed of sample ``j`` of a prompt whose seed is ``seed`` (fits torch's int64)."""
    return (int(seed) * SEED_MULTIPLIER + int(j)) % 2**63


class GumbelSampler:
    """Seeded top-p sampling as a choice of token per row, from counter-based Gumbel noise.

    ``seeds[r]`` is row r's noise seed; the k-th call (HF's ``LogitsProcessor`` protocol,
    ``processor(input_ids, scores)``) is decoding step k for every row. It returns the scores with
    every token but the chosen one at -inf, so HF's greedy argmax takes the choice.
    `choose(scores, seeds, steps)` is the same draw for rows at their own steps (continuous
    batching). ``greedy=True`` leaves the scores unchanged.

    Only candidates get noise: the ``TOPK`` most likely tokens, whose probabilities (from one
    log-normaliser over the vocabulary) mostly hold the nucleus. A row whose top-k mass stays
    below ``top_p`` (a flat distribution) is redone with ``32 * TOPK`` candidates, and then with the
    whole sorted vocabulary; ``top_p = 1`` makes the whole vocabulary the nucleus, so every token
    gets noise. The draw is the same whichever path a row takes, since a token's noise does not
    depend on the others.
    """

    TOPK = 64

    def __init__(self, seeds: Sequence[int], *, temperature: float = 1.0, top_p: float = 1.0,
                 greedy: bool = False) -> None:
        if not greedy and temperature <= 0:
            raise ValueError(f"temperature must be > 0 for sampling, not {temperature} (use greedy=True)")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {top_p}")
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.greedy = greedy
        self.seeds = [int(s) for s in seeds]
        self.rows = len(self.seeds)
        self.step = 0  # HF calls the processor once per decoding step
        self._seed_tensor: torch.Tensor | None = None
        self._buffer: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.greedy:
            return scores
        if scores.shape[0] != self.rows:
            raise RuntimeError(f"GumbelSampler was built for {self.rows} rows but got {scores.shape[0]}")
        if self._seed_tensor is None or self._seed_tensor.device != scores.device:
            import torch

            self._seed_tensor = torch.tensor(self.seeds, dtype=torch.int64, device=scores.device)
        picked = self.choose(scores, self._seed_tensor, self.step)
        self.step += 1
        return scores.fill_(-math.inf).scatter_(1, picked[:, None], 0.0)  # HF's own float32 copy of the logits

    def scaled(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores / T`` in float32."""
        return scores.float() / self.temperature if self.temperature != 1.0 else scores.float()

    def log_normaliser(self, scores: torch.Tensor) -> torch.Tensor:
        """``logsumexp(scores / T)`` per row, float32, in one reused buffer (a fresh vocabulary-wide
        temporary per step costs more than the arithmetic on a CPU)."""
        import torch

        top = scores.amax(-1, keepdim=True)
        buf = self._buffer
        if buf is None or buf.shape != scores.shape or buf.device != scores.device:
            buf = self._buffer = torch.empty(scores.shape, dtype=torch.float32, device=scores.device)
        torch.sub(scores, top, out=buf)
        if self.temperature != 1.0:
            buf.mul_(1.0 / self.temperature)
        return buf.exp_().sum(-1).log_() + self.scaled(top.squeeze(-1))

    def choose(self, scores: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor | int) -> torch.Tensor:
        """The next token of each row: row r draws with noise seed ``seeds[r]`` at step ``steps[r]``."""
        import torch

        from pvar.backends.noise import gumbel

        if self.greedy:
            return scores.argmax(-1)
        seeds = seeds.to(device=scores.device, dtype=torch.int64)
        if not isinstance(steps, int):
            steps = steps.to(device=scores.device, dtype=torch.int64)
        vocab = scores.shape[-1]
        if self.top_p >= 1.0:  # the nucleus is the whole vocabulary: every token is a candidate
            tokens = torch.arange(vocab, device=scores.device).expand(scores.shape[0], -1)
            return (self.scaled(scores).double() + gumbel(seeds, steps, tokens)).argmax(-1)
        log_norm = self.log_normaliser(scores)
        picked = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
        todo: torch.Tensor | None = None  # rows still to draw (None: all)
        for k in (*(k for k in (self.TOPK, self.TOPK * 32) if k < vocab), vocab):
            rows = scores if todo is None else scores[todo]
            top, idx = torch.topk(rows, k, dim=-1, sorted=True)  # scaling by 1/T keeps the order
            top = self.scaled(top)
            probs = (top - (log_norm if todo is None else log_norm[todo])[:, None]).exp()
            inside = (probs.cumsum(-1) - probs) < self.top_p  # mass ranked strictly above each token
            inside[:, 0] = True
            noise = gumbel(seeds if todo is None else seeds[todo],
                           steps if todo is None or isinstance(steps, int) else steps[todo], idx)
            choice = idx.gather(1, torch.where(inside, top.double() + noise, -math.inf).argmax(-1, keepdim=True))
            done = (probs.sum(-1) >= self.top_p) | (k == vocab)  # the candidates hold the whole nucleus
            where = torch.arange(scores.shape[0], device=scores.device) if todo is None else todo
            picked[where[done]] = choice.squeeze(1)[done]
            if bool(done.all()):
                break
            todo = where[~done]  # a flat distribution: more candidates (rare)
        return picked

    def perturb(self, scores: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor | int) -> torch.Tensor:
        """Reference: the whole vocabulary's perturbed scores (-inf outside the nucleus), float64.
        ``perturb(...).argmax(-1)`` is the draw `choose` makes on its candidates."""
        import torch

        from pvar.backends.noise import gumbel

        scaled = self.scaled(scores)
        tokens = torch.arange(scores.shape[-1], device=scores.device).expand(scores.shape[0], -1)
        noisy = scaled.double() + gumbel(seeds.to(scores.device), steps, tokens)
        if self.top_p >= 1.0:
            return noisy
        return noisy.masked_fill(~self.nucleus(scaled, self.log_normaliser(scores)), -math.inf)

    def nucleus(self, logits: torch.Tensor, log_norm: torch.Tensor | None = None) -> torch.Tensor:
        """Boolean mask of the top-p nucleus of ``logits`` (already divided by T): the most likely
        tokens until their mass reaches top_p.

        A token is kept when the mass of the tokens ranked strictly above it is below top_p (the
        same set as transformers' TopPLogitsWarper); the most likely token is always kept.
        Probabilities are ``exp(logit - log_norm)``, as `choose` computes them.
        """
        import torch

        log_norm = logits.logsumexp(-1) if log_norm is None else log_norm
        top, idx = torch.sort(logits, dim=-1, descending=True)
        probs = (top - log_norm[:, None]).exp()
        inside = (probs.cumsum(-1) - probs) < self.top_p
        inside[:, 0] = True
        return torch.zeros_like(inside).scatter_(1, idx, inside)
