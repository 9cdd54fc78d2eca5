"""Scoring the pool: its prompts, sampled responses, rewards, PVar, and the Alignment Potential.

Generate and reward are sharded and resume shard by shard inside the step; adaptive sampling
replaces both when configured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvar import status
from pvar.experiment.context import RunContext
from pvar.experiment.sections import RANKED
from pvar.experiment.step import Step, Target


def _task_key(task: str | None) -> list[str]:
    """Key part of a task family (none for plain prompts, so older run folders keep their keys)."""
    return [] if task is None else ["task", task]


def _sharegpt_pool(ctx: RunContext, t: Target) -> bool:
    return ctx.cfg.prompts.source == "sharegpt"


def _sharegpt_eval(ctx: RunContext, t: Target) -> bool:
    return ctx.cfg.prompts.eval_source == "sharegpt"


def _write_prompts(ctx: RunContext, out: Path, split: str, count: int) -> dict[str, Any]:
    from pvar.pipeline.prompts import write_prompts

    c = ctx.cfg
    return {"prompts": write_prompts("sharegpt", out, count=count, split=split, seed=c.seed, task=c.prompts.task)}


def _file_key(source: str) -> tuple[Any, ...]:
    from pvar.fingerprint import model_record  # name, or path + size + mtime of a file / folder's files

    return (model_record(source),)


POOL = Step(
    "prompts", "measure", when=_sharegpt_pool,
    work=lambda ctx, t: _write_prompts(ctx, ctx.paths.pool, "pool", ctx.cfg.prompts.pool),
    settings=lambda ctx, t: ("sharegpt", ctx.cfg.prompts.pool, ctx.cfg.seed, *_task_key(ctx.cfg.prompts.task)),
    outputs=lambda ctx, t: [ctx.paths.pool])
POOL_FILE = Step("prompts", "measure", None, when=lambda ctx, t: not _sharegpt_pool(ctx, t),
                 settings=lambda ctx, t: _file_key(ctx.cfg.prompts.source))
EVAL_PROMPTS = Step(
    "eval-prompts", "eval", when=_sharegpt_eval,
    work=lambda ctx, t: _write_prompts(ctx, ctx.paths.eval_prompts, "eval", ctx.cfg.prompts.eval),
    settings=lambda ctx, t: ("sharegpt-eval", ctx.cfg.prompts.eval, ctx.cfg.seed,
                             *_task_key(ctx.cfg.prompts.task)),
    outputs=lambda ctx, t: [ctx.paths.eval_prompts])
EVAL_FILE = Step("eval-prompts", "eval", None, when=lambda ctx, t: not _sharegpt_eval(ctx, t),
                 settings=lambda ctx, t: _file_key(ctx.cfg.prompts.eval_source))


def _score(ctx: RunContext, part: str, source: str | Path) -> dict[str, Any]:
    """One part of the pool's scoring chain (each part is its own ledger step)."""
    from pvar.pipeline.scoring import score

    gen, rew = ctx.sampling(ctx.cfg.policy, ctx.cfg.seed)
    if part != "measure":
        return score(source, ctx.paths.scoring, gen, rew, parts=(part,), force=ctx.force, **ctx.engine_opts())[part]
    with status.progress("measure", source) as tick:
        return score(source, ctx.paths.scoring, mcfg=_measure_config(ctx), parts=("measure",), progress=tick)[part]


def _fixed_samples(ctx: RunContext, t: Target) -> bool:
    return ctx.cfg.scoring.generate and ctx.cfg.scoring.adaptive is None


def _adaptive(ctx: RunContext, t: Target) -> bool:
    return ctx.cfg.scoring.generate and ctx.cfg.scoring.adaptive is not None


GENERATE = Step(
    "generate", "measure", when=_fixed_samples,
    work=lambda ctx, t: _score(ctx, "generate", ctx.pool_source()),
    inputs=lambda ctx, t: ["prompts"],
    settings=lambda ctx, t: (ctx.sampling(ctx.cfg.policy, ctx.cfg.seed)[0].fingerprint(), ctx.cfg.scoring.shard_size),
    outputs=lambda ctx, t: [ctx.paths.generated])
