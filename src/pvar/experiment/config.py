"""The experiment's one config: what to score, which arms to compare, how to train and judge them.

A run is fully described by a :class:`RunConfig` (YAML on disk, validated by pydantic: unknown keys
and bad values are one-line errors naming the key). Presets are plain dicts of overrides on the
defaults (:mod:`pvar.experiment.presets`), so ``pvar run my.yaml --preset cpu-full`` reads the
preset first and the file on top.
"""

from __future__ import annotations

from typing import Any, Literal, Self, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator

from pvar.config import Device, Dtype, Section, Seed, StageConfig, auto_dtype, section_of
from pvar.engines.config import EngineConfig
from pvar.errors import ConfigError, short_repr
from pvar.experiment.sections import (
    ArmConfig,
    EvalSection,
    PromptsConfig,
    ScoringConfig,
    TheorySection,
    TrainSection,
    default_arms,
)
from pvar.pipeline.diagnostics import GoldPairsConfig, SignalConfig
from pvar.pipeline.evaluate import EvalConfig
from pvar.pipeline.generate import GenerateConfig

S = TypeVar("S", bound=StageConfig)
# Stages whose dtype is the run's generation dtype (they sample or answer); others keep their own rule.
RUN_DTYPE_STAGES: tuple[type[StageConfig], ...] = (GenerateConfig, EvalConfig, SignalConfig, GoldPairsConfig)
__all__ = ["ArmConfig", "EvalSection", "PromptsConfig", "RunConfig", "ScoringConfig", "TheorySection", "TrainSection",
           "validate"]


class _RunHead(Section):
    name: str = Field("run", min_length=1, description="Label shown in the report.")
    seed: Seed = Field(0, description="Run seed: prompts order, sampling, pair draws, training, bootstrap.")
    policy: str = Field("smollm2", description="Policy sampled, trained and judged against: hub name, folder, "
                        "or 'smollm2' (offline built-in).")
    backend: Literal["hf", "vllm", "fake"] = Field("hf", description="Sampling backend.")


