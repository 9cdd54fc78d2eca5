"""The embedded default scoring run: ShareGPT prompts -> generate -> reward -> measure.

Each stage's output is cached under the run folder; re-running continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from pvar.config import StageConfig
from pvar.core.summary import PoolSummary
from pvar.io.arrow import to_numpy_float
from pvar.io.rows import read_rows
from pvar.pipeline import measure, stages
from pvar.pipeline.prompts import write_prompts


class ScoreConfig(StageConfig):
    count: int = Field(64, ge=2, le=10_000_000, description="ShareGPT pool prompts.")
    n: int = Field(4, ge=2, le=1024, description="Responses per prompt.")
    max_new_tokens: int = Field(64, ge=1, le=131_072)
    model: str = "smollm2"
    reward: str = "minilm-ref"
    scale: float = Field(10.0, gt=0, description="Reward scale: cosine gaps are ~0.05-0.3, so ~10.")
    backend: Literal["hf", "vllm", "fake"] = "hf"
    seed: int = Field(0, ge=0, lt=2**32)
    shard_size: int = Field(16, ge=1)


@dataclass(frozen=True)
class ScoreResult:
    pool: PoolSummary
    pvar: np.ndarray
    measured: Path


def run_score(cfg: ScoreConfig, out_dir: str | Path, *, engine: str = "local") -> ScoreResult:
    from pvar.backends.assets import check_policy_ref
    from pvar.backends.spec import parse_reward_spec

    if cfg.backend != "fake":
        check_policy_ref(cfg.model, "model")
    reward_cfg = stages.RewardConfig.make(reward=cfg.reward)
    parse_reward_spec(cfg.reward)  # a bad spec fails before any prompt is sampled
    out = Path(out_dir)
    prompts, generated, rewarded, measured = (out / n for n in
                                              ("01-prompts.jsonl", "02-generate", "03-reward", "04-measure.parquet"))
    write_prompts("sharegpt", prompts, count=cfg.count, split="pool", seed=cfg.seed)
    gen = stages.GenerateConfig.make(model=cfg.model, n=cfg.n, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                                     backend=cfg.backend)
    stages.run("generate", gen, prompts, generated, engine=engine, shard_size=cfg.shard_size)
    stages.run("reward", reward_cfg, generated, rewarded, engine=engine,
               shard_size=cfg.shard_size)
    pool = measure.run(rewarded, measured, measure.MeasureConfig.make(scale=cfg.scale))
    pvar = np.concatenate([to_numpy_float(b.data.column("pvar")) for b in read_rows(measured)])
    return ScoreResult(pool, pvar, measured)
