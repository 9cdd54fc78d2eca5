"""The sections of a run's config: prompts, scoring, arms, training, eval, theory.

Each section derives its stage fields from the stage configs that own them (:func:`pvar.config.section_of`,
:func:`pvar.config.like`), so a knob's type, bounds, default and description are declared once.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator

from pvar.config import Dtype, Section, Seed, like, section_of
from pvar.engines.config import EngineConfig
from pvar.pipeline.adaptive import AdaptiveConfig
from pvar.pipeline.diagnostics import GoldPairsConfig, SignalConfig
from pvar.pipeline.evaluate import EvalConfig
from pvar.pipeline.generate import GenerateConfig
from pvar.pipeline.measure import MeasureConfig
from pvar.pipeline.pairs import PairsConfig
from pvar.pipeline.potential import PotentialConfig
from pvar.pipeline.reward import RewardConfig
from pvar.pipeline.select import SelectConfig
from pvar.pipeline.theory import TheoryConfig
from pvar.pipeline.train import TrainConfig

PairRule = Literal["best-worst", "best-random", "sweet-spot", "all"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")



class PromptsConfig(Section):
    source: str = Field("sharegpt", description="'sharegpt' (offline, built in) or a file/dataset of prompt rows "
                        "(prompt_id, prompt; reference for *-ref rewards and judges).")
    pool: int = Field(128, ge=2, le=10_000_000, description="Pool prompts to score and select from (sharegpt source).")
    eval_source: str = Field("sharegpt", description="Held-out eval prompts: 'sharegpt' (its eval split, disjoint "
                             "from the pool split) or a file of rows with prompt_id, prompt, reference.")
    eval: int = Field(64, ge=2, le=10_000_000, description="Eval prompts (sharegpt eval source).")
    task: Literal["ifeval", "format", "phrase", "graded"] | None = Field(
        None, description="Verifiable task family (pvar.tasks) attached to the sharegpt prompts: ifeval (1-2 "
        "IFEval-style constraints checked by code, keywords and bullets included), format (one constraint on the "
        "reply's shape: lowercase, no commas, opening word, under 20 words, closing phrase), phrase (open with a "
        "given phrase) or graded (2-3 ifeval constraints: gold, the fraction met, takes levels). Each row's "
        "reference then holds its task spec, read by the exact 'gold' reward and judge.")

    @model_validator(mode="after")
    def _task_needs_sharegpt(self) -> Self:
        if self.task is not None and (self.source != "sharegpt" or self.eval_source != "sharegpt"):
            given = self.source if self.source != "sharegpt" else self.eval_source
            raise ValueError(f"task {self.task!r} attaches instructions to the built-in ShareGPT prompts, but the "
                             f"prompts come from {given!r}; drop prompts.task, or write task specs into your "
                             "file's reference column")
        return self


class AdaptiveSection(section_of((AdaptiveConfig, ("n0", "step", "n_max", "max_samples", "confidence", "stop")),
                                 base=Section)):
    """Adaptive sampling (``pvar.pipeline.adaptive``): more samples only where the selection is still open.

    The cut-off fraction is the run's budget, and scale and seed are the run's."""

    @model_validator(mode="after")
    def _stage_checks(self) -> Self:
        """The stage config's own checks (n_max >= n0, ...), before any sample is drawn."""
        try:
            AdaptiveConfig(**self.stage_values(AdaptiveConfig))
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return self


class ScoringConfig(section_of(
        (GenerateConfig, ("n", "max_new_tokens", "temperature", "top_p", "batch_size", "shared_prefix")),
        (RewardConfig, {"reward": "reward", "reward_max_length": "max_length"}),
        (MeasureConfig, ("scale",)),
        # the same sampling, reward and scale wherever the run samples or measures again
        (AdaptiveConfig, ("scale",)), (PairsConfig, ("scale",)), (TheoryConfig, ("scale",)),
        (SignalConfig, ("reward", "scale", "max_new_tokens", "temperature", "top_p")),
        (GoldPairsConfig, ("reward", "max_new_tokens", "temperature", "top_p")),
        defaults={"max_new_tokens": 64, "scale": 10.0}, base=Section)):
    """Sampling from the policy and scoring with the selection reward: done once, shared by every arm."""

    omit_at_default = ("shared_prefix",)  # added later: run folders made before still resume

    generate: bool = Field(True, description="Sample responses; False reads rated rows (UltraFeedback schema or "
                           "rows with responses and rewards) from prompts.source instead.")
    shard_size: int = like(EngineConfig, "shard_size", default=32)  # smaller shards: resumes lose less on a CPU
    adaptive: AdaptiveSection | None = Field(None, description="Sample adaptively instead of n per prompt (n is "
                                             "then unused): the selection cut is the run's budget.")


