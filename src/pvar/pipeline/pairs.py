"""pairs: turn scored prompt rows into TRL preference rows (prompt, chosen, rejected).

Rows load unchanged into ``trl.DPOTrainer``: text prompts give text chosen/rejected; chat
prompts (lists of messages) give conversational chosen/rejected (one assistant message each).
Built with Arrow ``take`` on the flattened responses: no Python object per response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from pvar.config import InputFormat, Rating, Seed, StageConfig
from pvar.core import pairs as rules
from pvar.core.seeding import prompt_uniforms
from pvar.core.stats import preference_variance
from pvar.io.arrow import combine, float_column, list_lengths, list_to_padded, to_numpy_float
from pvar.io.paths import check_output
from pvar.io.rows import read_rows
from pvar.io.schema import MESSAGES
from pvar.io.writers import open_output


class PairsConfig(StageConfig):
    rule: Literal["best-worst", "best-random", "sweet-spot", "all"] = Field("best-worst", description=(
        "best-worst: highest vs lowest reward; best-random: highest vs a random lower one; sweet-spot: highest "
        "vs the one nearest mean - 2 std (arXiv 2502.16825); "
        "all: every pair with r_i > r_j, largest gap first, capped by max_pairs."))
    max_pairs: int = Field(8, ge=1, le=100_000, description="Cap on pairs per prompt for rule 'all'.")
    seed: Seed = Field(0, description="Seed of best-random's draw (per prompt, from prompt_id).")
    scale: float = Field(1.0, gt=0, description="Reward scale for PVar when the rows lack a pvar column.")
    format: InputFormat = "auto"
    rating: Rating = "overall"


@dataclass(frozen=True)
class PairsSummary:
    n_prompts: int
    n_pairs: int
    n_prompts_paired: int


def _index(data: pa.RecordBatch, cfg: PairsConfig, rewards: np.ndarray) -> rules.PairIndex:
    if cfg.rule == "best-worst":
        return rules.best_worst(rewards)
    if cfg.rule == "best-random":
        ids = data.column("prompt_id").to_pylist()
        return rules.best_random(rewards, prompt_uniforms(cfg.seed, ids))
    if cfg.rule == "sweet-spot":
        return rules.sweet_spot(rewards)
    return rules.all_pairs(rewards, cfg.max_pairs)


def _as_assistant(texts: pa.Array) -> pa.Array:
    n = len(texts)
    msgs = pa.StructArray.from_arrays([pa.array(["assistant"] * n), texts], names=["role", "content"])
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), msgs, type=MESSAGES)


def _without_blank(rewards: np.ndarray, flat: pa.Array, lengths: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Rewards with empty (or whitespace-only) responses left out of pairing (NaN).

    A policy can answer with EOS at once; the empty text still has a reward and counts in PVar,
    but a pair with an empty side is refused by training, so the rules choose among real texts
    (best-worst takes the worst non-empty response) instead of the prompt losing its pair.
    """
    if not pa.types.is_string(flat.type) and not pa.types.is_large_string(flat.type):
        return rewards
    blank = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(flat)), 0), False)
    blank = blank.to_numpy(zero_copy_only=False)
    if not blank.any():
        return rewards
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(len(flat)) - starts[rows]
    out = rewards.copy()
    out[rows[blank], cols[blank]] = np.nan
    return out


def pairs_columns() -> tuple[str, ...]:
    """The columns of a pairs file, in order."""
    return ("prompt", "chosen", "rejected", "prompt_id", "pvar", "chosen_reward", "rejected_reward")


def pairs_batch(data: pa.RecordBatch, cfg: PairsConfig) -> pa.RecordBatch:
    """One output row per pair; columns prompt, chosen, rejected, prompt_id, pvar, rewards."""
    measured = list_to_padded(data.column("rewards"))
    responses = combine(data.column("responses"))
    lengths = list_lengths(responses)
    starts = np.concatenate([[0], np.cumsum(lengths)])[:-1]
    flat = pc.list_flatten(responses)
    rewards = _without_blank(measured, flat, lengths, starts)
    idx = _index(data, cfg, rewards)
    chosen = flat.take(pa.array(starts[idx.prompt] + idx.chosen))
    rejected = flat.take(pa.array(starts[idx.prompt] + idx.rejected))
    # The same text scored twice can differ in the last bits (batched reward models): such a
    # "pair" carries no preference, and training refuses it, so it is never written.
    differ = pc.fill_null(pc.not_equal(chosen, rejected), True).to_numpy(zero_copy_only=False)
    if not differ.all():
        idx = rules.PairIndex(idx.prompt[differ], idx.chosen[differ], idx.rejected[differ])
        chosen, rejected = chosen.filter(pa.array(differ)), rejected.filter(pa.array(differ))
    prompt = combine(data.column("prompt")).take(pa.array(idx.prompt))
    if pa.types.is_list(prompt.type):
        chosen, rejected = _as_assistant(chosen), _as_assistant(rejected)
    if "pvar" in data.schema.names:
        pvar = to_numpy_float(data.column("pvar"))
    else:
        pvar = preference_variance(measured, cfg.scale)
    return pa.RecordBatch.from_pydict({
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "prompt_id": combine(data.column("prompt_id")).take(pa.array(idx.prompt)),
        "pvar": float_column(pvar[idx.prompt]),
        "chosen_reward": float_column(rewards[idx.prompt, idx.chosen]),
        "rejected_reward": float_column(rewards[idx.prompt, idx.rejected]),
    })


def run(
    source: str | Path,
    output: str | Path,
    cfg: PairsConfig,
    progress: Callable[[int], None] | None = None,
) -> PairsSummary:
    n_prompts = n_pairs = n_paired = 0
    check_output(source, output)
    with open_output(output) as writer:
        for batch in read_rows(source, fmt=cfg.format, rating=cfg.rating,
                               require=("prompt_id", "prompt", "responses", "rewards")):
            out = pairs_batch(batch.data, cfg)
            writer.write(out)
            n_prompts += batch.data.num_rows
            n_pairs += out.num_rows
            n_paired += len(set(out.column("prompt_id").to_pylist()))
            if progress:
                progress(batch.data.num_rows)
    return PairsSummary(n_prompts, n_pairs, n_paired)
