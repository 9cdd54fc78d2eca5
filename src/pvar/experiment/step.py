"""A run step, declared once, and the one place that resumes, skips and records steps.

A step names the ledger entries it reads (``inputs``) and the settings that shape its output; its
ledger key is the hash of both, so a changed setting anywhere upstream recomputes everything
downstream of it and nothing else. ``walk`` runs a table of steps in order: a step is skipped when
the ledger has it done under the same key and its outputs still exist.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pvar.experiment.config import ArmConfig
from pvar.experiment.context import RunContext
from pvar.fingerprint import digest

UNTIL = ("measure", "pairs", "train", "eval")  # a run's `until`, in order: each includes the ones before


@dataclass(frozen=True)
class Target:
    """What one instance of a step is about: the whole run, one arm's run, or a later round of it."""

    name: str = ""  # the arm run's folder name ("" for run-wide steps)
    arm: ArmConfig | None = None
    seed: int = 0  # the arm run's selection seed
    round: int = 1


def _none(ctx: RunContext, t: Target) -> tuple[()]:
    return ()


def _always(ctx: RunContext, t: Target) -> bool:
    return True


Parts = Callable[[RunContext, Target], Sequence[Any]]


@dataclass(frozen=True)
class Step:
    """One step: its name, the run stage it belongs to, what it reads, its key, outputs and work.

    ``work`` returns the counters recorded in the ledger; a step without work is an input the user
    gave (a prompt file), whose key is its fingerprint.
    """

    name: str
    until: str  # the first `until` that includes this step
    work: Callable[[RunContext, Target], dict[str, Any] | None] | None
    settings: Parts = _none  # values hashed into the key after the inputs' keys
    inputs: Callable[[RunContext, Target], Sequence[str]] = _none  # ledger names of the steps it reads
    outputs: Callable[[RunContext, Target], Sequence[Path]] = _none
    when: Callable[[RunContext, Target], bool] = _always

    def ledger_name(self, t: Target) -> str:
        if not t.name:
            return self.name
        return f"{self.name}:{t.name}" if t.round == 1 else f"round{t.round}-{self.name}:{t.name}"


@dataclass(frozen=True)
class EachArm:
    """These steps, in order, for every arm run (random arms expanded per seed)."""

    steps: tuple[Step | EachRound, ...]


@dataclass(frozen=True)
class EachRound:
    """These steps, in order, for rounds 2..rounds of the arm run at hand."""

    steps: tuple[Step, ...]


Table = Sequence[Step | EachArm]


def walk(ctx: RunContext, table: Sequence[Step | EachArm | EachRound], t: Target = Target()) -> None:
    """Run (or resume) every step of ``table`` for ``t``, expanding arms and rounds."""
    for entry in table:
        if isinstance(entry, Step):
            execute(ctx, entry, t)
        elif isinstance(entry, EachArm):
            for name, arm, seed in ctx.cfg.arm_runs():
                walk(ctx, entry.steps, Target(name, arm, seed))
        else:
            for r in range(2, ctx.cfg.rounds + 1):
                walk(ctx, entry.steps, replace(t, round=r))


def key_of(ctx: RunContext, step: Step, t: Target) -> str:
    """The ledger key: the hash of the inputs' keys, then the step's settings."""
    missing = [name for name in step.inputs(ctx, t) if name not in ctx.keys]
    if missing:  # a table ordering bug, not a user error
        raise RuntimeError(f"step {step.ledger_name(t)} reads {', '.join(missing)}, which has not run before it")
    return digest(*(ctx.keys[name] for name in step.inputs(ctx, t)), *step.settings(ctx, t))


def execute(ctx: RunContext, step: Step, t: Target) -> bool:
    """Run ``step`` for ``t`` unless the run stops before it, it does not apply, or it is done under
    the same key with its outputs present. Returns whether it ran."""
    if UNTIL.index(ctx.cfg.until) < UNTIL.index(step.until) or not step.when(ctx, t):
        return False
    name = step.ledger_name(t)
    key = ctx.keys[name] = key_of(ctx, step, t)
    if step.work is None:
        return False
    assert ctx.ledger is not None
    if ctx.ledger.done(name, key, *step.outputs(ctx, t)):
        ctx.log(f"[dim]- {name}: done earlier, reused[/dim]")
        return False
    ctx.ledger.forget(name)
    ctx.log(f"[bold]> {name}[/bold]")
    t0 = time.perf_counter()
    info = step.work(ctx, t) or {}
    seconds = time.perf_counter() - t0
    ctx.ledger.record(name, key, seconds, **info)
    ctx.log(f"[green]  {name} finished in {seconds:,.1f} s[/green]")
    return True