RANKED = ("top", "bottom", "threshold", "stratified")  # arm selections that rank prompts by the `by` column


class ArmConfig(Section):
    """One selection of the pool. ``select: full`` keeps every scored prompt."""

    name: str = Field(description="Folder-safe arm name (letters, digits, . _ -).")
    select: Literal["top", "bottom", "random", "threshold", "rip", "stratified", "full"] = Field(
        description="How prompts are kept; rip = the RIP filter (arXiv 2501.18578), capped at the budget, smallest "
        "reward gap first; stratified = top by `by` within each stratum, each stratum's share of the budget its "
        "share of the pool.")
    stratum: str = like(SelectConfig, "stratum")
    rule: PairRule | None = Field(None, description="Pair rule of this arm (default: train.pair_rule); sweet-spot "
                                  "pairs the best with the response nearest mean - 2 std (arXiv 2502.16825).")
    by: str = Field("pvar", description="Score column: pvar, reward_std, reward_range, reward_mean, pvar_low, ...")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, description="Random arms: one arm per "
                             "seed (named NAME-sSEED).")
    fraction: float | None = Field(None, gt=0, le=1, description="Budget override for this arm.")
    count: int | None = Field(None, ge=1, description="Budget override for this arm (a cap with fraction).")
    minimum: float | None = Field(None, description="Threshold arms: keep prompts with score >= minimum.")
    weight_by: str | None = Field(None, description="Pairs column scaling each pair's DPO loss (e.g. pvar).")
    usable: bool = Field(False, description="Select only among prompts that yield a pair (PVar > 0), at the same "
                         "budget: random-usable separates 'PVar avoids tied prompts' from 'PVar finds informative "
                         "ones'; top by reward_mean among usable is the 'easiest usable' selector.")
    max_steps: int | None = Field(None, ge=-1, description="This arm's training steps (default: train.max_steps); -1 "
                                  "= one pass over its own pairs: a label budget, where arms get the same number of "
                                  "gold-labelled prompts, each trained on once.")
    train_seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, description="Training seeds (offsets "
                                   "of the run seed) of non-random arms: several give one run each (NAME-tSEED), so "
                                   "training noise enters the comparison. A random arm's training seed is its seed.")

    omit_at_default = ("stratum", "max_steps")  # added later: run folders made before still resume

    @field_validator("name")
    @classmethod
    def _folder_safe(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use letters, digits, '.', '_' or '-' (it names a folder)")
        return value

    @model_validator(mode="after")
    def _threshold(self) -> Self:
        if self.select == "threshold" and self.minimum is None:
            raise ValueError("a threshold arm needs a minimum")
        if self.usable and self.select in ("full", "threshold", "rip"):
            raise ValueError(f"usable applies to selections at a budget, not {self.select}")
        if self.select != "stratified" and self.stratum != SelectConfig.model_fields["stratum"].default:
            raise ValueError("stratum applies to stratified arms only")
        return self

    def runs(self) -> list[tuple[str, int, int]]:
        """(folder name, selection seed, training seed) of each run this arm stands for.

        Random arms: one run per seed, which seeds both the draw and the training. Other arms: one
        run per training seed (a single one keeps the bare arm name).
        """
        if self.select == "random":
            return [(f"{self.name}-s{s}", s, s) for s in self.seeds]
        if len(self.train_seeds) == 1:
            return [(self.name, self.seeds[0], self.train_seeds[0])]
        return [(f"{self.name}-t{t}", self.seeds[0], t) for t in self.train_seeds]

    def expand(self) -> list[tuple[str, int]]:
        """(arm folder name, selection seed) of each run this arm stands for."""
        return [(name, seed) for name, seed, _ in self.runs()]


def default_arms() -> list[ArmConfig]:
    return [
        ArmConfig(name="top-pvar", select="top", by="pvar"),
        ArmConfig(name="bottom-pvar", select="bottom", by="pvar"),
        ArmConfig(name="random", select="random", seeds=[0, 1, 2]),
        ArmConfig(name="top-std", select="top", by="reward_std"),
        ArmConfig(name="full", select="full"),
    ]


class TrainSection(section_of(
        (TrainConfig, ("algo", "beta", "lr", "epochs", "max_steps", "batch_size", "lora", "lora_r", "lora_alpha",
                       "lora_layers", "max_length", "dtype", "bf16", "gradient_checkpointing", "sft_weight",
                       "trl_args")),
        # the trained objective's beta and token cap, wherever the run scores pairs with it
        (TheoryConfig, ("beta",)), (SignalConfig, ("beta", "max_length")), (PotentialConfig, ("max_length",)),
        defaults={"max_steps": 32, "max_length": 320}, base=Section)):
    """Training of every arm: one TRL run each, same settings (see ``pvar train --help``).

    The policy and the seed are the run's (each arm's seed offset by its training seed)."""

    omit_at_default = ("sft_weight",)  # added later: run folders made before still resume

    pair_rule: PairRule = Field("best-worst", description="Pairs per prompt (an arm's ``rule`` overrides it).")
    matching: Literal["auto", "compute", "data"] = Field(
        "auto", description="compute: every arm trains max_steps optimizer steps (needs max_steps > 0); data: each "
        "arm trains `epochs` passes over its own pairs (max_steps -1), so arms with more pairs get more steps. auto = "
        "compute when max_steps > 0, else data, which must then be chosen explicitly if arms' budgets differ.")
    launcher: Literal["inline", "accelerate"] = Field(
        "inline", description="inline: train in this process; accelerate: each arm's training runs under "
        "`accelerate launch` (DDP, FSDP or ZeRO-3, per accelerate_config) in a subprocess.")
    accelerate_config: str | None = Field(None, description="launcher accelerate: ddp | fsdp | zero3 (shipped "
                                          "configs) or a path to an accelerate config file; None = accelerate's "
                                          "own default config.")
    num_processes: int | None = Field(None, ge=1, le=4096, description="launcher accelerate: processes (GPUs); "
                                      "None = the config file's.")
    accelerate_args: list[str] = Field(default_factory=list, description="launcher accelerate: more flags of "
                                       "`accelerate launch` (e.g. --main_process_port 29501).")

    @model_validator(mode="after")
    def _matching(self) -> Self:
        if self.matching == "compute" and self.max_steps <= 0:
            raise ValueError("matching 'compute' needs max_steps > 0 (the steps every arm trains)")
        if self.matching == "data" and self.max_steps > 0:
            raise ValueError("matching 'data' trains epochs over each arm's pairs; set max_steps: -1")
        return self

    @property
    def matched(self) -> str:
        """'compute' (equal optimizer steps) or 'data' (one pass count over each arm's own pairs)."""
        return self.matching if self.matching != "auto" else ("compute" if self.max_steps > 0 else "data")


class EvalSection(section_of(
        (EvalConfig, ("judge", "max_new_tokens", "batch_size", "n_boot", "lc_boot", "soft_scale", "confidence",
                      "dtype", "backend")),
        defaults={"max_new_tokens": 64, "batch_size": 64, "lc_boot": 300}, base=Section)):
    """Judging every arm against the base policy on the held-out prompts (see ``pvar eval --help``)."""

    dtype: Dtype | Literal["run"] = Field(
        "run", description="dtype of eval generation; 'run' = the run's dtype. float32 keeps greedy answers "
        "independent of which prompts share a batch (bf16 kernels are not).")
    backend: Literal["run", "hf", "vllm"] = Field("run", description="Eval generation backend; 'run' = vllm when "
                                                  "the run samples with vllm, else hf. Greedy either way.")
    aa_batch_size: int = Field(0, ge=0, description="A/A noise floor: the base policy's eval answers generated a "
                               "second time in batches of this size (a different arrangement of prompts); 0 skips it.")
    metric: Literal["judge", "gold-guarded"] = Field("judge", description="The pre-registered score of the "
                                                     "verdict's tests: the judge's, or gold x content guard (an exact "
                                                     "gold judge only; an answer that games gold scores 0).")

    omit_at_default = ("metric",)  # added later: run folders made before still resume


class TheorySection(section_of(
        (TheoryConfig, ("prompts", "params", "max_length")),
        (SignalConfig, {"signal_prompts": "prompts", "signal_samples": "samples", "params": "params"}),
        (GoldPairsConfig, {"heldout_pairs": "count", "heldout_samples": "samples"}),
        defaults={"prompts": 8, "max_length": 256}, base=Section)):
    """Checks of the theory: gradient norm vs PVar at initialisation, gradient signal, held-out pairs."""

    prompts: int = Field(8, ge=0, description="Prompts for the gradient-norm check; 0 skips it.")
    signal_prompts: int = Field(0, ge=0, description="Gradient-signal check (pvar.pipeline.diagnostics): "
                                "pool prompts, spread over PVar, whose DPO gradient is estimated from two fresh "
                                "sample sets; their dot product (unbiased for ‖E g‖²) is regressed on PVar and on "
                                "the reward std. 0 skips it.")
    heldout_pairs: int = Field(0, ge=0, description="Eval prompts whose fresh base samples, labelled by the gold "
                               "(selection) reward best vs worst, give every trained arm a DPO loss and accuracy on "
                               "shared held-out pairs (no decoding noise). 0 skips it; LoRA arms only.")


