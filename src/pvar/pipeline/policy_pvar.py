"""The policy form of PVar: preference variance under the DPO implicit preference of a trained policy.

For responses y_i, y_j of prompt x, DPO's implicit preference is
sigma(beta * [(log pi - log pi_ref)(y_i) - (log pi - log pi_ref)(y_j)]). It is identically 1/2 at
initialisation (pi = pi_ref), so the first selection needs a reward model; after a round of
training it measures how undecided the policy itself still is on the prompt, and can select the
next round's prompts. With implicit rewards u_i = beta * (log pi - log pi_ref)(y_i), this is exactly
``core.stats.preference_variance(u, scale=1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pvar.core.stats import preference_variance


def sequence_logprobs(model_name: str, prompts: list[Any], responses: list[list[str]], *, device: str = "cpu",
                      max_length: int = 512, progress: Callable[[int], None] | None = None) -> list[list[float]]:
    """Summed token log-probs of every response under ``model_name`` (chat-templated, EOS appended)."""
    import torch

    from pvar.backends.gradients import load_policy, sequence_ids, sequence_logprob

    model, tokenizer, _params, _device = load_policy(model_name, device, params="all")
    out = []
    with torch.no_grad():
        for prompt, resps in zip(prompts, responses, strict=True):
            out.append([float(sequence_logprob(model, *sequence_ids(tokenizer, prompt, r, max_length=max_length)))
                        for r in resps])
            if progress:
                progress(1)
    del model
    return out


def policy_pvar(policy_logps: list[list[float]], reference_logps: list[list[float]], beta: float) -> np.ndarray:
    """PVar of each prompt under the implicit preference of (policy, reference) at ``beta``.

    >>> float(policy_pvar([[0.0, 0.0]], [[0.0, 0.0]], 0.1)[0])  # pi = pi_ref: every preference is 1/2
    0.0
    """
    rows = [beta * (np.asarray(p, dtype=np.float64) - np.asarray(r, dtype=np.float64))
            for p, r in zip(policy_logps, reference_logps, strict=True)]
    return preference_variance(rows, 1.0)


__all__ = ["policy_pvar", "sequence_logprobs"]
