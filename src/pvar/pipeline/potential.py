"""potential: the policy's log-prob margin of each prompt's best-worst pair, and its Alignment Potential.

Adds ``logp_margin`` = log pi(best | x) - log pi(worst | x) (summed token log-probs, the response
closed by EOS and the prompt chat-templated, as DPO trains on the pair) and ``alignment_potential``
= z(reward margin) - z(|logp_margin|) (:func:`pvar.core.scores.alignment_potential`, arXiv
2503.01864). The z-scores are over the whole pool, so every row is read before any is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import Field

from pvar.config import Device, StageConfig
from pvar.core.pairs import best_worst
from pvar.core.scores import alignment_potential, reward_margin
from pvar.io.arrow import float_column, list_to_padded
from pvar.io.paths import check_output
from pvar.io.rows import read_rows
from pvar.io.writers import atomic_rows

COLUMNS = ("logp_margin", "alignment_potential")


class PotentialConfig(StageConfig):
    model: str = Field("smollm2", description="The policy about to be trained (its log-probs are the implicit margin).")
    max_length: int = Field(512, ge=8, le=1_048_576, description="Token cap on prompt + response.")
    device: Device = Field("cpu", description="torch device.")


def logp_margins(rows: list[tuple[object, str, str]], cfg: PotentialConfig,
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
    """log pi(chosen|x) - log pi(rejected|x) for each (prompt, chosen, rejected), float64."""
    from pvar.pipeline.policy_pvar import sequence_logprobs

    logps = sequence_logprobs(cfg.model, [p for p, _, _ in rows], [[c, r] for _, c, r in rows],
                              device=cfg.device, max_length=cfg.max_length, progress=progress)
    return np.array([c - r for c, r in logps], dtype=np.float64)


def run(source: str | Path, output: str | Path, cfg: PotentialConfig,
        progress: Callable[[int], None] | None = None) -> int:
    """Write ``source``'s rows with the two columns added; returns the rows with a pair."""
    check_output(source, output)
    batches = list(read_rows(source, require=("prompt_id", "prompt", "responses", "rewards")))
    pairs, margins, where = [], [], []
    for b, batch in enumerate(batches):
        rewards = list_to_padded(batch.data.column("rewards"))
        margins.append(reward_margin(rewards))
        idx = best_worst(rewards)
        prompts = batch.data.column("prompt").to_pylist()
        responses = batch.data.column("responses").to_pylist()
        for p, c, r in zip(idx.prompt, idx.chosen, idx.rejected, strict=True):
            pairs.append((prompts[p], responses[p][c], responses[p][r]))
            where.append((b, int(p)))
    got = logp_margins(pairs, cfg, progress) if pairs else np.empty(0)
    logp = [np.full(batch.data.num_rows, np.nan) for batch in batches]
    for (b, p), value in zip(where, got, strict=True):
        logp[b][p] = value
    flat_margin, flat_logp = np.concatenate(margins), np.concatenate(logp)
    ap = alignment_potential(np.where(np.isnan(flat_logp), np.nan, flat_margin), flat_logp)
    start = 0
    with atomic_rows(output) as writer:
        for batch, lp in zip(batches, logp, strict=True):
            n = batch.data.num_rows
            data = batch.data
            for name, values in (("logp_margin", lp), ("alignment_potential", ap[start : start + n])):
                if name in data.schema.names:
                    data = data.drop_columns([name])
                data = data.append_column(name, float_column(values))
            writer.write(data)
            start += n
    return len(pairs)


__all__ = ["COLUMNS", "PotentialConfig", "logp_margins", "run"]
