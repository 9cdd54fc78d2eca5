"""Report sections on what the scores hide: the answers behind them, and what each arm selected."""

from __future__ import annotations

from pvar.experiment.blocks import Block, pct
from pvar.experiment.report_data import Report


def answers(r: Report) -> list[Block]:
    """Per arm: success per constraint type, guard rate and answer length; the types no arm learned."""
    a = r.answers
    if a is None or not r.evals:
        return []
    kinds = sorted({c for arm in a.arms.values() for c in arm.constraints})
    order = ["base", *[x for x in a.arms if x != "base"]]
    rows = []
    for name in order:
        arm = a.arms.get(name)
        if arm is None:
            continue
        cells = [f"{pct(arm.constraints[c].success)}%" if c in arm.constraints else "-" for c in kinds]
        rows.append([name, arm.answers, "-" if arm.mean_words is None else f"{arm.mean_words:.1f}",
                     "-" if arm.guard_rate is None else f"{pct(arm.guard_rate)}%", *cells])
    metric = ("gold × content guard, so an answer that meets the constraints by degenerating scores 0"
              if r.metric == "gold-guarded" else "the judge's score")
    blocks: list[Block] = [("h2", "What the answers are"),
                           ("p", f"The verdict's pre-registered metric (eval.metric) is {metric}. A gold score can "
                                 "also rise through shorter answers or echoes of the instruction, and a selection "
                                 "can shift which constraints are trained: per arm (its runs pooled), the eval "
                                 "answers' length, content-guard rate and success on each constraint type."),
                           ("table", ["arm", "answers", "mean words", "guard", *kinds], rows)]
    if a.never_learned:
        named = "; ".join(f"`{n.constraint}` (base {pct(n.base)}%, best {n.best_arm} {pct(n.best)}%)"
                          for n in a.never_learned)
        blocks.append(("p", f"**Not learned by any arm** (no arm beats the base by {pct(a.learned_margin)} points): "
                            f"{named}. Their prompts add no signal to any comparison here."))
    return blocks


def composition(r: Report) -> list[Block]:
    """Each arm's selection by stratum beside the pool's."""
    c = r.composition
    if c is None:
        return []
    strata = list(c.shares["pool"])
    names = list(c.shares)
    rows = [[s or "(none)", *[f"{pct(c.shares[n].get(s, 0.0))}%" for n in names]] for s in strata]
    return [("h2", f"What each arm selected, by {c.stratum}"),
            ("p", "Share of each stratum in the pool and in each arm's selection (an arm's runs pooled). A "
                  "selector that favours some strata trains on them; the stratified selector keeps the pool's "
                  "shares."),
            ("table", ["stratum", *names], rows)]
