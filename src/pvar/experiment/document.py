"""The report document: one small builder per section, each reading the typed :class:`Report`.

A section is a function ``Report -> list[Block]`` (empty when the run has nothing for it yet);
:data:`SECTIONS` is their order. Blocks are format-free (``report.py`` renders them to Markdown
and to HTML), so both formats say the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvar.experiment.blocks import Block
from pvar.experiment.blocks import fmt as _f
from pvar.experiment.blocks import pct as _pct
from pvar.experiment.document_answers import answers, composition
from pvar.experiment.report_data import Comparison, Interval, Report, RunSD, Test, Verdict
from pvar.pipeline.evaluate import LC_NAME


def _ci(block: Interval | None, pct: bool = True) -> str:
    if block is None or block.estimate is None:
        return "–"
    s = 100 if pct else 1
    fmt = ".1f" if pct else ".4f"
    low, high = (None if v is None else s * v for v in (block.ci_low, block.ci_high))
    return f"{_f(s * block.estimate, fmt)} [{_f(low, fmt)}, {_f(high, fmt)}]"


def _d(x: Test) -> str:
    return f"{_f(x.estimate, '+.4f')} [{_f(x.ci_low, '+.4f')}, {_f(x.ci_high, '+.4f')}]"


def _boot(x: Test) -> str:
    return f"[{_f(x.boot_low, '+.4f')}, {_f(x.boot_high, '+.4f')}]"


def _run_sd(arm: str, x: RunSD) -> str:
    if x.source == "untrained":
        return f"{arm} 0 (untrained: answers as the base policy)"
    if x.source == "fallback":
        return (f"{arm} {_f(x.sd, '.4f')} ({x.runs} run: no estimate of its own, **fallback** to {x.donor}'s, "
                "the largest of the other trained arms)")
    if x.source == "none":
        return f"{arm} – ({x.runs} run and no trained arm with several: **no run variance counted**)"
    if not x.sd:
        return f"{arm} 0 ({x.runs} runs: their spread is all prompt noise)"
    return f"{arm} {_f(x.sd, '.4f')} ({x.runs} runs, df {_f(x.df, '.1f')})"


# -- sections -------------------------------------------------------------------------------------


def title(r: Report) -> list[Block]:
    """The run in one paragraph: status, what was scored, trained and judged."""
    cfg = r.cfg
    sc = cfg.scoring
    state = "complete" if r.complete else "partial (some steps have not run yet)"
    what = (f"Policy `{cfg.policy}`, {sc.n} samples per prompt, selection reward `{sc.reward}`"
            if sc.generate else f"Rated rows from `{cfg.prompts.source}` (ratings as rewards)")
    what += f", reward scale {sc.scale:g}"
    if r.until != "measure":
        what += f"; budget {cfg.budget} of the pool per arm"
    if r.trains:
        t = cfg.train
        unit = f"batch {t.batch_size}"
        steps = f"{t.max_steps} steps of {unit}" if t.max_steps > 0 else f"{t.epochs:g} epoch(s) of {unit}"
        what += f"; {t.algo} with {'LoRA' if t.lora else 'full fine-tuning'}, {steps} per arm"
    if r.evals:
        from pvar.backends.spec import is_exact

        what += f"; judge `{cfg.eval.judge}` " + (
            "(the task's exact gold program, with the content guard beside it)" if is_exact(cfg.eval.judge)
            else "(held out from selection)")
    return [("h1", f"pvar experiment report: {r.name}"),
            ("p", f"Run folder `{r.run_dir}`; status: {state}. {what}.")]


def verdict(r: Report) -> list[Block]:
    """The decision first: did training learn (gate), the primary test with its power, then the rest."""
    if not r.evals:
        return []
    v = r.verdict
    blocks: list[Block] = [("h2", "Verdict")]
    if v is None:
        return [*blocks, ("p", "Not available yet: every arm must be trained and judged first.")]
    g, pr = v.gate, v.primary
    conf = f"{100 * (1 - v.alpha):g}%"
    if g is not None:
        word = "passed" if g.passed else "**failed**"
        blocks.append(("p", f"Learning gate {word}: the {g.a} arm ({g.runs_a} runs) minus the base policy "
                            f"= {_d(g)} mean eval score ({conf} CI, p = {_f(g.p_value, '.3g')}; "
                            f"hierarchical bootstrap {_boot(g)})."))
    warning = _guard_warning(v, [a.name for a in r.arms if g is not None and a.group == g.a])
    if warning:
        blocks.append(("p", warning))
    if v.void:
        blocks.append(("p", "**The comparison is void**: the budget-matched random arm does not beat the base policy "
                            "beyond noise, so training did not learn enough for any ranking of arms to mean "
                            "something. The arm tables below are shown for diagnosis only."))
    if pr is not None:
        beyond = (pr.ci_low or 0) > 0 or (pr.ci_high or 0) < 0
        blocks.append(("p", f"Primary comparison (named before the run): **{pr.a} − {pr.b} = {_d(pr)}** "
                            f"({pr.runs_a} vs {pr.runs_b} runs averaged, {pr.n_prompts} eval prompts, "
                            f"p = {_f(pr.p_value, '.3g')}, {'beyond noise' if beyond else 'within noise'}"
                            f"{'' if not v.void else '; void, see the gate'}); hierarchical bootstrap {conf} "
                            f"interval {_boot(pr)}. Minimum detectable effect at 80% power: {_f(pr.mde, '.4f')}; "
                            f"power against a true effect of the observed size: {_pct(pr.power)}%. Standard error "
                            f"{_f(pr.se, '.4f')} = runs {_f(pr.se_runs, '.4f')} ⊕ eval prompts "
                            f"{_f(pr.se_prompts, '.4f')} (Welch–Satterthwaite df {_f(pr.df, '.1f')})."))
    blocks.append(("p", f"Variance: {v.method}. Each arm's between-run SD of its mean score, net of prompt noise: "
                        + "; ".join(_run_sd(arm, x) for arm, x in v.run_sd.items()) + "."))
    blocks.append(("fig", "verdict", "Each arm's gain over the base policy, then the primary and secondary "
                                     "comparisons, with the intervals above."))
    if v.secondary:
        blocks.append(("table", ["secondary comparison", "difference [t CI]", "bootstrap CI", "p", "p (Holm)",
                                 "rejected at Holm?"],
                       [[f"{c.a} − {c.b}", _d(c), _boot(c), _f(c.p_value, ".3g"), _f(c.p_holm, ".3g"),
                         "yes" if c.rejected else "no"] for c in v.secondary]))
    blocks.append(("table", ["arm (runs averaged) − base", "runs", "gain [t CI]", "bootstrap CI", "p"],
                   [[arm, str(x.runs_a), _d(x), _boot(x), _f(x.p_value, ".3g")] for arm, x in v.vs_base.items()]))
    floor = []
    if v.aa_batches:
        a = v.aa_batches
        floor.append(f"the base policy answered twice in different batch arrangements: "
                     f"{_pct(a.identical_answers, '.1f')}% identical answers, score difference {_d(a)}")
    if v.aa_runs:
        a = v.aa_runs
        floor.append(f"{a.a} vs {a.b} (same arm, another seed): {_d(a)}")
    if floor:
        blocks.append(("p", "A/A noise floor: " + "; ".join(floor) + "."))
    if v.guard:
        blocks.append(("p", "Content guard (share of real answers: ≥ 3 words, not looping, mostly letters, "
                            "not an echo of the prompt): "
                            + ", ".join(f"{k} {_pct(x)}%" for k, x in v.guard.items())
                            + ". A gold gain with a guard drop would be a degenerate shortcut."))
    return blocks + _matching(r) + _reliability(r)


GUARD_DROP = 0.10  # the gate arm's content guard this far below the base's flags its gain as partly a shortcut


def _guard_warning(v: Verdict, runs: list[str]) -> str | None:
    """A gate passed while the gate arm's share of real answers (over its ``runs``) fell: say how much of
    the gain holds under gold x guard."""
    g, alt = v.gate, v.gate_guarded
    if g is None or not g.passed or not v.guard or "base" not in v.guard or alt is None:
        return None
    runs = [n for n in runs if n in v.guard]
    if not runs:
        return None
    arm = sum(v.guard[n] for n in runs) / len(runs)
    if v.guard["base"] - arm <= GUARD_DROP:
        return None
    holds = "still passes" if alt.passed else "**fails**"
    return (f"**Shortcut warning**: the {g.a} arm's content guard fell from {_pct(v.guard['base'])}% (base) to "
            f"{_pct(arm)}% (its runs averaged), so part of its gold gain is answers that are too short, loop or "
            f"echo the prompt. Under gold × guard the gate {holds}: {_d(alt)} (hierarchical bootstrap "
            f"{_boot(alt)}).")


def _matching(r: Report) -> list[Block]:
    m = r.matching
    if m is None:
        return []
    kind = "compute-matched (equal optimizer steps)" if m.mode == "compute" else \
        "data-matched (each arm one pass count over its own pairs)"
    extra = "" if m.equal_steps else " — **arms trained different numbers of steps**"
    none = (f" {', '.join(m.untrained)}: no pairs (every selected prompt tied), not trained, so its "
            "answers are the base policy's." if m.untrained else "")
    return [("p", f"Training: {kind}{extra}; optimizer steps (distinct pairs) per arm: "
                  + ", ".join(f"{k} {x} ({m.distinct_pairs.get(k)})" for k, x in m.steps.items()) + "." + none)]


def _reliability(r: Report) -> list[Block]:
    rr = r.rank_reliability
    if not rr or r.pool is None:
        return []
    last = rr[-1]
    blocks: list[Block] = [("p", f"Rank reliability: two disjoint sets of {last.samples} samples per prompt agree on "
                                 f"{_pct(last.overlap)}% of the top {r.pool.budget_k} by PVar (chance "
                                 f"{_pct(last.chance)}%); the selection used all {r.cfg.scoring.n} samples, so it "
                                 "is at least this stable. By samples: "
                                 + ", ".join(f"{x.samples}: {_pct(x.overlap)}%" for x in rr) + ".")]
    if r.rank_reliability_resampled:
        blocks.append(("p", "Resampling each prompt's own rewards (two sets of m drawn with replacement, 50 times) "
                            "gives the overlap at sizes the split halves cannot reach: "
                            + ", ".join(f"m = {x.samples}: {_pct(x.overlap)}%" for x in r.rank_reliability_resampled)
                            + " (compare the split-half figure at the same m)."))
    return blocks


def headline(r: Report) -> list[Block]:
    """One row per arm run: its selection and pairs, and its eval when judged."""
    if r.until == "measure":
        return []
    diff_of = {c.b: c for c in r.comparisons}
    header = ["arm", "prompts", "pairs", "mean PVar"]
    if r.evals:
        header += ["win rate vs base, % [95% CI]", f"{LC_NAME} win rate, %", "mean judge score", "answer tokens",
                   f"score diff vs {r.focus} [95% CI]"]
    rows = []
    for a in r.arms:
        row = [a.name, _f(a.prompts, "d"), _f(a.pairs, "d"), _f(a.mean_pvar, ".4f")]
        if r.evals:
            ev, c = a.eval, diff_of.get(a.name)
            ref = "(reference)" if a.name == r.focus else \
                (_ci(c.difference, pct=False) + (" ~noise" if c.within_noise else "")) if c else "–"
            row += [_ci(ev.hard if ev else None), _ci(ev.length_controlled if ev else None),
                    _f(ev.policy_mean_score if ev else None, ".4f"), _f(ev.policy_mean_tokens if ev else None, ".1f"),
                    ref]
        rows.append(row)
    if r.evals and r.base:
        rows.append(["base policy", "–", "–", "–", "50.0 (by definition)", "–", _f(r.base.mean_score, ".4f"),
                     _f(r.base.mean_tokens, ".1f"), "–"])
    blocks: list[Block] = [("h2", "Headline"), ("table", header, rows)]
    if r.evals:
        blocks += [("p", text) for text in _readings(r)]
        rnd = [a for a in r.arms if a.random_run and a.eval and a.eval.hard]
        if len(rnd) > 1:
            w = [a.eval.hard.estimate for a in rnd if a.eval and a.eval.hard and a.eval.hard.estimate is not None]
            if w:
                blocks.append(("p", f"Random arms span {100 * min(w):.1f}–{100 * max(w):.1f}% win rate across "
                                    f"{len(rnd)} seeds: the seed-to-seed spread is the noise floor any selection "
                                    "must beat."))
    return blocks


def _readings(r: Report) -> list[str]:
    """Plain sentences: which differences exceed the noise, which do not, and how to read them."""
    comps = r.comparisons
    if not comps:
        return ["No paired comparison yet: the arms have not all been judged."]
    out = []
    for c in comps:
        if c.within_noise:
            continue
        d = c.difference
        word = "better" if (d.estimate or 0) > 0 else "worse"
        out.append(f"**{r.focus} is {word} than {c.b}** beyond noise: mean judge-score difference "
                   f"{_f(d.estimate, '+.4f')} (95% CI {_f(d.ci_low, '+.4f')} to {_f(d.ci_high, '+.4f')}), "
                   f"head-to-head win rate {_ci(c.head_to_head)}%.")
    noise = [c for c in comps if c.within_noise]
    if noise:
        out.append(f"Within noise (the 95% interval of the paired score difference contains 0): {r.focus} vs "
                   + ", ".join(c.b for c in noise) + ". This run cannot tell those arms apart.")
    split = [c.b for c in comps if c.within_noise != c.head_to_head_noise]
    if split:
        out.append("The head-to-head win rate and the mean score difference disagree about noise for "
                   + ", ".join(split) + "; the score difference is the test used here, the head-to-head rate is "
                   "shown for reading.")
    out.append(f"{len(comps)} comparisons at 95% each: about {len(comps) / 20:.2f} would exclude 0 by chance alone, "
               "so a single separated comparison (especially against one random seed) is weak evidence; the "
               "comparison against the random seeds pooled is the one to trust.")
    return out


def paired(r: Report) -> list[Block]:
    """The focus arm against every other arm, prompt by prompt."""
    if not r.evals:
        return []
    blocks: list[Block] = [("h2", "Paired comparisons on the same eval prompts")]
    if r.comparisons:
        blocks.append(("p", f"Per eval prompt, the judge scores of {r.focus}'s answer and the other arm's answer are "
                            "subtracted; the interval is a paired bootstrap over prompts "
                            f"({r.cfg.eval.n_boot} resamples). Pairing cancels prompt difficulty, so these "
                            "separate arms far better than the separate win rates against the base policy."))
        blocks.append(("table", ["comparison", "prompts", "mean score difference [95% CI]",
                                 "head-to-head win rate, % [95% CI]", "within noise?"],
                       [_comparison_row(c) for c in r.comparisons]))
        blocks.append(("fig", "paired", "Mean judge-score difference against each arm (0 = no difference)."))
    else:
        blocks.append(("p", "Not available yet."))
    blocks.append(("fig", "win_rates", "Win rate of each arm against the base policy (hard, ties 1/2) with "
                                       f"its 95% paired bootstrap interval; diamonds: the {LC_NAME} win rate."))
    return blocks


def _comparison_row(c: Comparison) -> list[str]:
    return [f"{c.a} vs {c.b}", str(c.n), _ci(c.difference, pct=False), _ci(c.head_to_head),
            "yes" if c.within_noise else "**no**"]


def pool(r: Report) -> list[Block]:
    """The measured pool: PVar's spread and how it ranks against the reward-std baseline."""
    blocks: list[Block] = [("h2", "The pool: PVar and the reward-std baseline")]
    p = r.pool
    if p is None:
        return [*blocks, ("p", "The pool has not been measured yet.")]
    q = p.pvar_q10_q50_q90
    blocks.append(("p", f"{p.scored:,} of {p.prompts:,} pool prompts scored; PVar deciles 10/50/90%: "
                        f"{_f(q[0], '.4f')} / {_f(q[1], '.4f')} / {_f(q[2], '.4f')}. Spearman correlation of PVar "
                        f"with the reward std at scale {p.scale:g}: {_f(p.spearman_pvar_std)}; the top {p.budget_k} "
                        f"prompts by PVar and by reward std overlap {_pct(p.top_overlap_pvar_std)}%."))
    blocks.append(("fig", "pool", "PVar histogram (dashed: each selection's cut-off) and PVar against the "
                                  "reward std, selections marked."))
    blocks.append(("p", "Where the two selections part: PVar is the mean of tanh²(s·Δ/2) over response pairs, "
                        "which ranks like the reward std while s·Δ is small and saturates for large gaps."))
    blocks.append(("table", ["reward scale s", "Spearman(PVar, std)", f"top-{p.budget_k} overlap"],
                   [[f"{x.scale:g}", _f(x.spearman), f"{_pct(x.top_overlap)}%"] for x in p.scale_sweep]))
    return blocks


