"""``pvar run``: score the pool once, then select, pair, train and judge every arm, then report.

Run folder (every file written atomically; ``state.json`` records finished steps)::

    config.yaml                 the resolved config this folder belongs to
    state.json                  finished steps: key, seconds, counters; one entry per invocation
    prompts/pool.jsonl          pool prompts (ShareGPT pool split, or the configured file)
    prompts/eval.jsonl          held-out prompts with references
    scoring/generate/           sampled responses, one Parquet shard per `shard_size` prompts
    scoring/reward/             selection-reward scores, sharded the same way
    scoring/measured.parquet    PVar, its interval and the reward baselines per prompt
    theory/                     gradient norm vs PVar at initialisation (theory.json/jsonl/png)
    ref_cache/                  reference log-probs, computed once per pair for all arms
    base/eval/                  the base policy's eval answers (the baseline of every arm), judged
    arms/NAME/                  selected.parquet, pairs.jsonl, model/ (LoRA adapter + train_log.jsonl),
                                eval/ (eval.json, judgements.jsonl, outputs_*.jsonl)
    report/                     report.md, report.html (self-contained), report.json, figures/

Resuming: a step is skipped when the ledger has it done under the same key; generate and reward
also resume shard by shard inside the step; an arm killed mid-training is retrained from its
start (arms are minutes each), and its eval reuses cached generations when they exist.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvar import reporting
from pvar.backends.noise import VERSION as NOISE  # fresh samples: other noise, other pairs
from pvar.errors import ConfigError, resolved
from pvar.experiment.config import ArmConfig, RunConfig
from pvar.experiment.state import Ledger
from pvar.fingerprint import digest
from pvar.io.paths import file_lock, refuse_foreign, remove_stale_temps
from pvar.io.writers import atomic_write_text

CONFIG_FILE = "config.yaml"
BASE_EVAL = Path("base") / "eval"
AA_EVAL = Path("base") / "eval-aa"
HELDOUT_PAIRS = Path("heldout") / "pairs.jsonl"
UNTRAINED = "untrained.json"  # marks an arm with no pairs: its policy is the base policy
_TIED = 1e-12  # PVar of a prompt whose rewards all tie is exactly 0; anything above yields a pair


@dataclass(frozen=True)
class RunPaths:
    """Where each step of a run folder writes."""

    root: Path

    @property
    def pool(self) -> Path:
        return self.root / "prompts" / "pool.jsonl"

    @property
    def eval_prompts(self) -> Path:
        return self.root / "prompts" / "eval.jsonl"

    @property
    def generated(self) -> Path:
        return self.root / "scoring" / "generate"

    @property
    def rewarded(self) -> Path:
        return self.root / "scoring" / "reward"

    @property
    def measured(self) -> Path:
        return self.root / "scoring" / "measured.parquet"

    @property
    def potential(self) -> Path:
        return self.root / "scoring" / "potential.parquet"

    def arm(self, name: str) -> Path:
        return self.root / "arms" / name


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dumps."""
    keys = sorted(set(old) | set(new))
    out: list[str] = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


