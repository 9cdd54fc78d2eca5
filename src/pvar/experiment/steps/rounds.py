"""Iterative rounds (``rounds`` > 1): after an arm trains, the prompts it has not taken are sampled
again from the trained policy, PVar is measured again (reward and policy form), the next slice is
selected at the same budget, and training goes on from that policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvar.experiment.context import RunContext
from pvar.experiment.step import Step, Target
from pvar.experiment.steps.arms import select_and_pair, select_args, train_folder


def _measured(ctx: RunContext, t: Target) -> Path:
    return ctx.paths.round(t.name, t.round) / "measured.parquet"


def _rescore(ctx: RunContext, t: Target) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from pvar.pipeline.measure import MeasureConfig
    from pvar.pipeline.rescore import rescore

    c, name, r = ctx.cfg, t.name, t.round
    assert t.arm is not None
    taken: set[str] = set()
    for k in range(1, r):
        sel = ctx.paths.round(name, k) / "selected.parquet"
        if sel.is_file():
            taken |= set(pq.read_table(sel, columns=["prompt_id"]).column("prompt_id").to_pylist())
        elif t.arm.select == "full":
            taken |= set(pq.read_table(ctx.paths.measured, columns=["prompt_id"]).column(0).to_pylist())
    gen, rew = ctx.sampling(ctx.policy_after(name, r - 1), c.seed + r)
    return rescore(ctx.paths.measured, taken, ctx.paths.round(name, r), gen, rew, c.stage(MeasureConfig, c.scoring),
                   base_policy=c.policy, beta=c.train.beta, max_length=c.train.max_length, device=c.device,
                   label=f"arm {name} in round {r}", engine=ctx.engine_opts())


SCORE = Step("score", "train", _rescore,
             inputs=lambda ctx, t: [f"train:{t.name}" if t.round == 2 else f"round{t.round - 1}-train:{t.name}"],
             # the measured pool's key comes after the settings: where the first layout put it, so
             # run folders made before keep their keys
             settings=lambda ctx, t: ("round", t.round, ctx.keys["measure"]),
             outputs=lambda ctx, t: [_measured(ctx, t)])


def _configs(ctx: RunContext, t: Target) -> tuple[Any, Any]:
    from pvar.pipeline import pairs, select

    c, arm = ctx.cfg, t.arm
    assert arm is not None
    by = "pvar_policy" if (c.rounds_by == "pvar_policy" and arm.by == "pvar") else arm.by
    scfg = None if arm.select == "full" else select.SelectConfig.make(
        **{**select_args(c, arm, t.seed, ctx.pool_size()), "by": by})
    return scfg, c.stage(pairs.PairsConfig, c.scoring, rule=arm.rule or c.train.pair_rule, seed=c.seed + t.round)


def _pick(ctx: RunContext, t: Target) -> dict[str, Any]:
    scfg, pcfg = _configs(ctx, t)
    return select_and_pair(_measured(ctx, t), ctx.paths.round(t.name, t.round), scfg, pcfg)


def _pairs_settings(ctx: RunContext, t: Target) -> tuple[Any, ...]:
    scfg, pcfg = _configs(ctx, t)
    return scfg.fingerprint() if scfg else "full", pcfg.fingerprint()


PAIRS = Step("pairs", "train", _pick, inputs=lambda ctx, t: [f"round{t.round}-score:{t.name}"],
             settings=_pairs_settings, outputs=lambda ctx, t: [ctx.paths.round(t.name, t.round) / "pairs.jsonl"])


def _train_config(ctx: RunContext, t: Target) -> Any:
    assert t.arm is not None
    return ctx.train_config(t.name, t.arm).model_copy(update={"model": ctx.policy_after(t.name, t.round - 1)})


TRAIN = Step("train", "train",
             lambda ctx, t: train_folder(ctx, t, ctx.paths.round(t.name, t.round), _train_config(ctx, t)),
             inputs=lambda ctx, t: [f"round{t.round}-pairs:{t.name}"],
             settings=lambda ctx, t: (_train_config(ctx, t).fingerprint(),),
             outputs=lambda ctx, t: [ctx.paths.round(t.name, t.round) / "model" / "train_log.jsonl"])