def training(r: Report) -> list[Block]:
    if not r.trains:
        return []
    return [("h2", "Training"),
            ("table", ["arm", "pairs", "optimizer steps", "final loss", "train seconds"],
             [[a.name, _f(a.pairs, "d"), _f(a.steps, "d"), _f(a.final_loss, ".4f"), _f(a.train_seconds, ".1f")]
              for a in r.arms]),
            ("fig", "curves", "DPO training loss per arm (every optimizer step).")]


def rounds(r: Report) -> list[Block]:
    rounds = {n: rs for n, rs in (r.rounds or {}).items() if rs}
    if not rounds:
        return []
    return [("h2", "Iterative rounds"),
            ("p", "Round r samples the prompts no earlier round selected, from the policy trained so far (round 1 is "
                  "the pool scored with the base policy); the mean reward of those fresh samples shows whether "
                  "training moved the policy. PVar (policy) is the policy form: the DPO implicit preference of that "
                  "policy against the base."),
            ("table", ["arm", "round", "prompts", "mean reward", "mean PVar", "tied", "mean PVar (policy)", "pairs",
                       "final loss"],
             [[n, str(x.round), _f(x.prompts, "d"), _f(x.mean_reward), _f(x.mean_pvar, ".4f"),
               f"{_pct(x.tied)}%" if x.tied is not None else "-", _f(x.mean_pvar_policy, ".4f"), _f(x.pairs, "d"),
               _f(x.final_loss, ".4f")] for n, rs in rounds.items() for x in rs])]