class Experiment:
    """One run folder and its config; ``run()`` executes (or resumes) every step in order."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, *, force: bool = False,
                 log: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.paths = RunPaths(Path(run_dir))
        self.force = force
        self.log = log or reporting.log
        self.ledger: Ledger | None = None
        self.keys: dict[str, str] = {}

    # -- bookkeeping ------------------------------------------------------------------------------

    def _claim_folder(self) -> None:
        """Write config.yaml, or check that the folder's config is this one (``--force`` overrides)."""
        import yaml

        root = self.paths.root
        root.mkdir(parents=True, exist_ok=True)
        path = root / CONFIG_FILE
        dump = self.cfg.model_dump(mode="json")
        if path.is_file() and not self.force:
            try:
                old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError:
                old = {}
            changed = config_diff(old, dump)
            if changed:
                raise ConfigError(
                    f"{root}: holds a run with a different config (differs in {', '.join(changed[:6])}"
                    f"{' ...' if len(changed) > 6 else ''}); use another -o folder, or --force to continue it "
                    "under the new config (steps whose settings changed are recomputed)")
        atomic_write_text(path, yaml.safe_dump(dump, sort_keys=False, allow_unicode=True))

    def _step(self, name: str, key: str, outputs: list[Path], fn: Callable[[], dict[str, Any] | None]) -> bool:
        """Run ``fn`` unless done under ``key``; record it. Returns whether it ran."""
        assert self.ledger is not None
        self.keys[name] = key
        if self.ledger.done(name, key, *outputs):
            self.log(f"[dim]- {name}: done earlier, reused[/dim]")
            return False
        self.ledger.forget(name)
        self.log(f"[bold]> {name}[/bold]")
        t0 = time.perf_counter()
        info = fn() or {}
        seconds = time.perf_counter() - t0
        self.ledger.record(name, key, seconds, **info)
        self.log(f"[green]  {name} finished in {seconds:,.1f} s[/green]")
        return True

    def check_inputs(self) -> None:
        """Everything the run will read or load, checked before its folder or any output exists.

        Prompt files are read in full, reward and judge specs parsed and their models located,
        user reward modules imported, arm score columns and TRL argument names resolved: a typo
        fails in seconds, not after the pool has been scored.
        """
        from pvar.backends.assets import check_model_ref, check_policy_ref
        from pvar.backends.callable_reward import CallableReward, ColumnReward
        from pvar.backends.hf_reward import HFReward
        from pvar.backends.spec import is_exact, parse_reward_spec
        from pvar.io.readers import read_column_names
        from pvar.io.rows import read_rows
        from pvar.pipeline.measure import COLUMNS as MEASURE_COLUMNS
        from pvar.pipeline.pairs import pairs_columns
        from pvar.pipeline.potential import COLUMNS as POTENTIAL_COLUMNS

        c = self.cfg
        columns = set(MEASURE_COLUMNS) | set(POTENTIAL_COLUMNS)
        needs_ref = {what: getattr(parse_reward_spec(spec), "needs_reference", False)
                     for what, spec in (("reward", c.scoring.reward), ("judge", c.eval.judge))}
        pool_needs = ("prompt", "reference") if c.scoring.generate and needs_ref["reward"] else ("prompt",)
        if not c.scoring.generate:
            pool_needs = ("prompt", "responses", "rewards")
        for key, required in (("source", pool_needs),
                              ("eval_source", ("prompt", "reference") if needs_ref["judge"] else ("prompt",))):
            src = getattr(c.prompts, key)
            if key == "eval_source" and c.until != "eval":
                continue
            spec = c.scoring.reward if key == "source" and c.scoring.generate else c.eval.judge
            check = getattr(parse_reward_spec(spec), "check_reference", None) if "reference" in required else None
            if src == "sharegpt":
                if is_exact(spec) and c.prompts.task is None:  # ShareGPT's references are answers, not specs
                    what = "scoring.reward" if key == "source" else "eval.judge"
                    raise ConfigError(f"{what}: {spec!r} scores against each prompt's task spec, and ShareGPT "
                                      "prompts carry none unless prompts.task names a family (format, ifeval, "
                                      "phrase)")
                continue
            for batch in read_rows(src, require=required, unique_ids=True):
                refs = batch.data.column("reference").to_pylist() if check is not None else []
                for i, ref in enumerate(refs):  # a gold reward's task specs, named in the user's file
                    problem = check(ref)
                    if problem:
                        raise batch.error(i, "reference", problem)
            if key == "source":
                columns |= set(read_column_names(src))
        check_policy_ref(c.policy, "policy")
        specs = [("scoring.reward", c.scoring.reward)] if c.scoring.generate else []
        if c.until == "eval":
            specs.append(("eval.judge", c.eval.judge))
            from pvar.pipeline.evaluate import _check_judge

            _check_judge(self._eval_config(c.policy))
        for what, spec in specs:
            scorer = parse_reward_spec(spec)
            if isinstance(scorer, ColumnReward) and what == "eval.judge":
                raise ConfigError(f"eval.judge: {spec!r} reads stored rewards; a judge must score the answers")
            if isinstance(scorer, CallableReward):
                scorer.setup()  # imports the user's module: a missing or broken one fails now
            elif isinstance(scorer, HFReward):
                check_model_ref(scorer.model_name, what)
        for arm in c.arms:
            if arm.select in ("top", "bottom", "threshold") and arm.by not in columns:
                raise ConfigError(f"arms.{arm.name}.by: no score column {arm.by!r} in the measured pool "
                                  f"(known: {', '.join(sorted(columns))})")
            if arm.weight_by is not None and arm.weight_by not in pairs_columns():
                raise ConfigError(f"arms.{arm.name}.weight_by: pairs have no column {arm.weight_by!r} "
                                  f"(known: {', '.join(pairs_columns())})")
        if c.until in ("train", "eval"):
            from pvar.training.trainers import trl_config

            for name, arm, _ in c.arm_runs():
                trl_config(self._train_config(name, arm), self.paths.arm(name) / "model", cuda=False,
                           ref_cache=True)

    # -- steps ------------------------------------------------------------------------------------

    def run(self) -> Path:
        """Every step up to ``cfg.until``, then the report. Returns the report folder."""
        preflight(self.cfg)
        self.check_inputs()
        root = self.paths.root
        resolved(root)  # a symlink loop is a one-line error before any folder is made
        with file_lock(root.parent / f".{root.name}.lock", str(root)):  # a second `pvar run` waits, then resumes
            refuse_foreign(root, CONFIG_FILE, "a pvar run")  # under the lock: a concurrent start is not foreign
            remove_stale_temps(root, recursive=True)  # left by a killed run: we hold the lock
            return self._run()

    def _run(self) -> Path:
        from pvar.pipeline.train import peak_rss_mb

        self._claim_folder()
        self.ledger = Ledger(self.paths.root)
        self.ledger.start_run({"versions": versions(), "force": self.force})
        t0 = time.perf_counter()
        self.prompts()
        self.scoring()
        self.theory()
        self.signal()
        if self.cfg.until != "measure":
            self.potential()
            self.arms_pairs()
        if self.cfg.until in ("train", "eval"):
            if self.cfg.until == "eval":
                self.base_eval()
                self.aa_eval()
                self.heldout_pairs()
            for name, arm, seed in self.cfg.arm_runs():
                self.train_arm(name, arm)
                for r in range(2, self.cfg.rounds + 1):
                    self.round(name, arm, seed, r)
                if self.cfg.until == "eval":
                    self.eval_arm(name)
                    self.heldout_arm(name)
        self.ledger.finish_run(time.perf_counter() - t0, peak_rss_mb())
        from pvar.experiment.report import write_report

        return write_report(self.paths.root, log=self.log)

    def prompts(self) -> None:
        from pvar.fingerprint import model_record  # name, or path + size + mtime of a file / folder's files

        c, p = self.cfg, self.paths
        src = c.prompts

        def pool() -> dict[str, Any]:
            from pvar.pipeline.prompts import write_prompts

            return {"prompts": write_prompts("sharegpt", p.pool, count=src.pool, split="pool", seed=c.seed,
                                             task=src.task)}

        def held_out() -> dict[str, Any]:
            from pvar.pipeline.prompts import write_prompts

            return {"prompts": write_prompts("sharegpt", p.eval_prompts, count=src.eval, split="eval", seed=c.seed,
                                             task=src.task)}

        if src.source == "sharegpt":
            self._step("prompts", digest("sharegpt", src.pool, c.seed, *_task_key(src.task)), [p.pool], pool)
        else:
            self.keys["prompts"] = digest(model_record(src.source))
        if c.until == "eval":
            if src.eval_source == "sharegpt":
                self._step("eval-prompts", digest("sharegpt-eval", src.eval, c.seed, *_task_key(src.task)),
                           [p.eval_prompts], held_out)
            else:
                self.keys["eval-prompts"] = digest(model_record(src.eval_source))

    def pool_source(self) -> str:
        return str(self.paths.pool) if self.cfg.prompts.source == "sharegpt" else self.cfg.prompts.source

    def eval_source(self) -> str:
        src = self.cfg.prompts.eval_source
        return str(self.paths.eval_prompts) if src == "sharegpt" else src

    def scoring(self) -> None:
        from pvar.pipeline import stages

        c, p, s = self.cfg, self.paths, self.cfg.scoring
        scored = self.pool_source()
        upstream = self.keys["prompts"]
        if s.generate:
            gen, rew = self._sampling(c.policy, c.seed)

            def sharded(name: str, cfg: Any, source: str | Path, out: Path) -> Callable[[], dict[str, Any]]:
                def go() -> dict[str, Any]:
                    rep = stages.run(name, cfg, source, out, force=self.force, **self.engine_opts())
                    return {"shards": rep.shards, "shards_run": rep.shards_run, "rows": rep.rows, **rep.counters}
                return go

            if s.adaptive is not None:
                self._adaptive(scored, gen, rew, upstream)
                scored, upstream = str(p.root / "scoring" / "adaptive" / "measured.parquet"), self.keys["adaptive"]
                self._measure(scored, upstream)
                return
            gen_key = digest(upstream, gen.fingerprint(), s.shard_size)
            self._step("generate", gen_key, [p.generated], sharded("generate", gen, scored, p.generated))
            rew_key = digest(gen_key, rew.fingerprint(), s.shard_size)
            self._step("reward", rew_key, [p.rewarded], sharded("reward", rew, p.generated, p.rewarded))
            scored, upstream = str(p.rewarded), rew_key
        self._measure(scored, upstream)

    def engine_opts(self) -> dict[str, Any]:
        """Where the sharded stages run: the engine, its shard size and, for Ray, the address and resources."""
        from pvar.pipeline.stages import EngineConfig

        return self.cfg.stage(EngineConfig, self.cfg, shard_size=self.cfg.scoring.shard_size).options()

    def _sampling(self, policy: str, seed: int) -> tuple[Any, Any]:
        """The generate and reward settings of the pool's scoring, for ``policy`` at ``seed``."""
        from pvar.pipeline import stages

        c, s = self.cfg, self.cfg.scoring
        return (c.stage(stages.GenerateConfig, s, model=policy, seed=seed), c.stage(stages.RewardConfig, s))

    def _adaptive(self, source: str, gen: Any, rew: Any, upstream: str) -> None:
        from pvar.pipeline import adaptive

        c, a = self.cfg, self.cfg.scoring.adaptive
        assert a is not None
        fraction = (min(1.0, c.budget / max(1, _count_rows(source))) if isinstance(c.budget, int)
                    else float(c.budget))
        acfg = c.stage(adaptive.AdaptiveConfig, c.scoring, a, fraction=fraction)
        out = self.paths.root / "scoring" / "adaptive"

        def go() -> dict[str, Any]:
            res = adaptive.run(source, out, gen, rew, acfg, log=self.log, **self.engine_opts())
            return {"samples": res.samples, "prompts": res.prompts, "rounds": len(res.rounds)}

        key = digest(upstream, gen.fingerprint(), rew.fingerprint(), acfg.fingerprint(), c.scoring.shard_size)
        self._step("adaptive", key, [out / "measured.parquet"], go)

    def _measure(self, scored: str, upstream: str) -> None:
        from pvar.pipeline import measure

        c, p, s = self.cfg, self.paths, self.cfg.scoring
        mcfg = c.stage(measure.MeasureConfig, s)

        def measure_pool() -> dict[str, Any]:
            with reporting.progress("measure", scored) as tick:
                pool = measure.run(scored, p.measured, mcfg, tick)
            return {"prompts": pool.n_prompts}

        self._step("measure", digest(upstream, mcfg.fingerprint()), [p.measured], measure_pool)

    def theory(self) -> None:
        t = self.cfg.theory
        if t.prompts == 0 or not self.cfg.scoring.generate:
            return
        from pvar.pipeline.theory import TheoryConfig, run_theory

        c = self.cfg
        tcfg = c.stage(TheoryConfig, c.scoring, c.train, t, device="auto" if c.device == "cpu" else c.device)
        out = self.paths.root / "theory"

        def go() -> dict[str, Any]:
            with reporting.progress("theory", total=tcfg.prompts) as tick:
                res = run_theory(self.paths.measured, out, tcfg, tick)
            return {"spearman_pvar": res.spearman_pvar, "violations": res.violations_exact}

        self._step("theory", digest(self.keys["measure"], tcfg.fingerprint()), [out / "theory.json"], go)

    def signal(self) -> None:
        """Gradient signal vs PVar on fresh sample sets (see pvar.pipeline.diagnostics)."""
        t, c = self.cfg.theory, self.cfg
        if t.signal_prompts == 0 or not c.scoring.generate:
            return
        from pvar.pipeline.diagnostics import SignalConfig, gradient_signal

        settings = c.stage(SignalConfig, c.scoring, c.train, t, policy=c.policy).model_dump()
        out = self.paths.root / "signal"

        def go() -> dict[str, Any]:
            res = gradient_signal(self.paths.measured, out, **settings)
            return {"r2_pvar": res["fit_pvar"]["r2"], "r2_reward_std": res["fit_reward_std"]["r2"]}

        self._step("signal", digest(self.keys["measure"], settings, NOISE), [out / "signal.json"], go)

    def heldout_pairs(self) -> None:
        """Gold-labelled pairs on held-out prompts, shared by every arm's preference check."""
        t, c = self.cfg.theory, self.cfg
        if t.heldout_pairs == 0:
            return
        from pvar.backends.gold_reward import rules_version
        from pvar.pipeline.diagnostics import GoldPairsConfig, gold_pairs

        settings = c.stage(GoldPairsConfig, c.scoring, t, policy=c.policy).model_dump()
        out = self.paths.root / HELDOUT_PAIRS
        rules = rules_version(settings["reward"])  # gold labels under other task rules are other pairs

        def go() -> dict[str, Any]:
            return {"pairs": gold_pairs(self.eval_source(), out, **settings)}

        self._step("heldout-pairs", digest(self.keys["eval-prompts"], settings, NOISE, *([rules] if rules else [])),
                   [out], go)

    def heldout_arm(self, name: str) -> None:
        if self.cfg.theory.heldout_pairs == 0 or not self.cfg.train.lora:
            return
        from pvar.pipeline.diagnostics import pair_preferences

        model = self.final_model(name)
        out = self.paths.arm(name) / "heldout.json"

        def go() -> dict[str, Any]:
            pairs = self.paths.root / HELDOUT_PAIRS
            if (model / UNTRAINED).is_file():  # the policy is its own reference: every margin is exactly 0
                res = {"n_pairs": _count_lines(pairs), "loss": math.log(2.0), "accuracy": 0.0, "mean_margin": 0.0}
            else:
                res = pair_preferences(model, pairs, beta=self.cfg.train.beta, max_length=self.cfg.train.max_length,
                                       device=self.cfg.device)
            atomic_write_text(out, json.dumps(res, indent=2) + "\n")
            return res

        self._step(f"heldout:{name}", digest(self._train_key(name), self.keys["heldout-pairs"]), [out], go)

    def arms_pairs(self) -> None:
        from pvar.pipeline import pairs, select

        c = self.cfg
        for name, arm, seed in c.arm_runs():
            folder = self.paths.arm(name)
            selected, pair_file = folder / "selected.parquet", folder / "pairs.jsonl"
            scfg = None if arm.select == "full" else select.SelectConfig.make(
                **_select_args(c, arm, seed, self._pool_size() if arm.usable else None))
            pcfg = c.stage(pairs.PairsConfig, c.scoring, rule=arm.rule or c.train.pair_rule)

            def go(scfg: Any = scfg, pcfg: Any = pcfg, selected: Path = selected, pair_file: Path = pair_file,
                   folder: Path = folder, arm: ArmConfig = arm) -> dict[str, Any]:
                folder.mkdir(parents=True, exist_ok=True)
                pool = self.paths.potential if _needs_potential(arm) else self.paths.measured
                source: Path = pool
                info: dict[str, Any] = {}
                if scfg is not None:
                    if arm.usable:  # random among prompts that yield a pair: PVar > 0 first, then the draw
                        usable = folder / "usable.parquet"
                        got = select.run(pool, usable,
                                         select.SelectConfig.make(by="pvar", mode="threshold", minimum=_TIED))
                        info["usable"] = got.n_kept
                        got = select.run(usable, selected, scfg)
                    else:
                        got = select.run(pool, selected, scfg)
                    source = selected
                    info.update(kept=got.n_kept, eligible=got.n_eligible)
                    if got.n_kept == 0:  # nothing eligible (e.g. every AP undefined): an arm with no pairs
                        atomic_write_text(pair_file, "")
                        return {**info, "pairs": 0}
                pr = pairs.run(source, pair_file, pcfg)
                return {**info, "pairs": pr.n_pairs}

            upstream = self.keys["potential"] if _needs_potential(arm) else self.keys["measure"]
            key = digest(upstream, scfg.fingerprint() if scfg else "full", pcfg.fingerprint(),
                         *(["usable", _TIED] if arm.usable else []))
            self._step(f"pairs:{name}", key, [pair_file], go)

    def potential(self) -> None:
        """Alignment Potential of every measured prompt, when an arm selects by it (one policy pass)."""
        if not any(_needs_potential(arm) for arm in self.cfg.arms):
            return
        from pvar.pipeline import potential

        pcfg = self.cfg.stage(potential.PotentialConfig, self.cfg.train)

        def go() -> dict[str, Any]:
            with reporting.progress("potential", self.paths.measured) as tick:
                return {"pairs": potential.run(self.paths.measured, self.paths.potential, pcfg, tick)}

        self._step("potential", digest(self.keys["measure"], pcfg.fingerprint()), [self.paths.potential], go)

    def _pool_size(self) -> int:
        """Prompts in the measured pool (the base of fractional budgets)."""
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.paths.measured).metadata.num_rows

    def _train_config(self, name: str, arm: ArmConfig) -> Any:
        from pvar.pipeline.train import TrainConfig

        return self.cfg.stage(TrainConfig, self.cfg.train, seed=self.cfg.train_seed(name), weight_by=arm.weight_by)

    def train_arm(self, name: str, arm: ArmConfig) -> None:
        tcfg = self._train_config(name, arm)
        self._train(f"train:{name}", self.paths.arm(name), tcfg, digest(self.keys[f"pairs:{name}"], tcfg.fingerprint()))

    def _train(self, step: str, folder: Path, tcfg: Any, key: str) -> None:
        """Train ``folder/pairs.jsonl`` into ``folder/model`` (an arm without pairs is marked untrained)."""
        from pvar.pipeline.train import train

        name = step.split(":", 1)[1]
        model = folder / "model"

        def go() -> dict[str, Any]:
            shutil.rmtree(model, ignore_errors=True)  # a run killed mid-training restarts this arm cleanly
            if not _count_lines(folder / "pairs.jsonl"):
                # Every selected prompt tied (PVar 0): there is nothing to learn from, so the arm *is* the base
                # policy. Recorded as such rather than failing the run: it is a result about the selection.
                model.mkdir(parents=True)
                atomic_write_text(model / UNTRAINED, json.dumps({"reason": "no pairs", "policy": self.cfg.policy}))
                atomic_write_text(model / "train_log.jsonl", "")
                self.log(f"[yellow]  {name}: no pairs (every selected prompt tied); not trained[/yellow]")
                return {"steps": 0, "n_pairs": 0, "untrained": True}
            if self.cfg.train.launcher == "accelerate":
                res = self._launch_training(folder, model, tcfg)
                info = {k: v for k, v in res.items() if k not in ("out_dir", "seconds")}
                return {**info, "total_seconds": res["seconds"]}
            total = tcfg.max_steps if tcfg.max_steps > 0 else None
            with reporting.progress(f"train {name}", total=total, unit="steps") as tick:
                done = [0]

                def advance(step: int, _total: int, logs: dict[str, Any]) -> None:
                    tick(step - done[0])
                    done[0] = step

                res = train(folder / "pairs.jsonl", model, tcfg, ref_cache=self.paths.root / "ref_cache",
                            progress=advance)
            info = {k: v for k, v in res.to_dict().items() if k not in ("out_dir", "seconds")}
            return {**info, "total_seconds": res.seconds}

        self._step(step, key, [model / "train_log.jsonl"], go)

    def _launch_training(self, folder: Path, model: Path, tcfg: Any) -> dict[str, Any]:
        """One arm's training under ``accelerate launch`` (training/launch.py); returns its TrainResult dict."""
        import subprocess

        from pvar.errors import PvarError
        from pvar.training import launch

        t = self.cfg.train
        job = folder / "train_job.json"
        launch.write_job(job, folder / "pairs.jsonl", model, tcfg, self.paths.root / "ref_cache")
        result = launch.result_path(job)
        result.unlink(missing_ok=True)
        cmd = launch.launch_command(job, config=t.accelerate_config, num_processes=t.num_processes,
                                    extra=tuple(t.accelerate_args))
        self.log(f"  accelerate launch: {' '.join(cmd[3:])}")
        done = subprocess.run(cmd, check=False)
        if done.returncode != 0 or not result.is_file():
            raise PvarError(f"train: accelerate launch exited with {done.returncode} ({job}); its output is above")
        return json.loads(result.read_text(encoding="utf-8"))

    # -- iterative rounds ---------------------------------------------------------------------------

    def _round_dir(self, name: str, r: int) -> Path:
        return self.paths.arm(name) if r == 1 else self.paths.arm(name) / f"round-{r}"

    def final_model(self, name: str) -> Path:
        """The arm's model: its last round's checkpoint, or an earlier one where a round had no pairs."""
        for r in range(self.cfg.rounds, 0, -1):
            model = self._round_dir(name, r) / "model"
            if (model / "train_log.jsonl").is_file() and not (model / UNTRAINED).is_file():
                return model
        return self.paths.arm(name) / "model"

    def _train_key(self, name: str) -> str:
        return self.keys[f"train:{name}" if self.cfg.rounds == 1 else f"round{self.cfg.rounds}-train:{name}"]

    def _policy_after(self, name: str, r: int) -> str:
        """What round ``r + 1`` samples from: round r's model merged (LoRA), or the base if none trained."""
        for k in range(r, 0, -1):
            model = self._round_dir(name, k) / "model"
            if not (model / UNTRAINED).is_file():
                from pvar.pipeline.evaluate import merged_model

                return merged_model(str(model), self._round_dir(name, k + 1) / "policy")
        return self.cfg.policy

    def round(self, name: str, arm: ArmConfig, seed: int, r: int) -> None:
        """Round ``r`` (>= 2) of an arm: fresh samples of the unselected prompts from the trained policy,
        PVar measured again (reward and policy form), the next slice selected, trained on from that policy."""
        from pvar.pipeline import measure, pairs, select

        c, s = self.cfg, self.cfg.scoring
        rdir = self._round_dir(name, r)
        prev_key = self.keys[f"train:{name}" if r == 2 else f"round{r - 1}-train:{name}"]
        measured = rdir / "measured.parquet"

        def score() -> dict[str, Any]:
            import pyarrow.parquet as pq

            from pvar.pipeline.rescore import rescore

            taken: set[str] = set()
            for k in range(1, r):
                sel = self._round_dir(name, k) / "selected.parquet"
                if sel.is_file():
                    taken |= set(pq.read_table(sel, columns=["prompt_id"]).column("prompt_id").to_pylist())
                elif arm.select == "full":
                    taken |= set(pq.read_table(self.paths.measured, columns=["prompt_id"]).column(0).to_pylist())
            gen, rew = self._sampling(self._policy_after(name, r - 1), c.seed + r)
            return rescore(self.paths.measured, taken, rdir, gen, rew, c.stage(measure.MeasureConfig, s),
                           base_policy=c.policy, beta=c.train.beta, max_length=c.train.max_length,
                           device=c.device, label=f"arm {name} in round {r}", engine=self.engine_opts())

        score_key = digest(prev_key, "round", r, self.keys["measure"])
        self._step(f"round{r}-score:{name}", score_key, [measured], score)

        by = "pvar_policy" if (c.rounds_by == "pvar_policy" and arm.by == "pvar") else arm.by
        scfg = None if arm.select == "full" else select.SelectConfig.make(
            **{**_select_args(c, arm, seed, self._pool_size()), "by": by})
        pcfg = c.stage(pairs.PairsConfig, s, rule=arm.rule or c.train.pair_rule, seed=c.seed + r)

        def pick() -> dict[str, Any]:
            source = measured
            info: dict[str, Any] = {}
            if scfg is not None:
                got = select.run(measured, rdir / "selected.parquet", scfg)
                info.update(kept=got.n_kept, eligible=got.n_eligible)
                source = rdir / "selected.parquet"
                if got.n_kept == 0:
                    atomic_write_text(rdir / "pairs.jsonl", "")
                    return {**info, "pairs": 0}
            return {**info, "pairs": pairs.run(source, rdir / "pairs.jsonl", pcfg).n_pairs}

        pairs_key = digest(score_key, scfg.fingerprint() if scfg else "full", pcfg.fingerprint())
        self._step(f"round{r}-pairs:{name}", pairs_key, [rdir / "pairs.jsonl"], pick)
        tcfg = self._train_config(name, arm).model_copy(update={"model": self._policy_after(name, r - 1)})
        self._train(f"round{r}-train:{name}", rdir, tcfg, digest(pairs_key, tcfg.fingerprint()))

    def _eval_config(self, policy: str) -> Any:
        from pvar.pipeline.evaluate import EvalConfig

        return self.cfg.stage(EvalConfig, self.cfg.eval, policy=policy, prompts=self.eval_source(),
                              selection_reward=self.cfg.scoring.reward, backend=self.eval_backend())

    def eval_backend(self) -> str:
        """The eval section's backend; 'run' = vllm when the run samples with vLLM, else hf."""
        e = self.cfg.eval.backend
        return e if e != "run" else ("vllm" if self.cfg.backend == "vllm" else "hf")

    def base_eval(self) -> None:
        """The base policy against itself: generates the shared baseline answers once (and checks 50%)."""
        from pvar.pipeline.evaluate import evaluate

        ecfg = self._eval_config(self.cfg.policy)
        out = self.paths.root / BASE_EVAL

        def go() -> dict[str, Any]:
            res = evaluate(ecfg, out)
            return {"win_rate": res.hard.estimate, "n_prompts": res.n_prompts}

        self._step("eval:base", digest(self.keys["eval-prompts"], ecfg.fingerprint()), [out / "eval.json"], go)

    def aa_eval(self) -> None:
        """A/A noise floor: the base policy's answers again, in batches of another size (another arrangement
        of prompts per batch). Any difference from ``base/eval`` is decoding noise, not training."""
        size = self.cfg.eval.aa_batch_size
        if size == 0:
            return
        from pvar.pipeline.evaluate import evaluate

        ecfg = self._eval_config(self.cfg.policy).model_copy(update={"batch_size": size})
        out = self.paths.root / AA_EVAL

        def go() -> dict[str, Any]:
            res = evaluate(ecfg, out)
            return {"n_prompts": res.n_prompts, "batch_size": size}

        self._step("eval:base-aa", digest(self.keys["eval-prompts"], ecfg.fingerprint(), size), [out / "eval.json"],
                   go)

    def eval_arm(self, name: str) -> None:
        from pvar.pipeline.evaluate import evaluate

        folder = self.paths.arm(name)
        model = self.final_model(name)
        untrained = (model / UNTRAINED).is_file()
        ecfg = self._eval_config(self.cfg.policy if untrained else str(model))
        out = folder / "eval"

        def go() -> dict[str, Any]:
            out.mkdir(parents=True, exist_ok=True)
            base = self.paths.root / BASE_EVAL
            shared = ["outputs_baseline.jsonl", "outputs_baseline.key.json"]
            if untrained:  # the base policy's own answers, under the same cache key
                shared += ["outputs_policy.jsonl", "outputs_policy.key.json"]
            for f in shared:  # shared: generated once
                if (base / f).is_file() and not (out / f).is_file():
                    shutil.copyfile(base / f, out / f)
            res = evaluate(ecfg, out)
            shutil.rmtree(out / "merged-policy", ignore_errors=True)  # 0.5 GB per arm; outputs are cached
            return {"win_rate": res.hard.estimate, "lc_win_rate": res.length_controlled.estimate,
                    "n_prompts": res.n_prompts, "baseline_cached": res.baseline.cached}

        key = digest(self._train_key(name), self.keys["eval-prompts"], ecfg.model_copy(update={"policy": name})
                     .fingerprint(), *(["untrained"] if untrained else []))
        self._step(f"eval:{name}", key, [out / "eval.json", out / "judgements.jsonl"], go)


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) if path.is_file() else 0