REWARD = Step(
    "reward", "measure", when=_fixed_samples,
    work=lambda ctx, t: _score(ctx, "reward", ctx.paths.generated),
    inputs=lambda ctx, t: ["generate"],
    settings=lambda ctx, t: (ctx.sampling(ctx.cfg.policy, ctx.cfg.seed)[1].fingerprint(), ctx.cfg.scoring.shard_size),
    outputs=lambda ctx, t: [ctx.paths.rewarded])


def _adaptive_config(ctx: RunContext) -> Any:
    from pvar.io.readers import count_rows
    from pvar.pipeline import adaptive

    c = ctx.cfg
    fraction = (min(1.0, c.budget / max(1, count_rows(ctx.pool_source()) or 0)) if isinstance(c.budget, int)
                else float(c.budget))
    return c.stage(adaptive.AdaptiveConfig, c.scoring, c.scoring.adaptive, fraction=fraction)


def _run_adaptive(ctx: RunContext, t: Target) -> dict[str, Any]:
    from pvar.pipeline import adaptive

    gen, rew = ctx.sampling(ctx.cfg.policy, ctx.cfg.seed)
    res = adaptive.run(ctx.pool_source(), ctx.paths.adaptive, gen, rew, _adaptive_config(ctx), log=ctx.log,
                       **ctx.engine_opts())
    return {"samples": res.samples, "prompts": res.prompts, "rounds": len(res.rounds)}


ADAPTIVE = Step(
    "adaptive", "measure", _run_adaptive, when=_adaptive, inputs=lambda ctx, t: ["prompts"],
    settings=lambda ctx, t: (*(x.fingerprint() for x in ctx.sampling(ctx.cfg.policy, ctx.cfg.seed)),
                             _adaptive_config(ctx).fingerprint(), ctx.cfg.scoring.shard_size),
    outputs=lambda ctx, t: [ctx.paths.adaptive / "measured.parquet"])


def _scored(ctx: RunContext) -> tuple[str, str]:
    """What measure reads, and the ledger step that wrote it."""
    s = ctx.cfg.scoring
    if not s.generate:
        return ctx.pool_source(), "prompts"
    if s.adaptive is not None:
        return str(ctx.paths.adaptive / "measured.parquet"), "adaptive"
    return str(ctx.paths.rewarded), "reward"


def _measure_config(ctx: RunContext) -> Any:
    from pvar.pipeline.measure import MeasureConfig

    return ctx.cfg.stage(MeasureConfig, ctx.cfg.scoring)


MEASURE = Step("measure", "measure", lambda ctx, t: _score(ctx, "measure", _scored(ctx)[0]),
               inputs=lambda ctx, t: [_scored(ctx)[1]], settings=lambda ctx, t: (_measure_config(ctx).fingerprint(),),
               outputs=lambda ctx, t: [ctx.paths.measured])


def needs_potential(ctx: RunContext, t: Target) -> bool:
    """Whether an arm selects by the Alignment Potential (one policy pass over the pool)."""
    from pvar.pipeline.potential import COLUMNS

    arms = [t.arm] if t.arm is not None else ctx.cfg.arms
    return any(a.select in RANKED and a.by in COLUMNS for a in arms)


def _potential_config(ctx: RunContext) -> Any:
    from pvar.pipeline.potential import PotentialConfig

    return ctx.cfg.stage(PotentialConfig, ctx.cfg.train)


def _run_potential(ctx: RunContext, t: Target) -> dict[str, Any]:
    from pvar.pipeline import potential

    with status.progress("potential", ctx.paths.measured) as tick:
        return {"pairs": potential.run(ctx.paths.measured, ctx.paths.potential, _potential_config(ctx), tick)}


POTENTIAL = Step("potential", "pairs", _run_potential, when=needs_potential, inputs=lambda ctx, t: ["measure"],
                 settings=lambda ctx, t: (_potential_config(ctx).fingerprint(),),
                 outputs=lambda ctx, t: [ctx.paths.potential])
