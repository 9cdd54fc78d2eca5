"""``pvar board``: prompt selectors ranked under one harness, on exact-gold testbeds, with honest variance.

Each testbed is one ``pvar run`` whose arms are the selectors (:data:`pvar.experiment.presets.BOARD`).
The leaderboard reads the run folders alone: every selector's gain over the base policy and its
difference from random at the same budget (runs pooled, each arm's own run variance, Welch intervals
and a hierarchical bootstrap beside them), its run SD, guard rate, answer length and what it selected;
selectors whose selections came out identical share one run and are shown tied. It also says how well
each cheaper proxy ranks the pool as gold PVar does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pvar.experiment import quality, verdict
from pvar.io.writers import atomic_write_text

RANDOM = "random"
PROXIES = ("pvar_half", "reward_std", "reward_range", "reward_mean")


def testbed_board(run_dir: Path) -> dict[str, Any]:
    """One testbed's leaderboard from its run folder (every arm trained and judged)."""
    from pvar.experiment.config import validate
    from pvar.experiment.config_file import read_yaml
    from pvar.experiment.state import read_state

    root = Path(run_dir)
    cfg = validate(read_yaml(root / "config.yaml"), str(root / "config.yaml"))
    answers = quality.judged_answers(root, cfg)
    scores = quality.metric_scores(answers, cfg.eval.metric)
    ids, groups, per_run, base_scores = quality.aligned_scores(scores, cfg.groups())
    mats = {arm: np.stack([per_run[r] for r in runs]) for arm, runs in groups.items()}
    base = base_scores[None, :]
    steps = read_state(root)["steps"]
    untrained = frozenset(a for a, runs in groups.items() if all(steps.get(f"train:{r}", {}).get("untrained")
                                                                  for r in runs))
    rv = verdict.run_variances(mats, untrained)
    alpha, seed = 1 - cfg.eval.confidence, cfg.seed
    report = json.loads((root / "report" / "report.json").read_text(encoding="utf-8"))
    profile = report.get("answers") or {}
    shares = (report.get("composition") or {}).get("shares", {})
    label = {a.name for a in cfg.arms if a.max_steps == -1}
    rows = []
    for arm, x in mats.items():
        gain = verdict.difference(arm, x, "base", base, run_a=rv[arm], run_b=verdict.UNTRAINED, alpha=alpha,
                                  seed=seed)
        # each budget against its own random arm: compute-matched arms against random, label-budget ones
        # against the label-budget random arm (the same labelled prompts, one pass)
        rival = next((a for a in sorted(label) if a.startswith(RANDOM)), RANDOM) if arm in label else RANDOM
        vs = None if arm == rival or rival not in mats else verdict.difference(
            arm, x, rival, mats[rival], run_a=rv[arm], run_b=rv[rival], alpha=alpha, seed=seed)
        shared = sorted({steps.get(f"train:{r}", {}).get("shared_with") for r in groups[arm]} - {None})
        prof = profile.get("arms", {}).get(arm, {})
        rows.append({"selector": arm, "runs": len(groups[arm]), "mean": float(x.mean()), "rival": rival,
                     "gain": gain.as_dict(), "vs_random": None if vs is None else vs.as_dict(),
                     "run_sd": float(np.sqrt(rv[arm].var)), "run_sd_source": rv[arm].source,
                     "guard": prof.get("guard_rate"), "mean_words": prof.get("mean_words"),
                     "composition": shares.get(arm), "shares_runs_with": shared,
                     "label_budget": arm in label})
    rows.sort(key=lambda r: -r["mean"])
    primary = next((r["vs_random"] for r in rows if r["selector"] == "top-pvar"), None)
    return {"testbed": cfg.name, "task": cfg.prompts.task, "metric": cfg.eval.metric, "n_prompts": len(ids),
            "base_mean": float(base.mean()), "rows": rows, "primary": primary, "pool_shares": shares.get("pool"),
            "never_learned": profile.get("never_learned", []), "proxies": proxy_agreement(root, cfg)}