def signal(r: Report) -> list[Block]:
    sig = r.signal
    if sig is None:
        return []
    fp, fs = sig.fit_pvar, sig.fit_reward_std
    return [("h2", "Does PVar predict the learning signal?"),
            ("p", f"On {sig.n_prompts} pool prompts spread over PVar, two fresh sets of {sig.samples_per_set} samples "
                  "each give two independent estimates of the expected DPO gradient at initialisation; their dot "
                  "product is an unbiased estimate of its squared norm (the signal), regressed on PVar and on the "
                  f"reward std measured on the pool's own samples. PVar: R² {_f(fp.r2)}, Spearman {_f(fp.spearman)}; "
                  f"reward std: R² {_f(fs.r2)}, Spearman {_f(fs.spearman)} (parameters: {sig.params})."),
            ("fig", "signal", "Gradient signal against PVar and against the reward std, per prompt.")]


def heldout(r: Report) -> list[Block]:
    if not r.heldout:
        return []
    return [("h2", "Held-out gold pairs"),
            ("p", "Pairs from held-out prompts (fresh base samples, gold best vs worst): each trained arm's DPO loss "
                  "and accuracy against the base policy as reference. No decoding is involved."),
            ("table", ["arm", "pairs", "DPO loss (ln 2 = 0.693 untrained)", "accuracy", "mean β-margin"],
             [[n, _f(h.n_pairs, "d"), _f(h.loss, ".4f"), _f(h.accuracy, ".3f"), _f(h.mean_margin, "+.4f")]
              for n, h in r.heldout.items()])]


