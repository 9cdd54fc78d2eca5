"""``pvar report RUN_DIR``: the experiment's report, rebuilt from the run folder alone.

Writes ``report/report.json`` (every number), ``report/report.md`` (figures beside it in
``report/figures/``) and ``report/report.html`` (one self-contained page: figures inlined as PNG
data URIs, no external assets). Works on a partial run: sections whose inputs are missing say so.
:func:`collect` gathers the numbers (report.json); :mod:`pvar.experiment.document` builds the
document from their typed view (:mod:`pvar.experiment.report_data`), one builder per section,
as blocks rendered twice (:mod:`pvar.experiment.markup`), so both formats say the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pvar.errors import InputError, one_line
from pvar.experiment import analysis, quality, verdict
from pvar.experiment.document import document
from pvar.experiment.markup import to_html, to_markdown
from pvar.io.writers import atomic_write_text
from pvar.pipeline.evaluate import LC_NAME

# -- collecting -----------------------------------------------------------------------------------


def _json(path: Path, *require: str) -> dict[str, Any] | None:
    """A JSON object a run step wrote (None when the step has not run), holding each dotted key of
    ``require``; a damaged or foreign file is an `InputError` naming it and the key."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise InputError(str(path), f"not readable JSON ({type(exc).__name__}); rerun the step that writes it "
                                    "(`pvar run` on the folder)") from None
    if not isinstance(data, dict):
        raise InputError(str(path), f"expected a JSON object, got {type(data).__name__}")
    for key in require:
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise InputError(str(path), "missing (rerun `pvar run` on the folder to rewrite it)", field=key)
            node = node[part]
    return data


EVAL_KEYS = ("policy.mean_score", "policy.mean_tokens", "baseline.mean_score", "win_rate.hard.estimate",
             "n_prompts", "judge")