def proxy_agreement(root: Path, cfg: Any) -> list[dict[str, Any]]:
    """How each cheaper signal ranks the pool against gold PVar: Spearman, and the overlap of their top-k at
    the run's budget (chance is k / n)."""
    import pyarrow.parquet as pq

    from pvar.core.select import budget
    from pvar.core.stats import spearman
    from pvar.experiment.analysis import overlap, top_ids

    measured = root / "scoring" / "measured.parquet"
    have = pq.ParquetFile(measured).schema_arrow.names
    table = pq.read_table(measured, columns=["prompt_id", "pvar", *[c for c in PROXIES if c in have]])
    ids = np.array(table.column("prompt_id").to_pylist(), dtype=object)
    gold = table.column("pvar").to_numpy(zero_copy_only=False).astype(float)
    k = int(cfg.budget) if isinstance(cfg.budget, int) else budget(len(ids), fraction=float(cfg.budget))
    out = []
    for name in PROXIES:
        if name not in table.column_names:
            continue
        proxy = table.column(name).to_numpy(zero_copy_only=False).astype(float)
        ok = np.isfinite(gold) & np.isfinite(proxy)
        out.append({"proxy": name, "spearman": float(spearman(gold[ok], proxy[ok])),
                    "top_k_overlap": overlap(top_ids(ids, gold, k), top_ids(ids, proxy, k)), "k": k,
                    "chance": k / len(ids) if len(ids) else None})
    return out


def _ci(d: dict[str, Any] | None) -> str:
    if d is None:
        return "—"
    return f"{d['estimate']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] (boot [{d['boot_low']:+.3f}, " \
           f"{d['boot_high']:+.3f}])"


def _top(shares: dict[str, float] | None) -> str:
    if not shares:
        return "—"
    best = sorted(shares.items(), key=lambda kv: -kv[1])[:2]
    return ", ".join(f"{'+'.join(part.split(':')[-1] for part in s.split('+')) or '(none)'} {100 * v:.0f}%"
                     for s, v in best)


def to_markdown(boards: list[dict[str, Any]]) -> str:
    """The leaderboard of every testbed, as Markdown."""
    out = ["# Prompt-selector leaderboard", ""]
    for b in boards:
        out += [f"## {b['testbed']} ({b['task']} prompts; metric {b['metric']}; {b['n_prompts']} eval prompts; "
                f"base {b['base_mean']:.3f})", ""]
        gate = next((r["gain"] for r in b["rows"] if r["selector"] == RANDOM), None)
        if gate is not None:
            passed = gate["ci_low"] > 0
            out += [f"Learning gate (random − base): {_ci(gate)}: " + ("passed." if passed else
                    "**failed**: training did not learn beyond noise here, so no ranking of selectors on this "
                    "testbed means anything; the rows are shown for diagnosis only."), ""]
        p = b["primary"]
        if p is not None:
            out += [f"Primary (named before the run): top-pvar − random = {_ci(p)}; MDE {p['mde']:.3f} at 80% "
                    f"power; power {100 * p['power']:.0f}%.", ""]
        out += ["Compute-matched selectors are compared with `random`, label-budget ones with the label-budget "
                "random arm; intervals are Welch 95 % with the hierarchical bootstrap in brackets.", "",
                "| selector | runs | mean | gain over base | vs its random arm (pooled) | run SD | guard | words | "
                "top strata | tied with |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in b["rows"]:
            name = r["selector"] + (" (label budget)" if r["label_budget"] else "")
            guard = "—" if r["guard"] is None else f"{100 * r['guard']:.0f}%"
            words = "—" if r["mean_words"] is None else f"{r['mean_words']:.1f}"
            out.append(f"| {name} | {r['runs']} | {r['mean']:.3f} | {_ci(r['gain'])} | {_ci(r['vs_random'])} | "
                       f"{r['run_sd']:.3f} ({r['run_sd_source']}) | {guard} | {words} | {_top(r['composition'])} | "
                       f"{', '.join(r['shares_runs_with']) or '—'} |")
        out += ["", f"Pool: {_top(b['pool_shares'])}."]
        if b["never_learned"]:
            out.append("Not learned by any selector: " + ", ".join(n["constraint"] for n in b["never_learned"]) + ".")
        if b["proxies"]:
            out += ["", "| proxy of gold PVar | Spearman | top-k overlap | chance |", "|---|---|---|---|"]
            out += [f"| {x['proxy']} | {x['spearman']:.3f} | {100 * x['top_k_overlap']:.0f}% | "
                    f"{100 * (x['chance'] or 0):.0f}% |" for x in b["proxies"]]
        out.append("")
    return "\n".join(out)


def write_board(run_dirs: list[Path], out_dir: Path) -> Path:
    """leaderboard.json and leaderboard.md of the testbeds' run folders, in ``out_dir``."""
    from pvar.io.jsonable import jsonable

    boards = [testbed_board(d) for d in run_dirs]
    atomic_write_text(out_dir / "leaderboard.json", json.dumps(jsonable(boards), indent=2) + "\n")
    atomic_write_text(out_dir / "leaderboard.md", to_markdown(boards))
    return out_dir / "leaderboard.md"
