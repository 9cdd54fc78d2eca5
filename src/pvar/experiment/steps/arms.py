"""Each arm: its selection and pairs, then its training (in process, or under ``accelerate launch``).

An arm killed mid-training is retrained from its start (arms are minutes each); an arm whose
selected prompts all tie has no pairs and is recorded as the base policy, not failed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pvar import status
from pvar.experiment.config import ArmConfig, RunConfig
from pvar.experiment.context import SHARED, UNTRAINED, RunContext, count_lines, write_json
from pvar.experiment.step import Step, Target
from pvar.io.writers import atomic_write_text

TIED = 1e-12  # PVar of a prompt whose rewards all tie is exactly 0; anything above yields a pair


def select_args(cfg: RunConfig, arm: ArmConfig, seed: int, pool_size: int | None = None) -> dict[str, Any]:
    """Selection settings of one arm. ``pool_size`` turns a fractional budget into a count of the whole
    pool, for arms that draw from a subset of it (usable prompts) at the same budget as the others."""
    from pvar.core.select import budget as budget_of

    args: dict[str, Any] = {"by": arm.by, "mode": arm.select, "seed": seed}
    if arm.select == "stratified":
        args["stratum"] = arm.stratum
    if arm.select == "threshold":
        return {**args, "minimum": arm.minimum}
    if arm.fraction is not None or arm.count is not None:
        size = {"fraction": arm.fraction, "count": arm.count}
    else:
        size = {"count": int(cfg.budget)} if isinstance(cfg.budget, int) else {"fraction": float(cfg.budget)}
    if pool_size is not None and size.get("fraction") is not None:
        size = {"count": budget_of(pool_size, fraction=size["fraction"], count=size.get("count"))}
    return {**args, **size}


def _configs(ctx: RunContext, t: Target) -> tuple[Any, Any]:
    """The arm's selection (None for the full pool) and pair settings."""
    from pvar.pipeline import pairs, select

    c, arm = ctx.cfg, t.arm
    assert arm is not None
    scfg = None if arm.select == "full" else select.SelectConfig.make(
        **select_args(c, arm, t.seed, ctx.pool_size() if arm.usable else None))
    return scfg, c.stage(pairs.PairsConfig, c.scoring, rule=arm.rule or c.train.pair_rule)


def _pool(ctx: RunContext, t: Target) -> tuple[Path, str]:
    """The scored pool an arm selects from, and its ledger step."""
    from pvar.experiment.steps.scoring import needs_potential

    return (ctx.paths.potential, "potential") if needs_potential(ctx, t) else (ctx.paths.measured, "measure")


def select_and_pair(pool: Path, folder: Path, scfg: Any, pcfg: Any, *, usable: bool = False) -> dict[str, Any]:
    """Select from ``pool`` into ``folder/selected.parquet`` (all of it when ``scfg`` is None; first the prompts
    that yield a pair when ``usable``), then pair the selection into ``folder/pairs.jsonl``; returns counters."""
    from pvar.pipeline import pairs, select

    selected, pair_file = folder / "selected.parquet", folder / "pairs.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    source = pool
    info: dict[str, Any] = {}
    if scfg is not None:
        if usable:  # among prompts that yield a pair: PVar > 0 first, then the selection
            got = select.run(pool, folder / "usable.parquet",
                             select.SelectConfig.make(by="pvar", mode="threshold", minimum=TIED))
            info["usable"] = got.n_kept
            pool = folder / "usable.parquet"
        got = select.run(pool, selected, scfg)
        source = selected
        info.update(kept=got.n_kept, eligible=got.n_eligible)
        if got.n_kept == 0:  # nothing eligible (e.g. every AP undefined): an arm with no pairs
            atomic_write_text(pair_file, "")
            return {**info, "pairs": 0}
    return {**info, "pairs": pairs.run(source, pair_file, pcfg).n_pairs}


def _run_pairs(ctx: RunContext, t: Target) -> dict[str, Any]:
    assert t.arm is not None
    scfg, pcfg = _configs(ctx, t)
    return select_and_pair(_pool(ctx, t)[0], ctx.paths.arm(t.name), scfg, pcfg, usable=t.arm.usable)


def _pairs_settings(ctx: RunContext, t: Target) -> tuple[Any, ...]:
    assert t.arm is not None
    scfg, pcfg = _configs(ctx, t)
    return (scfg.fingerprint() if scfg else "full", pcfg.fingerprint(), *(["usable", TIED] if t.arm.usable else []))


PAIRS = Step("pairs", "pairs", _run_pairs, inputs=lambda ctx, t: [_pool(ctx, t)[1]], settings=_pairs_settings,
             outputs=lambda ctx, t: [ctx.paths.arm(t.name) / "pairs.jsonl"])