def _selected_ids(folder: Path, pool: analysis.Pool | None) -> np.ndarray | None:
    sel = folder / "selected.parquet"
    if sel.is_file():
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(sel, columns=["prompt_id"])
        except (OSError, ValueError, KeyError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(str(sel), f"not a readable selection ({one_line(exc)}); rerun `pvar run` on the "
                                       "folder") from None
        return np.asarray(table.column("prompt_id").to_pylist(), dtype=object)
    if (folder / "pairs.jsonl").is_file() and pool is not None:  # the full arm: every scored prompt
        return pool.ids
    return None


def read_pool(root: Path) -> analysis.Pool | None:
    """The run's measured pool, or None before the measure step has run."""
    measured = root / "scoring" / "measured.parquet"
    return analysis.read_pool(measured) if measured.is_file() else None


def collect(run_dir: str | Path, pool: analysis.Pool | None = None) -> dict[str, Any]:
    """Everything the report shows, as plain JSON-able data (``pool``: already read, else read here).

    This dict is ``report.json``; :class:`pvar.experiment.report_data.Report` is its typed view.
    """
    from pvar.experiment.config import validate
    from pvar.experiment.config_file import read_yaml
    from pvar.experiment.state import read_state

    root = Path(run_dir)
    raw = read_yaml(root / "config.yaml")
    cfg = validate(raw, str(root / "config.yaml"))
    state = read_state(Path(root))
    steps = state.get("steps", {})
    out: dict[str, Any] = {"run_dir": str(root), "name": cfg.name, "config": raw, "runs": state.get("runs", []),
                           "timings": {k: v.get("seconds") for k, v in steps.items()}}
    pool = read_pool(root) if pool is None else pool
    arm_names = [] if cfg.until == "measure" else [n for n, _, _ in cfg.arm_runs()]
    selections = {n: _selected_ids(root / "arms" / n, pool) for n in arm_names}
    if pool is not None:
        out["pool"] = _pool_data(cfg, pool, selections)
    arms, judged = _arms_data(cfg, root, steps, pool, selections)
    out["arms"] = arms
    base = _json(root / "base" / "eval" / "eval.json", *EVAL_KEYS)
    if base is not None:
        out["base"] = {"mean_score": base["policy"]["mean_score"], "mean_tokens": base["policy"]["mean_tokens"],
                       "self_win_rate": base["win_rate"]["hard"]["estimate"], "n_prompts": base["n_prompts"],
                       "judge": base["judge"]}
    untrained = [a["name"] for a in arms if a["pairs"] == 0]  # every selected prompt tied: nothing to train on
    answers = quality.judged_answers(root, cfg) if judged else []
    out["metric"] = cfg.eval.metric
    out["verdict"] = _verdict(cfg, root, judged, untrained, answers)
    if any("gold" in r for r in answers):
        out["answers"] = quality.answer_profile(answers, cfg.groups())
    if pool is not None and any(s is not None for s in selections.values()):
        out["composition"] = _composition(cfg, root, selections)
    out["matching"] = _matching(cfg, arms, untrained)
    if pool is not None and pool.rewards.shape[1] >= 4:
        out.update(_reliability(cfg, pool, out["pool"]["budget_k"]))
    focus = arm_names[0] if arm_names else None
    groups = {arm.name: [n for n, _ in arm.expand()] for arm in cfg.arms if arm.select == "random"}
    e = cfg.eval
    comps = analysis.paired_comparisons(judged, focus, groups, n_boot=e.n_boot, confidence=e.confidence,
                                        seed=cfg.seed) if focus else []
    out["focus"] = focus
    out["comparisons"] = [c.as_dict() for c in comps]
    out.update(_checks(root, arm_names))
    out["curves"] = _curves(root, arm_names)
    if cfg.rounds > 1:  # iterative rounds: what each round sampled, measured, selected and trained
        out["rounds"] = _rounds(cfg, steps, arm_names)
    if cfg.until == "measure":
        out["complete"] = "pool" in out
    else:
        out["complete"] = bool(arms) and all(a["eval"] for a in arms) if cfg.until == "eval" else \
            all(a["pairs"] is not None for a in arms)
    out["until"] = cfg.until
    return out


def _pool_data(cfg: Any, pool: analysis.Pool, selections: dict[str, np.ndarray | None]) -> dict[str, Any]:
    """PVar's spread over the pool and how its top-k compares with the reward std's."""
    ok = np.isfinite(pool.pvar)
    q = np.quantile(pool.pvar[ok], [0.1, 0.5, 0.9]).tolist() if ok.any() else [math.nan] * 3
    k = next((len(s) for n, s in selections.items() if s is not None and n != "full" and len(s)), 0) or \
        max(1, int(0.25 * ok.sum() + 0.5))
    top_pvar, top_std = analysis.top_ids(pool.ids, pool.pvar, k), analysis.top_ids(pool.ids, pool.reward_std, k)
    return {"prompts": int(pool.ids.size), "scored": int(ok.sum()), "pvar_q10_q50_q90": q,
            "scale": cfg.scoring.scale, "spearman_pvar_std": analysis.spearman(pool.pvar, pool.reward_std),
            "budget_k": k, "top_overlap_pvar_std": analysis.overlap(top_pvar, top_std),
            "scale_sweep": analysis.scale_sweep(pool, k)}


def _arms_data(cfg: Any, root: Path, steps: dict[str, Any], pool: analysis.Pool | None,
               selections: dict[str, np.ndarray | None]) -> tuple[list[dict[str, Any]], dict[str, analysis.Judged]]:
    """One row per arm run (selection, pairs, training, eval), and the judged runs' per-prompt scores."""
    group_of = {n: arm.name for arm in cfg.arms for n, _ in arm.expand()}
    judged: dict[str, analysis.Judged] = {}
    arms = []
    for name, ids in selections.items():
        folder = root / "arms" / name
        summary = analysis.ArmSummary(name, group_of[name])
        if ids is not None:
            summary.prompts = len(ids)
            if pool is not None:
                pos = {pid: i for i, pid in enumerate(pool.ids.tolist())}
                vals = np.array([pool.pvar[pos[p]] for p in ids if p in pos], float)
                summary.mean_pvar = analysis.mean_finite(vals)
        summary.pairs = steps.get(f"pairs:{name}", {}).get("pairs")
        train_step = steps.get(f"train:{name}", {})
        summary.final_loss = train_step.get("final_loss")
        summary.train_seconds = train_step.get("train_seconds")
        summary.steps = train_step.get("steps")
        ev = _json(folder / "eval" / "eval.json", *EVAL_KEYS)
        if ev is not None:
            summary.eval = {**ev["win_rate"], "policy_mean_score": ev["policy"]["mean_score"],
                            "baseline_mean_score": ev["baseline"]["mean_score"],
                            "policy_mean_tokens": ev["policy"]["mean_tokens"], "n_prompts": ev["n_prompts"]}
            judged[name] = analysis.read_judgements(folder / "eval")
        arms.append(summary.as_dict())
    return arms, judged


def _reliability(cfg: Any, pool: analysis.Pool, k: int) -> dict[str, Any]:
    """How stable the top-k by PVar is across independent sample sets (split halves, and resampled)."""
    n = pool.rewards.shape[1]
    return {"rank_reliability": analysis.rank_reliability(pool.rewards, k, scale=cfg.scoring.scale),
            "rank_reliability_resampled": analysis.resampled_reliability(
                pool.rewards, k, scale=cfg.scoring.scale, sizes=sorted({n // 2, n, 2 * n}), seed=cfg.seed)}


def _checks(root: Path, arm_names: list[str]) -> dict[str, Any]:
    """The theory check, the gradient signal and the held-out pairs, where the run has them."""
    out: dict[str, Any] = {}
    theory = _json(root / "theory" / "theory.json")
    if theory is not None:
        out["theory"] = {k: theory.get(k) for k in ("n_prompts", "spearman_pvar", "spearman_reward_std",
                                                    "violations_exact", "beta", "scale", "n_params", "seconds")
                         if k in theory}
    signal = _json(root / "signal" / "signal.json")
    if signal is not None:
        out["signal"] = signal
    held = {n: _json(root / "arms" / n / "heldout.json") for n in arm_names}
    if any(h is not None for h in held.values()):
        out["heldout"] = {n: h for n, h in held.items() if h is not None}
    return out


def _curves(root: Path, arm_names: list[str]) -> dict[str, list[list[float]]]:
    logs = {n: analysis.read_jsonl(root / "arms" / n / "model" / "train_log.jsonl", missing_ok=True, require=("step",))
            for n in arm_names}
    return {n: [[r["step"], r["loss"]] for r in rows if isinstance(r.get("loss"), (int, float))]
            for n, rows in logs.items()}


def _rounds(cfg: Any, steps: dict[str, Any], arm_names: list[str]) -> dict[str, list[dict[str, Any]]]:
    return {n: [{"round": r, **steps.get(f"round{r}-score:{n}", {}),
                 "pairs": steps.get(f"round{r}-pairs:{n}", {}).get("pairs"),
                 "final_loss": steps.get(f"round{r}-train:{n}", {}).get("final_loss")}
                for r in range(2, cfg.rounds + 1) if f"round{r}-score:{n}" in steps]
            for n in arm_names}


def _verdict(cfg: Any, root: Path, judged: dict[str, analysis.Judged], untrained_runs: list[str],
             answers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Gate, primary and secondary tests, A/A floor and content guard, once every run is judged; the tests
    score each prompt by the pre-registered metric (``eval.metric``)."""
    names = [n for n, _, _ in cfg.arm_runs()]
    pair = cfg.primary_pair()
    if pair is None or not judged or any(n not in judged for n in names):
        return None
    ids, scores = analysis.aligned(judged)
    first = judged[names[0]]
    pos = {pid: i for i, pid in enumerate(first.ids.tolist())}
    base = first.baseline[[pos[pid] for pid in ids]]
    if cfg.eval.metric != "judge":
        scored = _scored(answers, cfg.eval.metric, names, ids)
        if scored is None:
            return None  # an answer lacks what the metric needs (a prompt without a task spec)
        scores, base = scored
    groups = cfg.groups()
    untrained = frozenset(arm for arm, runs in groups.items() if all(r in untrained_runs for r in runs))
    out = verdict.analyse(scores, base, groups, primary=pair, gate_arm=pair[1], alpha=1 - cfg.eval.confidence,
                          untrained=untrained, seed=cfg.seed)
    out["untrained"] = sorted(untrained)
    base_dir, aa_dir = root / "base" / "eval", root / "base" / "eval-aa"
    if (aa_dir / "judgements.jsonl").is_file():
        a, b = analysis.read_judgements(base_dir), analysis.read_judgements(aa_dir)
        if a.ids.tolist() == b.ids.tolist() and a.texts is not None and b.texts is not None:
            out["aa_batches"] = verdict.aa_floor(a.policy, b.policy, a.texts == b.texts,
                                                 alpha=1 - cfg.eval.confidence)
    multi = [g for g in groups.values() if len(g) > 1 and all(r in scores for r in g)]
    if multi:  # the same arm under two runs: the training/selection-seed floor (paired t over prompts)
        g = multi[-1] if len(multi[-1]) == 2 else multi[0]
        out["aa_runs"] = verdict.difference(g[0], scores[g[0]][None, :], g[1], scores[g[1]][None, :],
                                            alpha=1 - cfg.eval.confidence, seed=cfg.seed).as_dict()
    guards: dict[str, list[float]] = {}
    for r in answers:  # gold scores: the content guard goes beside them
        if "guard" in r and r["run"] != "base-aa":
            guards.setdefault(r["run"], []).append(float(r["guard"]))
    if guards and all(n in guards for n in names):
        out["guard"] = {n: float(np.mean(v)) for n, v in guards.items()}
        guarded = _scored(answers, "gold-guarded", names, ids) if cfg.eval.metric == "judge" else None
        if guarded is not None:  # the gate again under gold x guard: a shortcut's gain shrinks there
            out["gate_guarded"] = verdict.analyse(*guarded, groups, primary=pair, gate_arm=pair[1],
                                                  alpha=1 - cfg.eval.confidence, untrained=untrained,
                                                  seed=cfg.seed)["gate"]
    return out


def _scored(answers: list[dict[str, Any]], metric: str, names: list[str], ids: np.ndarray
            ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Each run's and the base's scores on ``ids`` under ``metric``; None where an answer lacks what the
    metric needs (a prompt without a task spec)."""
    by_run = quality.metric_scores(answers, metric)
    if not all(pid in by_run.get(run, {}) for run in [*names, "base"] for pid in ids):
        return None
    return ({n: np.array([by_run[n][pid] for pid in ids]) for n in names},
            np.array([by_run["base"][pid] for pid in ids]))


def _composition(cfg: Any, root: Path, selections: dict[str, np.ndarray | None]) -> dict[str, Any]:
    """Each arm's selected prompts by stratum (a stratified arm's column, else the constraint types)."""
    import pyarrow.parquet as pq

    column = next((a.stratum for a in cfg.arms if a.select == "stratified"), "constraints")
    measured = root / "scoring" / "measured.parquet"
    have = pq.ParquetFile(measured).schema_arrow.names
    rows = pq.read_table(measured, columns=[c for c in ("prompt_id", "reference", column) if c in have]).to_pylist()
    by_arm: dict[str, list[str]] = {}
    for arm in cfg.arms:
        picked = [str(p) for n, _ in arm.expand() if selections.get(n) is not None for p in selections[n]]
        by_arm[arm.name] = picked or None
    return quality.composition(rows, by_arm, column)


def _matching(cfg: Any, arms: list[dict[str, Any]], untrained: list[str]) -> dict[str, Any]:
    """Whether arms trained equal optimizer steps (compute-matched) or one pass count each (data-matched)."""
    steps = {a["name"]: a["steps"] for a in arms if a["steps"] is not None}
    trained = {n: s for n, s in steps.items() if n not in untrained}
    return {"mode": cfg.train.matched, "steps": steps, "equal_steps": len(set(trained.values())) <= 1,
            "untrained": untrained, "distinct_pairs": {a["name"]: a["pairs"] for a in arms},
            "pair_slots": {a["name"]: (a["steps"] or 0) * cfg.train.batch_size for a in arms}}


# -- figures --------------------------------------------------------------------------------------


def draw(data: dict[str, Any], run_dir: Path, fig_dir: Path, pool: analysis.Pool | None) -> dict[str, Path]:
    """PNG figures for whatever the run has so far; {} without matplotlib."""
    try:
        from pvar import plots

        plots.pyplot()
    except Exception:
        return {}
    figs: dict[str, Path] = {}
    if pool is not None:
        chosen = {}
        for arm in data["arms"]:  # an arm's first run stands for its selection (training seeds share it)
            if arm["group"] in ("top-pvar", "top-std", "bottom-pvar") and arm["group"] not in chosen:
                ids = _selected_ids(run_dir / "arms" / arm["name"], pool)
                if ids is not None:
                    chosen[arm["group"]] = np.isin(pool.ids, ids)
        figs["pool"] = plots.pvar_selection(pool.pvar, pool.reward_std, chosen, fig_dir / "pvar_pool.png")
    evald = [a for a in data["arms"] if a["eval"]]
    if evald:
        rows = [(a["name"], a["eval"]["hard"]["estimate"], a["eval"]["hard"]["ci_low"], a["eval"]["hard"]["ci_high"])
                for a in evald]
        lc = [(LC_NAME, a["eval"]["length_controlled"]["estimate"]) for a in evald]
        figs["win_rates"] = plots.interval_rows(rows, fig_dir / "win_rates.png", xlabel="win rate vs base policy",
                                                ref=0.5, title="Each arm against the base policy", extra=lc)
    if data["comparisons"]:
        rows = [(f"vs {c['b']}", c["difference"]["estimate"], c["difference"]["ci_low"], c["difference"]["ci_high"])
                for c in data["comparisons"]]
        figs["paired"] = plots.interval_rows(rows, fig_dir / "paired.png", ref=0.0,
                                             xlabel=f"mean judge-score difference ({data['focus']} - other)",
                                             title=f"{data['focus']} against each arm on the same eval prompts")
    v = data.get("verdict")
    if v:
        rows = [(f"{arm} − base ({x['runs_a']} runs)", x["estimate"], x["ci_low"], x["ci_high"])
                for arm, x in v["vs_base"].items()]
        tests = ([v["primary"]] if v["primary"] else []) + v["secondary"]
        rows += [(f"{c['a']} − {c['b']}" + (" (primary)" if i == 0 and v["primary"] else ""), c["estimate"],
                  c["ci_low"], c["ci_high"]) for i, c in enumerate(tests)]
        figs["verdict"] = plots.interval_rows(rows, fig_dir / "verdict.png", ref=0.0,
                                              xlabel="mean eval score difference (per-arm run + prompt variance)",
                                              title="Gains over the base policy, then the arm comparisons")
    signal = run_dir / "signal" / "signal.jsonl"
    if data.get("signal") and signal.is_file():
        rows_s = analysis.read_jsonl(signal)
        figs["signal"] = plots.signal_scatter(
            np.array([r["dot"] for r in rows_s]), np.array([r["pool_pvar"] for r in rows_s]),
            np.array([r["pool_reward_std"] for r in rows_s]), fig_dir / "signal.png",
            fits=(data["signal"]["fit_pvar"], data["signal"]["fit_reward_std"]))
    curves = {n: (np.array([c[0] for c in pts]), np.array([c[1] for c in pts])) for n, pts in data["curves"].items()
              if pts}
    if curves:
        figs["curves"] = plots.training_curves(curves, fig_dir / "training_curves.png")
    theory_png = run_dir / "theory" / "theory.png"
    if theory_png.is_file():
        import shutil

        fig_dir.mkdir(parents=True, exist_ok=True)
        figs["theory"] = Path(shutil.copyfile(theory_png, fig_dir / "theory.png"))
    return figs


def write_report(run_dir: str | Path, *, log: Callable[[str], None] | None = None) -> Path:
    """Rebuild ``RUN_DIR/report/`` from the run folder; returns that folder."""
    root = Path(run_dir)
    from pvar.errors import InputError

    if not (root / "config.yaml").is_file():
        raise InputError(str(root), "not a pvar run folder (no config.yaml)")
    from pvar.experiment.state import read_state

    if not read_state(root)["steps"]:
        raise InputError(str(root), "no step of this run has finished yet: nothing to report (run `pvar run` "
                                    "with its config first)")
    out = root / "report"
    pool = read_pool(root)  # read once: the numbers and the figures both need it
    data = collect(root, pool)
    figs = draw(data, root, out / "figures", pool)
    blocks = document(data)
    from pvar.io.jsonable import jsonable  # NaN -> null, numpy scalars -> numbers

    atomic_write_text(out / "report.json", json.dumps(jsonable(data), indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "report.md", to_markdown(blocks, figs))
    atomic_write_text(out / "report.html", to_html(blocks, figs))
    from pvar.experiment.config import validate
    from pvar.experiment.export import export_per_prompt

    export_per_prompt(root, out / "data", validate(data["config"], str(root / "config.yaml")))
    if log:
        log(f"[bold]report[/bold]: {out / 'report.html'} and {out / 'report.md'}")
    return out
