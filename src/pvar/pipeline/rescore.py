"""The scoring of an iterative round: the prompts not yet selected, sampled again from the policy
trained so far, scored by the reward, and measured two ways (the reward's PVar and the policy form).

Writes, under ``out_dir``: ``pool.parquet`` (the prompts left), ``generate/`` and ``reward/`` (sharded,
resumable like any scoring) and ``measured.parquet`` (measure's columns plus ``pvar_policy``).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from pvar.errors import ConfigError
from pvar.pipeline import measure
from pvar.pipeline.generate import GenerateConfig
from pvar.pipeline.reward import RewardConfig
from pvar.pipeline.scoring import ScoredPaths, score


def rescore(pool: str | Path, exclude: Collection[str], out_dir: str | Path, gen: GenerateConfig, rew: RewardConfig,
            mcfg: measure.MeasureConfig, *, base_policy: str, beta: float, max_length: int, device: str,
            label: str = "the pool", engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rescore the prompts of ``pool`` not in ``exclude`` with ``gen.model``; returns the round's counters.

    The policy form compares ``gen.model`` with ``base_policy`` (the DPO implicit preference at
    ``beta``); :mod:`pvar.pipeline.policy_pvar` explains it.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pvar.io.arrow import float_column
    from pvar.io.writers import atomic_rows
    from pvar.pipeline.policy_pvar import policy_pvar, sequence_logprobs

    out = Path(out_dir)
    table = pq.read_table(pool)
    keep = [c for c in ("prompt_id", "prompt", "reference") if c in table.column_names]
    left = pa.array([pid not in exclude for pid in table.column("prompt_id").to_pylist()])
    rest = table.select(keep).filter(left)
    if rest.num_rows < 2:
        raise ConfigError(f"rounds: {label} has {rest.num_rows} unselected prompts left; use fewer rounds or a "
                          "smaller budget")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_rows(out / "pool.parquet") as w:
        for rb in rest.to_batches():
            w.write(rb)
    tmp = ScoredPaths(out, "measured-reward.parquet")
    score(out / "pool.parquet", tmp, gen, rew, mcfg, **(engine or {}))
    tmp = tmp.measured
    scored = pq.read_table(tmp)
    prompts, responses = scored.column("prompt").to_pylist(), scored.column("responses").to_pylist()
    logp = sequence_logprobs(gen.model, prompts, responses, device=device, max_length=max_length)
    ref = sequence_logprobs(base_policy, prompts, responses, device=device, max_length=max_length)
    pvp = policy_pvar(logp, ref, beta)
    scored = scored.append_column("pvar_policy", float_column(pvp))
    with atomic_rows(out / "measured.parquet") as w:
        for rb in scored.to_batches():
            w.write(rb)
    tmp.unlink()
    rewards = np.concatenate([np.asarray(x, dtype=float) for x in scored.column("rewards").to_pylist()])
    pv = scored.column("pvar").to_numpy(zero_copy_only=False)
    return {"prompts": scored.num_rows, "mean_reward": float(np.nanmean(rewards)),
            "mean_pvar": float(np.nanmean(pv)), "tied": float(np.mean(pv == 0)),
            "mean_pvar_policy": float(np.nanmean(pvp))}
