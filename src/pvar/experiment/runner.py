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

The run is the table below, in order. Each step (``pvar.experiment.step.Step``) declares its name,
the steps it reads, its settings and its outputs once; ``step.walk`` resumes, skips and records
every one the same way. A step is skipped when the ledger has it done under the same key; generate
and reward also resume shard by shard inside the step; an arm killed mid-training is retrained
from its start, and its eval reuses cached generations when they exist.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pvar import status
from pvar.errors import resolved
from pvar.experiment.config import RunConfig
from pvar.experiment.context import CONFIG_FILE, RunContext, RunPaths
from pvar.experiment.preflight import check_inputs, preflight, versions
from pvar.experiment.state import Ledger
from pvar.experiment.step import EachArm, EachRound, Step, walk
from pvar.experiment.steps import arms, diagnostics, evaluation, rounds, scoring
from pvar.io.paths import file_lock, refuse_foreign, remove_stale_temps

TABLE: tuple[Step | EachArm, ...] = (
    scoring.POOL, scoring.POOL_FILE, scoring.EVAL_PROMPTS, scoring.EVAL_FILE,
    scoring.GENERATE, scoring.REWARD, scoring.ADAPTIVE, scoring.MEASURE,
    diagnostics.THEORY, diagnostics.SIGNAL,
    scoring.POTENTIAL,
    EachArm((arms.PAIRS,)),
    evaluation.BASE, evaluation.AA, diagnostics.HELDOUT_PAIRS_STEP,
    EachArm((arms.TRAIN, EachRound((rounds.SCORE, rounds.PAIRS, rounds.TRAIN)), evaluation.ARM,
             diagnostics.HELDOUT_ARM)),
)


class Experiment:
    """One run folder and its config; ``run()`` executes (or resumes) every step of ``TABLE``."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, *, force: bool = False,
                 log: Callable[[str], None] | None = None) -> None:
        self.ctx = RunContext(cfg, RunPaths(Path(run_dir)), log or status.log, force)

    def run(self) -> Path:
        """Every step up to ``cfg.until``, then the report. Returns the report folder."""
        preflight(self.ctx.cfg)
        check_inputs(self.ctx)
        root = self.ctx.paths.root
        resolved(root)  # a symlink loop is a one-line error before any folder is made
        with file_lock(root.parent / f".{root.name}.lock", str(root)):  # a second `pvar run` waits, then resumes
            refuse_foreign(root, CONFIG_FILE, "a pvar run")  # under the lock: a concurrent start is not foreign
            remove_stale_temps(root, recursive=True)  # left by a killed run: we hold the lock
            return self._run()

    def _run(self) -> Path:
        from pvar.experiment.report import write_report
        from pvar.pipeline.train import peak_rss_mb

        ctx = self.ctx
        ctx.claim_folder()
        ctx.ledger = Ledger(ctx.paths.root)
        ctx.ledger.start_run({"versions": versions(), "force": ctx.force})
        t0 = time.perf_counter()
        walk(ctx, TABLE)
        ctx.ledger.finish_run(time.perf_counter() - t0, peak_rss_mb())
        return write_report(ctx.paths.root, log=ctx.log)