def theory(r: Report) -> list[Block]:
    th = r.theory
    if th is None:
        return []
    return [("h2", "Theory check: gradient norm vs PVar at initialisation"),
            ("p", f"On {th.n_prompts} pool prompts, the norm of the expected DPO gradient has Spearman "
                  f"{_f(th.spearman_pvar)} with PVar ({_f(th.spearman_reward_std)} with the reward std); the bound "
                  f"β·sqrt(PVar)·sqrt(mean‖g_i − g_j‖²) was violated {th.violations_exact} times (any violation "
                  "would be a bug)."),
            ("fig", "theory", "‖expected DPO gradient‖ against PVar, with its upper bound.")]


def details(r: Report) -> list[Block]:
    """Timings, the last invocation, package versions and the config, verbatim."""
    import yaml

    blocks: list[Block] = [("h2", "Run details"),
                           ("table", ["step", "seconds (last computed)"],
                            [[k, _f(v, ".1f")] for k, v in r.timings.items()])]
    last = r.last_run
    if last is not None:
        blocks.append(("p", f"Last invocation: started {last.started}, wall {_f(last.seconds, '.0f')} s, peak RSS "
                            f"{_f(last.peak_rss_mb, '.0f')} MB. Invocations of this folder: {len(r.runs)} (more than "
                            "one means it was resumed)."))
        blocks.append(("table", ["package", "version"], [[k, v] for k, v in last.versions.items()]))
    return [*blocks, ("h3", "Config"), ("pre", yaml.safe_dump(r.config, sort_keys=False))]


SECTIONS: tuple[Callable[[Report], list[Block]], ...] = (
    title, verdict, answers, headline, paired, pool, composition, training, rounds, signal, heldout, theory,
    details)


def document(data: dict[str, Any] | Report) -> list[Block]:
    """The report as blocks: every section in :data:`SECTIONS` order."""
    r = data if isinstance(data, Report) else Report.of(data)
    return [block for section in SECTIONS for block in section(r)]
