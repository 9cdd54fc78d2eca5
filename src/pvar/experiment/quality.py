"""What a score hides: each answer's constraints, content guard and length; each arm's selection by stratum.

A gold score can rise by degenerating (shorter answers, echoes of the instruction), and a selection
can shift what is trained (mostly "no commas" prompts). So, for an exact gold judge, the report shows
per arm the success rate of each constraint type, the guard rate and the answer length, and names
the constraint types no arm learned; and for every arm, its selection's composition beside the pool's.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pvar.experiment.analysis import read_jsonl

LEARNED = 0.10  # a constraint type counts as learned by an arm that beats the base by this much (absolute)


def judged_answers(root: Path, cfg: Any) -> list[dict[str, Any]]:
    """One row per (run, eval prompt): the answer and its judge score; for an exact gold judge also its task
    spec, gold, content guard and each constraint's verdict. ``run`` is an arm's run, ``base`` or ``base-aa``."""
    from pvar.backends.spec import is_exact

    names = [n for n, _, _ in cfg.arm_runs()]
    exact = is_exact(cfg.eval.judge)
    specs: dict[str, Any] = {}
    if exact:
        eval_file = root / "prompts" / "eval.jsonl" if cfg.prompts.eval_source == "sharegpt" else \
            Path(cfg.prompts.eval_source)
        specs = {str(r["prompt_id"]): r.get("reference") for r in read_jsonl(eval_file, missing_ok=True)}
    sources = [("base", root / "base" / "eval"), ("base-aa", root / "base" / "eval-aa")] + \
        [(n, root / "arms" / n / "eval") for n in names]
    rows = []
    for run, folder in sources:
        score = {r["prompt_id"]: r["policy_score"] for r in read_jsonl(folder / "judgements.jsonl", missing_ok=True)}
        for r in read_jsonl(folder / "outputs_policy.jsonl", missing_ok=True):
            row: dict[str, Any] = {"run": run, "prompt_id": r["prompt_id"], "prompt": r["prompt"],
                                   "output": r["output"], "stopped_at_eos": r["stopped_at_eos"],
                                   "judge_score": score.get(r["prompt_id"])}
            spec = specs.get(str(r["prompt_id"]))
            if exact and spec:
                from pvar import tasks

                row.update(spec=spec, gold=tasks.gold(spec, r["output"]), guard=tasks.guard(r["output"], r["prompt"]),
                           constraints=tasks.gold_detail(spec, r["output"]))
            rows.append(row)
    return rows


def metric_scores(rows: list[dict[str, Any]], metric: str) -> dict[str, dict[str, float]]:
    """run -> prompt_id -> the pre-registered metric: the judge's score, or gold x content guard."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for r in rows:
        if metric == "gold-guarded":
            if "gold" in r:
                out[r["run"]][r["prompt_id"]] = float(r["gold"]) * float(r["guard"])
        elif r["judge_score"] is not None:
            out[r["run"]][r["prompt_id"]] = float(r["judge_score"])
    return dict(out)


def aligned_scores(scores: dict[str, dict[str, float]], planned: dict[str, list[str]]
                   ) -> tuple[list[str], dict[str, list[str]], dict[str, np.ndarray], np.ndarray]:
    """The prompts every scored run and the base share, each arm's runs that have scores, each run's scores
    on those prompts and the base's: what the verdict compares (a run without answers is left out)."""
    groups = {arm: [r for r in runs if r in scores] for arm, runs in planned.items()}
    groups = {arm: runs for arm, runs in groups.items() if runs}
    ids = sorted(set(scores["base"]).intersection(*(set(scores[r]) for runs in groups.values() for r in runs)))
    per_run = {r: np.array([scores[r][p] for p in ids]) for runs in groups.values() for r in runs}
    return ids, groups, per_run, np.array([scores["base"][p] for p in ids])


def answer_profile(rows: list[dict[str, Any]], groups: dict[str, list[str]]) -> dict[str, Any]:
    """Per arm (its runs pooled) and the base: answers, mean words, guard rate, success per constraint type;
    and the constraint types no arm learned (no arm beats the base by ``LEARNED``)."""
    arm_of = {run: arm for arm, runs in groups.items() for run in runs} | {"base": "base"}
    acc: dict[str, dict[str, Any]] = {}
    for r in rows:
        arm = arm_of.get(r["run"])
        if arm is None:  # the A/A re-generation is the noise floor, not an arm
            continue
        a = acc.setdefault(arm, {"answers": 0, "words": [], "guard": [], "constraints": defaultdict(list)})
        a["answers"] += 1
        a["words"].append(len(str(r["output"]).split()))
        if "guard" in r:
            a["guard"].append(float(r["guard"]))
        for cid, ok in (r.get("constraints") or {}).items():
            a["constraints"][cid].append(bool(ok))
    arms = {arm: {"answers": a["answers"], "mean_words": float(np.mean(a["words"])) if a["words"] else None,
                  "guard_rate": float(np.mean(a["guard"])) if a["guard"] else None,
                  "constraints": {c: {"n": len(v), "success": float(np.mean(v))} for c, v in
                                  sorted(a["constraints"].items())}}
            for arm, a in acc.items()}
    base = arms.get("base", {}).get("constraints", {})
    trained = [a for a in arms if a != "base"]
    never = []
    for cid in sorted({c for a in arms.values() for c in a["constraints"]}):
        rates = {a: arms[a]["constraints"][cid]["success"] for a in trained if cid in arms[a]["constraints"]}
        floor = base.get(cid, {}).get("success", 0.0)
        if rates and max(rates.values()) - floor < LEARNED:
            never.append({"constraint": cid, "base": floor, "best_arm": max(rates, key=rates.__getitem__),
                          "best": max(rates.values())})
    return {"arms": arms, "never_learned": never, "learned_margin": LEARNED}


def stratum_of(row: dict[str, Any], column: str) -> str:
    """A pool row's stratum: the column's value as text; ``constraints`` without such a column is derived
    from the row's task spec (its constraint ids, sorted, joined by '+'), as the stratified selector does."""
    if column in row:
        return "" if row[column] is None else str(row[column])
    if column == "constraints" and isinstance(row.get("reference"), str):
        from pvar.tasks import constraint_key

        try:
            return constraint_key(row["reference"])
        except ValueError:  # not a task spec (a plain reference answer)
            return ""
    return ""


def composition(pool_rows: list[dict[str, Any]], selections: dict[str, list[str] | None],
                column: str = "constraints") -> dict[str, Any]:
    """Each arm's selection by stratum against the pool's: the share of each stratum (runs of an arm that
    redraw their selection are counted together)."""
    stratum = {str(r["prompt_id"]): stratum_of(r, column) for r in pool_rows}
    total = Counter(stratum.values())
    n = sum(total.values())
    shares = {"pool": {s: c / n for s, c in sorted(total.items())} if n else {}}
    for arm, ids in selections.items():
        if ids:
            got = Counter(stratum.get(str(p), "") for p in ids)
            shares[arm] = {s: got.get(s, 0) / len(ids) for s in sorted(total)}
    return {"stratum": column, "shares": shares}
