"""``pvar verdict``: a run's verdict rebuilt from its exported per-prompt data alone, with this version's method.

A published run keeps ``config.yaml`` and ``data/eval_answers.jsonl`` (one row per run and eval prompt),
not its models. That is enough to re-score every answer under the current task rules (gold, content
guard) and to recompute the verdict with the current variance method, so an old result can be read
with today's statistics, and an independent checker can redo both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvar.experiment import quality, verdict
from pvar.experiment.analysis import read_jsonl


def answers_file(folder: Path) -> Path:
    """The exported answers of a results folder (``data/``) or a run folder (``report/data/``)."""
    for candidate in (folder / "data" / "eval_answers.jsonl", folder / "report" / "data" / "eval_answers.jsonl"):
        if candidate.is_file():
            return candidate
    from pvar.errors import InputError

    raise InputError(str(folder), "no data/eval_answers.jsonl or report/data/eval_answers.jsonl (exported by "
                                  "`pvar report`)")


def rescored(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each answer with a task spec scored again under the current rules (gold, guard, constraints)."""
    from pvar import tasks

    out = []
    for r in rows:
        spec = r.get("spec")
        if spec:
            r = {**r, "gold": tasks.gold(spec, r["output"]), "guard": tasks.guard(r["output"], r["prompt"]),
                 "constraints": tasks.gold_detail(spec, r["output"])}
        out.append(r)
    return out


def export_verdict(folder: str | Path, metric: str | None = None) -> dict[str, Any]:
    """The verdict of the exported run in ``folder`` under ``metric`` (default: its config's ``eval.metric``;
    'judge' reads the stored judge scores, 'gold' and 'gold-guarded' the answers re-scored now). Runs of
    the config without answers (a run stopped early) are left out and listed."""
    from pvar.experiment.config import validate
    from pvar.experiment.config_file import read_yaml

    root = Path(folder)
    cfg = validate(read_yaml(root / "config.yaml"), str(root / "config.yaml"))
    rows = rescored(read_jsonl(answers_file(root), require=("run", "prompt_id", "output", "judge_score")))
    metric = metric or cfg.eval.metric
    scores = _gold(rows) if metric == "gold" else quality.metric_scores(rows, metric)
    planned = cfg.groups()
    missing = [r for runs in planned.values() for r in runs if r not in scores]
    ids, groups, per_run, base = quality.aligned_scores(scores, planned)
    outputs = {(r["run"], r["prompt_id"]): r["output"] for r in rows}
    untrained = frozenset(a for a, runs in groups.items()  # an arm that answers as the base did is untrained
                          if all(outputs.get((r, p)) == outputs.get(("base", p)) for r in runs for p in ids))
    pair = cfg.primary_pair()
    out: dict[str, Any] = {"metric": metric, "n_prompts": len(ids), "missing_runs": missing,
                           "base_mean": float(base.mean())}
    if pair is None or not all(a in groups for a in pair):
        return {**out, "verdict": None}
    out["verdict"] = verdict.analyse(per_run, base, groups, primary=pair, gate_arm=pair[1],
                                     alpha=1 - cfg.eval.confidence, untrained=untrained, seed=cfg.seed)
    out["means"] = {a: [float(per_run[r].mean()) for r in runs] for a, runs in groups.items()}
    if any("gold" in r for r in rows):
        out["answers"] = quality.answer_profile(rows, groups)
    return out


def _gold(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if "gold" in r:
            out.setdefault(r["run"], {})[r["prompt_id"]] = float(r["gold"])
    return out


def to_markdown(result: dict[str, Any]) -> str:
    """The rebuilt verdict as a short Markdown section."""
    v = result["verdict"]
    lines = [f"### Metric: {result['metric']} ({result['n_prompts']} eval prompts, base {result['base_mean']:.3f})", ""]
    if result["missing_runs"]:
        lines += [f"Runs without answers, left out: {', '.join(result['missing_runs'])}.", ""]
    if v is None:
        return "\n".join([*lines, "No verdict: the primary comparison's arms lack answers.", ""])

    def ci(d: dict[str, Any]) -> str:
        return (f"{d['estimate']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] (hierarchical bootstrap "
                f"[{d['boot_low']:+.4f}, {d['boot_high']:+.4f}])")

    g, p = v["gate"], v["primary"]
    if g is not None:
        lines.append(f"- Learning gate ({g['a']} − base): {ci(g)}: {'passed' if g['passed'] else 'failed'}.")
    if p is not None:
        lines.append(f"- Primary {p['a']} − {p['b']}: {ci(p)}; p = {p['p_value']:.3g}; MDE {p['mde']:.4f} at 80% "
                     f"power; Welch–Satterthwaite df {p['df']:.1f}.")
    for s in v["secondary"]:
        lines.append(f"- {s['a']} − {s['b']}: {ci(s)}; Holm p = {s['p_holm']:.3g}.")
    sds = ", ".join(f"{a} {d['sd']:.4f} ({d['runs']} runs, {d['source']})" for a, d in v["run_sd"].items()
                    if d["sd"] is not None)
    lines += [f"- Run SD of each arm, net of prompt noise: {sds}.", f"- Method: {v['method']}.", ""]
    return "\n".join(lines)


METRICS = ("judge", "gold", "gold-guarded")


def write_verdict(folder: str | Path, metrics: list[str | None], out_dir: str | Path) -> str:
    """``verdict.json`` and ``verdict.md`` of ``folder`` under each metric, in ``out_dir``; returns the Markdown."""
    import json

    from pvar.errors import ConfigError
    from pvar.io.jsonable import jsonable
    from pvar.io.writers import atomic_write_text

    for m in metrics:
        if m is not None and m not in METRICS:
            raise ConfigError(f"--metric: {m!r} is not {', '.join(METRICS[:-1])} or {METRICS[-1]}")
    results = [export_verdict(folder, m) for m in metrics]
    out = Path(out_dir)
    atomic_write_text(out / "verdict.json", json.dumps(jsonable(results), indent=2) + "\n")
    md = "\n".join(to_markdown(r) for r in results)
    atomic_write_text(out / "verdict.md", md)
    return md
