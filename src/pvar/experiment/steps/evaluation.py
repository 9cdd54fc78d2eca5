"""Judging: the base policy's answers once (every arm's baseline), an A/A noise floor, each arm.

An arm's eval copies the base policy's cached answers, so the baseline is generated once per run.
"""

from __future__ import annotations

import shutil
from typing import Any

from pvar.experiment.context import AA_EVAL, BASE_EVAL, UNTRAINED, RunContext
from pvar.experiment.step import Step, Target


def _base(ctx: RunContext, t: Target) -> dict[str, Any]:
    from pvar.pipeline.evaluate import evaluate

    res = evaluate(ctx.eval_config(ctx.cfg.policy), ctx.paths.root / BASE_EVAL)
    return {"win_rate": res.hard.estimate, "n_prompts": res.n_prompts}


BASE = Step("eval:base", "eval", _base, inputs=lambda ctx, t: ["eval-prompts"],
            settings=lambda ctx, t: (ctx.eval_config(ctx.cfg.policy).fingerprint(),),
            outputs=lambda ctx, t: [ctx.paths.root / BASE_EVAL / "eval.json"])


def _aa_config(ctx: RunContext) -> Any:
    return ctx.eval_config(ctx.cfg.policy).model_copy(update={"batch_size": ctx.cfg.eval.aa_batch_size})


def _aa(ctx: RunContext, t: Target) -> dict[str, Any]:
    """The base policy's answers again, in batches of another size (another arrangement of prompts per
    batch). Any difference from ``base/eval`` is decoding noise, not training."""
    from pvar.pipeline.evaluate import evaluate

    res = evaluate(_aa_config(ctx), ctx.paths.root / AA_EVAL)
    return {"n_prompts": res.n_prompts, "batch_size": ctx.cfg.eval.aa_batch_size}


AA = Step("eval:base-aa", "eval", _aa, when=lambda ctx, t: ctx.cfg.eval.aa_batch_size > 0,
          inputs=lambda ctx, t: ["eval-prompts"],
          settings=lambda ctx, t: (_aa_config(ctx).fingerprint(), ctx.cfg.eval.aa_batch_size),
          outputs=lambda ctx, t: [ctx.paths.root / AA_EVAL / "eval.json"])


def _untrained(ctx: RunContext, t: Target) -> bool:
    return (ctx.final_model(t.name) / UNTRAINED).is_file()


def _arm_config(ctx: RunContext, t: Target) -> Any:
    return ctx.eval_config(ctx.cfg.policy if _untrained(ctx, t) else str(ctx.final_model(t.name)))


def _arm(ctx: RunContext, t: Target) -> dict[str, Any]:
    from pvar.pipeline.evaluate import evaluate

    out, base = ctx.paths.arm(t.name) / "eval", ctx.paths.root / BASE_EVAL
    out.mkdir(parents=True, exist_ok=True)
    shared = ["outputs_baseline.jsonl", "outputs_baseline.key.json"]
    if _untrained(ctx, t):  # the base policy's own answers, under the same cache key
        shared += ["outputs_policy.jsonl", "outputs_policy.key.json"]
    for f in shared:  # shared: generated once
        if (base / f).is_file() and not (out / f).is_file():
            shutil.copyfile(base / f, out / f)
    owner = ctx.final_model(t.name).parent  # an arm sharing another's model shares its answers (same key)
    if not _untrained(ctx, t) and owner != ctx.paths.arm(t.name):
        for f in ("outputs_policy.jsonl", "outputs_policy.key.json"):
            if (owner / "eval" / f).is_file() and not (out / f).is_file():
                shutil.copyfile(owner / "eval" / f, out / f)
    res = evaluate(_arm_config(ctx, t), out)
    shutil.rmtree(out / "merged-policy", ignore_errors=True)  # 0.5 GB per arm; outputs are cached
    return {"win_rate": res.hard.estimate, "lc_win_rate": res.length_controlled.estimate,
            "n_prompts": res.n_prompts, "baseline_cached": res.baseline.cached}


ARM = Step(
    "eval", "eval", _arm,
    inputs=lambda ctx, t: [ctx.last_training(t.name), "eval-prompts"],
    settings=lambda ctx, t: (_arm_config(ctx, t).model_copy(update={"policy": t.name}).fingerprint(),
                             *(["untrained"] if _untrained(ctx, t) else [])),
    outputs=lambda ctx, t: [ctx.paths.arm(t.name) / "eval" / f for f in ("eval.json", "judgements.jsonl")])