class RunConfig(section_of((EngineConfig, ("engine", "ray_address", "workers", "gpus_per_worker", "cpus_per_worker")),
                           (GenerateConfig, ("tensor_parallel_size", "gpu_memory_utilization")), base=_RunHead)):
    """The whole experiment. ``until`` stops early: 'measure' after the pool's PVar, 'pairs' needs no
    training stack."""

    device: Device = Field("cpu", description="torch device for sampling, reward, training and eval.")
    dtype: Dtype = Field(
        "auto", description="dtype of sampling and eval generation; auto = bfloat16 on GPUs and on CPUs with "
        "native bf16 dot products (avx512_bf16/AMX: ~2x faster), else float32. Training stays float32.")
    budget: float | int = Field(0.25, gt=0, description="Prompts per arm: a fraction (<= 1.0) of the scored pool, "
                                "or a count (an integer).")
    until: Literal["measure", "pairs", "train", "eval"] = Field("eval", description="Last stage to run: measure "
                                                                "(the pool's PVar), pairs, train or eval.")
    rounds: int = Field(1, ge=1, le=16, description="Iterative rounds per arm: after training, re-sample the prompts "
                        "not yet selected from the trained policy, measure PVar again, select the next slice at the "
                        "same budget and train on from the trained policy. The arm's model is its last round's.")
    rounds_by: Literal["pvar", "pvar_policy"] = Field("pvar", description="Score that PVar arms rank by in later "
                                                      "rounds: the reward's PVar, or the policy form (the DPO "
                                                      "implicit preference of the trained policy vs the base).")
    primary: list[str] | None = Field(None, min_length=2, max_length=2, description="The pre-registered primary "
                                      "comparison [focus arm, comparator arm], each arm's runs pooled; None = the "
                                      "first arm against the first random arm. The comparator must beat the base "
                                      "policy (the learning gate) for the comparison to count; all others are "
                                      "secondary, Holm-corrected.")
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    arms: list[ArmConfig] = Field(default_factory=default_arms, min_length=1)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    theory: TheorySection = Field(default_factory=TheorySection)

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: float | int) -> float | int:
        if isinstance(value, float) and value > 1:
            raise ValueError("a fraction must be <= 1; give a whole number for a count")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [n for arm in self.arms for n, _ in arm.expand()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"arms: duplicate arm name(s) {', '.join(dup)}")
        from pvar.backends.spec import is_exact

        if self.train.matching == "auto" and self.train.max_steps <= 0 and self.until in ("train", "eval") and any(
                a.select == "full" or a.fraction is not None or a.count is not None for a in self.arms):
            raise ValueError("train.max_steps -1 trains each arm one pass over its own pairs, so arms with different "
                             "budgets (a full-pool arm) get different numbers of steps; set train.max_steps for equal "
                             "compute, or train.matching: data to accept it")
        if self.until == "eval" and not is_exact(self.eval.judge) and \
                self.eval.judge.strip().lower() == self.scoring.reward.strip().lower():
            raise ValueError(f"eval.judge {self.eval.judge!r} is the selection reward; judge with a held-out "
                             "scorer (e.g. mpnet-ref when selecting with minilm-ref)")
        if self.eval.metric == "gold-guarded" and not is_exact(self.eval.judge):
            raise ValueError(f"eval.metric gold-guarded needs an exact gold judge (gold), not {self.eval.judge!r}")
        arms = {a.name for a in self.arms}
        for name in self.primary or []:
            if name not in arms:
                raise ValueError(f"primary: {name!r} is not an arm (arms: {', '.join(sorted(arms))})")
        if self.rounds > 1:
            self._check_rounds()
        ad = self.scoring.adaptive
        if ad is not None and ad.max_samples is not None and self.prompts.source == "sharegpt" \
                and ad.max_samples < ad.n0 * self.prompts.pool:
            raise ValueError(f"scoring.adaptive.max_samples: {ad.max_samples} is below n0 x pool = {ad.n0} x "
                             f"{self.prompts.pool} = {ad.n0 * self.prompts.pool}, which the first round draws alone; "
                             "raise it or lower n0")
        if self.primary and self.primary[0] == self.primary[1]:
            raise ValueError(f"primary: compares {self.primary[0]!r} with itself; name two different arms")
        return self

    def _check_rounds(self) -> None:
        """Later rounds select from the prompts not taken yet: refuse rounds the pool cannot feed."""
        pool = self.prompts.pool if self.prompts.source == "sharegpt" else None
        for arm in self.arms:
            if arm.select == "full":
                raise ValueError(f"rounds: arm {arm.name!r} takes the full pool, so round 2 would find no prompts "
                                 "left; use rounds: 1, or give the arm a budget")
            share = arm.count if arm.count is not None else arm.fraction if arm.fraction is not None else self.budget
            if isinstance(share, float) and self.rounds * share > 1:
                raise ValueError(f"rounds: {self.rounds} rounds of {share:g} of the pool (arm {arm.name!r}) take "
                                 f"{self.rounds * share:g} of it; at most {int(1 / share)} rounds fit")
            if isinstance(share, int) and pool is not None and self.rounds * share > pool:
                raise ValueError(f"rounds: {self.rounds} rounds of {share} prompts (arm {arm.name!r}) need "
                                 f"{self.rounds * share}, and the pool has {pool}")

    def stage(self, stage: type[S], *sections: Section, **given: Any) -> S:
        """``stage``'s config for this run: run-wide settings, then the sections' fields, then ``given``.

        The one place run-wide settings reach the stages: the ``policy`` (as ``model``, and as an
        eval's ``baseline``), ``seed``, ``device``, the sampling ``backend``, the vLLM layout and,
        for stages that generate text (:data:`RUN_DTYPE_STAGES`), the run's dtype. A stage gets
        the ones it has a field for.
        """
        wide = {"model": self.policy, "baseline": self.policy, "seed": self.seed, "device": self.device,
                "backend": self.backend, "tensor_parallel_size": self.tensor_parallel_size,
                "gpu_memory_utilization": self.gpu_memory_utilization}
        if stage in RUN_DTYPE_STAGES:
            wide["dtype"] = self.generation_dtype()
        values = {k: v for k, v in wide.items() if k in stage.model_fields}
        for section in sections:
            values.update(section.stage_values(stage))
        return stage.make(**{**values, **given})

    def generation_dtype(self) -> str:
        """The dtype of sampling and eval generation: ``dtype``, with ``auto`` resolved for the device."""
        return self.dtype if self.dtype != "auto" else auto_dtype(self.device)

    def primary_pair(self) -> tuple[str, str] | None:
        """(focus, comparator) of the primary comparison, or None when the run has no comparator."""
        if self.primary:
            return self.primary[0], self.primary[1]
        rnd = [a.name for a in self.arms if a.select == "random" and not a.usable]
        return (self.arms[0].name, rnd[0]) if rnd and rnd[0] != self.arms[0].name else None

    def arm_runs(self) -> list[tuple[str, ArmConfig, int]]:
        """Every (folder name, arm, seed) the run trains, random arms expanded per seed."""
        return [(name, arm, seed) for arm in self.arms for name, seed in arm.expand()]

    def train_seed(self, name: str) -> int:
        """The training seed of run ``name`` (the run seed plus the arm's training-seed offset)."""
        seeds = {n: t for arm in self.arms for n, _, t in arm.runs()}
        return self.seed + seeds[name]

    def groups(self) -> dict[str, list[str]]:
        """Arm name -> its runs (several for random seeds and training seeds, else one)."""
        return {arm.name: [n for n, _ in arm.expand()] for arm in self.arms}



def validate(values: dict[str, Any], source: str = "config") -> RunConfig:
    """A RunConfig from plain values; the first error becomes ``SOURCE: key.path: message``."""
    try:
        return RunConfig(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "config"
        shown = "input" in err and not isinstance(err["input"], (dict, list))
        given = f" (got {short_repr(err['input'])})" if shown else ""
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: {key}: {msg}{given}") from None