def train_folder(ctx: RunContext, t: Target, folder: Path, tcfg: Any) -> dict[str, Any]:
    """Train ``folder/pairs.jsonl`` into ``folder/model`` (an arm without pairs is marked untrained)."""
    from pvar.pipeline.train import train

    model = folder / "model"
    shutil.rmtree(model, ignore_errors=True)  # a run killed mid-training restarts this arm cleanly
    if not count_lines(folder / "pairs.jsonl"):
        # Every selected prompt tied (PVar 0): there is nothing to learn from, so the arm *is* the base
        # policy. Recorded as such rather than failing the run: it is a result about the selection.
        model.mkdir(parents=True)
        write_json(model / UNTRAINED, {"reason": "no pairs", "policy": ctx.cfg.policy})
        atomic_write_text(model / "train_log.jsonl", "")
        ctx.log(f"[yellow]  {t.name}: no pairs (every selected prompt tied); not trained[/yellow]")
        return {"steps": 0, "n_pairs": 0, "untrained": True}
    twin = _twin(ctx, t, folder, tcfg)
    if twin is not None:  # the same pairs under the same training: one run serves both arms
        write_json(model / SHARED, {"with": twin})
        shutil.copyfile(ctx.paths.arm(twin) / "model" / "train_log.jsonl", model / "train_log.jsonl")
        ctx.log(f"  {t.name}: the same pairs and training as {twin}; its model is shared, not trained again")
        done = ctx.ledger.data["steps"].get(f"train:{twin}", {}) if ctx.ledger else {}
        skip = ("key", "done", "seconds", "computed", "finished")
        return {**{k: v for k, v in done.items() if k not in skip}, "shared_with": twin}
    if ctx.cfg.train.launcher == "accelerate":
        res = _launch(ctx, folder, model, tcfg)
        return {**{k: v for k, v in res.items() if k not in ("out_dir", "seconds")}, "total_seconds": res["seconds"]}
    total = tcfg.max_steps if tcfg.max_steps > 0 else None
    with status.progress(f"train {t.name}", total=total, unit="steps") as tick:
        done = [0]

        def advance(step: int, _total: int, logs: dict[str, Any]) -> None:
            tick(step - done[0])
            done[0] = step

        result = train(folder / "pairs.jsonl", model, tcfg, ref_cache=ctx.paths.ref_cache, progress=advance)
    info = {k: v for k, v in result.to_dict().items() if k not in ("out_dir", "seconds")}
    return {**info, "total_seconds": result.seconds}


def _twin(ctx: RunContext, t: Target, folder: Path, tcfg: Any) -> str | None:
    """An earlier arm run trained on byte-identical pairs with the same training settings (its own model,
    not a shared one), whose model this arm can share: arms whose selections come out equal (top-PVar and
    top reward-std under 0/1 gold) spend no compute twice."""
    if ctx.cfg.rounds > 1 or t.round > 1:
        return None
    pairs = (folder / "pairs.jsonl").read_bytes()
    fingerprint = tcfg.fingerprint()
    for name, arm, _ in ctx.cfg.arm_runs():
        if name == t.name:
            return None
        other = ctx.paths.arm(name)
        model = other / "model"
        trained = (model / "train_log.jsonl").is_file() and not (model / UNTRAINED).is_file() and \
            not (model / SHARED).is_file()
        if trained and (other / "pairs.jsonl").is_file() and (other / "pairs.jsonl").read_bytes() == pairs and \
                ctx.train_config(name, arm).fingerprint() == fingerprint:
            return name
    return None


def _launch(ctx: RunContext, folder: Path, model: Path, tcfg: Any) -> dict[str, Any]:
    """One arm's training under ``accelerate launch`` (pvar.training.launch); returns its TrainResult dict."""
    import subprocess

    from pvar.errors import PvarError
    from pvar.training import launch

    t = ctx.cfg.train
    job = folder / "train_job.json"
    launch.write_job(job, folder / "pairs.jsonl", model, tcfg, ctx.paths.ref_cache)
    result = launch.result_path(job)
    result.unlink(missing_ok=True)
    cmd = launch.launch_command(job, config=t.accelerate_config, num_processes=t.num_processes,
                                extra=tuple(t.accelerate_args))
    ctx.log(f"  accelerate launch: {' '.join(cmd[3:])}")
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0 or not result.is_file():
        raise PvarError(f"train: accelerate launch exited with {done.returncode} ({job}); its output is above")
    return json.loads(result.read_text(encoding="utf-8"))


def _train_config(ctx: RunContext, t: Target) -> Any:
    assert t.arm is not None
    return ctx.train_config(t.name, t.arm)


TRAIN = Step("train", "train", lambda ctx, t: train_folder(ctx, t, ctx.paths.arm(t.name), _train_config(ctx, t)),
             inputs=lambda ctx, t: [f"pairs:{t.name}"], settings=lambda ctx, t: (_train_config(ctx, t).fingerprint(),),
             outputs=lambda ctx, t: [ctx.paths.arm(t.name) / "model" / "train_log.jsonl"])
