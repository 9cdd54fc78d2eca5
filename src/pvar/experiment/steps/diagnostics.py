"""Checks of the method at the base policy: gradient norm and signal vs PVar, held-out gold pairs.

They read the measured pool or the eval prompts and never feed the arms; the held-out pairs are
scored once more after each arm's training (does the trained policy prefer gold's winners?).
"""

from __future__ import annotations

import math
from typing import Any

from pvar import status
from pvar.backends.noise import VERSION as NOISE  # fresh samples: other noise, other pairs
from pvar.experiment.context import HELDOUT_PAIRS, UNTRAINED, RunContext, count_lines, write_json
from pvar.experiment.step import Step, Target


def _theory_config(ctx: RunContext) -> Any:
    from pvar.pipeline.theory import TheoryConfig

    c = ctx.cfg
    return c.stage(TheoryConfig, c.scoring, c.train, c.theory, device="auto" if c.device == "cpu" else c.device)


def _run_theory(ctx: RunContext, t: Target) -> dict[str, Any]:
    from pvar.pipeline.theory import run_theory

    tcfg = _theory_config(ctx)
    with status.progress("theory", total=tcfg.prompts) as tick:
        res = run_theory(ctx.paths.measured, ctx.paths.root / "theory", tcfg, tick)
    return {"spearman_pvar": res.spearman_pvar, "violations": res.violations_exact}


THEORY = Step("theory", "measure", _run_theory,
              when=lambda ctx, t: ctx.cfg.theory.prompts > 0 and ctx.cfg.scoring.generate,
              inputs=lambda ctx, t: ["measure"], settings=lambda ctx, t: (_theory_config(ctx).fingerprint(),),
              outputs=lambda ctx, t: [ctx.paths.root / "theory" / "theory.json"])


def _signal_config(ctx: RunContext) -> Any:
    from pvar.pipeline.diagnostics import SignalConfig

    c = ctx.cfg
    return c.stage(SignalConfig, c.scoring, c.train, c.theory, policy=c.policy)


def _run_signal(ctx: RunContext, t: Target) -> dict[str, Any]:
    from pvar.pipeline.diagnostics import gradient_signal

    res = gradient_signal(ctx.paths.measured, ctx.paths.root / "signal", _signal_config(ctx),
                          engine=ctx.engine_opts())
    return {"r2_pvar": res["fit_pvar"]["r2"], "r2_reward_std": res["fit_reward_std"]["r2"]}


SIGNAL = Step("signal", "measure", _run_signal,
              when=lambda ctx, t: ctx.cfg.theory.signal_prompts > 0 and ctx.cfg.scoring.generate,
              inputs=lambda ctx, t: ["measure"],
              settings=lambda ctx, t: (_signal_config(ctx).model_dump(), NOISE),
              outputs=lambda ctx, t: [ctx.paths.root / "signal" / "signal.json"])


def _pairs_config(ctx: RunContext) -> Any:
    from pvar.pipeline.diagnostics import GoldPairsConfig

    c = ctx.cfg
    return c.stage(GoldPairsConfig, c.scoring, c.theory, policy=c.policy)


def _run_gold_pairs(ctx: RunContext, t: Target) -> dict[str, Any]:
    from pvar.pipeline.diagnostics import gold_pairs

    return {"pairs": gold_pairs(ctx.eval_source(), ctx.paths.root / HELDOUT_PAIRS, _pairs_config(ctx),
                                engine=ctx.engine_opts())}


def _pairs_settings(ctx: RunContext, t: Target) -> tuple[Any, ...]:
    from pvar.backends.gold_reward import rules_version

    cfg = _pairs_config(ctx)
    rules = rules_version(cfg.reward)  # gold labels under other task rules are other pairs
    return cfg.model_dump(), NOISE, *([rules] if rules else [])


HELDOUT_PAIRS_STEP = Step(
    "heldout-pairs", "eval", _run_gold_pairs, when=lambda ctx, t: ctx.cfg.theory.heldout_pairs > 0,
    inputs=lambda ctx, t: ["eval-prompts"], settings=_pairs_settings,
    outputs=lambda ctx, t: [ctx.paths.root / HELDOUT_PAIRS])


def _run_preferences(ctx: RunContext, t: Target) -> dict[str, Any]:
    from pvar.pipeline.diagnostics import pair_preferences

    model, pairs = ctx.final_model(t.name), ctx.paths.root / HELDOUT_PAIRS
    if (model / UNTRAINED).is_file():  # the policy is its own reference: every margin is exactly 0
        res = {"n_pairs": count_lines(pairs), "loss": math.log(2.0), "accuracy": 0.0, "mean_margin": 0.0}
    else:
        c = ctx.cfg
        res = pair_preferences(model, pairs, beta=c.train.beta, max_length=c.train.max_length, device=c.device)
    write_json(ctx.paths.arm(t.name) / "heldout.json", res)
    return res


HELDOUT_ARM = Step(
    "heldout", "eval", _run_preferences,
    when=lambda ctx, t: ctx.cfg.theory.heldout_pairs > 0 and ctx.cfg.train.lora,
    inputs=lambda ctx, t: [ctx.last_training(t.name), "heldout-pairs"],
    outputs=lambda ctx, t: [ctx.paths.arm(t.name) / "heldout.json"])