def _count_rows(source: str) -> int:
    from pvar.io.readers import count_rows

    return count_rows(source) or 0


def _needs_potential(arm: ArmConfig) -> bool:
    from pvar.pipeline.potential import COLUMNS

    return arm.select in ("top", "bottom", "threshold") and arm.by in COLUMNS


def _select_args(cfg: RunConfig, arm: ArmConfig, seed: int, pool_size: int | None = None) -> dict[str, Any]:
    """Selection settings of one arm. ``pool_size`` turns a fractional budget into a count of the whole
    pool, for arms that draw from a subset of it (usable prompts) at the same budget as the others."""
    from pvar.core.select import budget as budget_of

    args: dict[str, Any] = {"by": arm.by, "mode": arm.select, "seed": seed}
    if arm.select == "threshold":
        return {**args, "minimum": arm.minimum}
    if arm.fraction is not None or arm.count is not None:
        size = {"fraction": arm.fraction, "count": arm.count}
    else:
        size = {"count": int(cfg.budget)} if isinstance(cfg.budget, int) else {"fraction": float(cfg.budget)}
    if pool_size is not None and size.get("fraction") is not None:
        size = {"count": budget_of(pool_size, fraction=size["fraction"], count=size.get("count"))}
    return {**args, **size}


def _task_key(task: str | None) -> list[str]:
    """Ledger key part of a task family (none for plain prompts, so older run folders keep their keys)."""
    return [] if task is None else ["task", task]


def versions() -> dict[str, str]:
    """Versions of the libraries a result depends on (those installed)."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("pvar", "numpy", "pyarrow", "torch", "transformers", "trl", "peft", "sentence-transformers",
                "ray", "vllm", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def preflight(cfg: RunConfig) -> None:
    """Fail in seconds, before any work, when the config needs what this machine lacks."""
    if (cfg.device.startswith("cuda") or cfg.backend == "vllm") and not _has_gpu():
        what = "backend 'vllm'" if cfg.backend == "vllm" else f"device {cfg.device!r}"
        raise ConfigError(f"{what} needs a CUDA GPU and none is visible here; use a CPU preset "
                          "(quick, cpu-full, sharegpt-proxy)")
    if cfg.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError("backend 'vllm' needs vLLM: pip install 'pvar[gpu]'")
    if cfg.engine == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("engine 'ray' needs Ray: pip install 'pvar[ray]'")
    for what, spec in (("policy", cfg.policy), ("scoring.reward", cfg.scoring.reward), ("eval.judge", cfg.eval.judge)):
        name = spec[3:] if spec.startswith("hf:") else spec if what == "policy" else None
        if name and _is_hub_name(name):
            _check_hub(what, name)


def _is_hub_name(name: str) -> bool:
    return "/" in name and not Path(name).exists() and not name.startswith((".", "/", "~"))


def _check_hub(what: str, name: str) -> None:
    """A hub model must be in the local cache or the hub reachable (checked with a short timeout)."""
    import os

    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        raise ConfigError(f"{what}: {name!r} is a hub model and huggingface_hub is not installed") from None
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ConfigError(f"{what}: {name!r} is not in the local hub cache and HF_HUB_OFFLINE is set")
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(f"{endpoint}/api/models/{name}", timeout=10).close()
    except Exception as exc:  # DNS, refused, timeout, 401/404: all mean "cannot download it"
        raise ConfigError(f"{what}: {name!r} is not cached and the hub ({endpoint}) cannot be reached "
                          f"({type(exc).__name__}); download it first or point to a local folder") from None


