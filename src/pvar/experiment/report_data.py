"""The report's data, typed: what ``report.json`` holds, as models the section builders read.

:func:`pvar.experiment.report.collect` gathers plain JSON-able data from a run folder (that dict
is ``report.json``, unchanged); :meth:`Report.of` reads it into these models, so a section builder
says ``r.pool.budget_k`` and a missing or misspelt key fails in one place instead of as a
``KeyError`` in the middle of a sentence. Unknown keys are ignored: report.json may carry more
than the document shows.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from pvar.experiment.config import RunConfig, validate


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Interval(_Data):
    """An estimate with its interval (win rates, score differences)."""

    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


class Test(Interval):
    """A difference of mean eval scores (arm − arm, or arm − base) with its test and power."""

    a: str = ""
    b: str = ""
    runs_a: int | None = None
    runs_b: int | None = None
    n_prompts: int | None = None
    p_value: float | None = None
    p_holm: float | None = None
    rejected: bool | None = None
    passed: bool | None = None
    mde: float | None = None
    power: float | None = None
    se: float | None = None
    se_runs: float | None = None
    se_prompts: float | None = None
    df: float | None = None
    boot_low: float | None = None  # the hierarchical bootstrap's interval, beside the t interval
    boot_high: float | None = None
    identical_answers: float | None = None  # A/A in batches: the share of identical answers


class RunSD(_Data):
    """One arm's between-run SD of its mean score, net of prompt noise, and where it came from."""

    sd: float | None = None
    df: float | None = None
    runs: int | None = None
    source: str = ""  # estimated, untrained, fallback (borrowed from donor) or none
    donor: str | None = None


class Verdict(_Data):
    gate: Test | None = None
    primary: Test | None = None
    secondary: list[Test] = []
    vs_base: dict[str, Test] = {}
    void: bool = True
    alpha: float = 0.05
    method: str = ""
    n_boot: int | None = None
    run_sd: dict[str, RunSD] = {}
    aa_batches: Test | None = None
    aa_runs: Test | None = None
    guard: dict[str, float] | None = None
    gate_guarded: Test | None = None  # the gate under gold x guard, where the verdict's metric is the judge's


class ArmEval(_Data):
    hard: Interval | None = None
    length_controlled: Interval | None = None
    policy_mean_score: float | None = None
    policy_mean_tokens: float | None = None
    n_prompts: int | None = None


class Arm(_Data):
    """One run of an arm: its selection, pairs, training and eval."""

    name: str
    group: str
    prompts: int | None = None
    pairs: int | None = None
    mean_pvar: float | None = None
    final_loss: float | None = None
    steps: int | None = None
    train_seconds: float | None = None
    eval: ArmEval | None = None

    @field_validator("eval", mode="before")
    @classmethod
    def _judged(cls, value: Any) -> Any:
        return value or None  # {} until the arm is judged

    @property
    def random_run(self) -> bool:
        """One seed of a multi-run arm (its name differs from its group's)."""
        return self.group != self.name


class Comparison(_Data):
    a: str
    b: str
    n: int
    difference: Interval
    head_to_head: Interval
    within_noise: bool

    @property
    def head_to_head_noise(self) -> bool:
        h = self.head_to_head
        return bool(h.ci_low is not None and h.ci_high is not None and h.ci_low <= 0.5 <= h.ci_high)


class ScaleRow(_Data):
    scale: float
    spearman: float | None = None
    top_overlap: float | None = None


class Pool(_Data):
    prompts: int
    scored: int
    pvar_q10_q50_q90: list[float | None]
    scale: float
    spearman_pvar_std: float | None = None
    budget_k: int
    top_overlap_pvar_std: float | None = None
    scale_sweep: list[ScaleRow] = []


class Base(_Data):
    mean_score: float | None = None
    mean_tokens: float | None = None


class Matching(_Data):
    mode: str
    steps: dict[str, int] = {}
    equal_steps: bool = True
    untrained: list[str] = []
    distinct_pairs: dict[str, int | None] = {}


class Reliability(_Data):
    samples: int
    overlap: float | None = None
    chance: float | None = None


class Fit(_Data):
    r2: float | None = None
    spearman: float | None = None


class Signal(_Data):
    n_prompts: int | None = None
    samples_per_set: int | None = None
    params: str | None = None
    fit_pvar: Fit
    fit_reward_std: Fit


class Heldout(_Data):
    n_pairs: int | None = None
    loss: float | None = None
    accuracy: float | None = None
    mean_margin: float | None = None


class Theory(_Data):
    n_prompts: int | None = None
    spearman_pvar: float | None = None
    spearman_reward_std: float | None = None
    violations_exact: int | None = None


class Round(_Data):
    round: int
    prompts: int | None = None
    mean_reward: float | None = None
    mean_pvar: float | None = None
    tied: float | None = None
    mean_pvar_policy: float | None = None
    pairs: int | None = None
    final_loss: float | None = None


class Invocation(_Data):
    started: str | None = None
    seconds: float | None = None
    peak_rss_mb: float | None = None
    versions: dict[str, str | None] = {}


class ConstraintRate(_Data):
    n: int
    success: float


class ArmAnswers(_Data):
    answers: int
    mean_words: float | None = None
    guard_rate: float | None = None
    constraints: dict[str, ConstraintRate] = {}


class NotLearned(_Data):
    constraint: str
    base: float
    best_arm: str
    best: float


class AnswerProfile(_Data):
    arms: dict[str, ArmAnswers]
    never_learned: list[NotLearned] = []
    learned_margin: float


class Composition(_Data):
    stratum: str
    shares: dict[str, dict[str, float]]


class Report(_Data):
    """Everything the document shows."""

    model_config = ConfigDict(frozen=True, extra="ignore", arbitrary_types_allowed=True)

    run_dir: str
    name: str
    config: dict[str, Any]  # as written in the run folder (shown verbatim)
    cfg: RunConfig  # the same, validated
    until: str
    complete: bool
    runs: list[Invocation] = []
    timings: dict[str, float | None] = {}
    pool: Pool | None = None
    arms: list[Arm] = []
    base: Base | None = None
    focus: str | None = None
    comparisons: list[Comparison] = []
    verdict: Verdict | None = None
    matching: Matching | None = None
    rank_reliability: list[Reliability] | None = None
    rank_reliability_resampled: list[Reliability] | None = None
    signal: Signal | None = None
    heldout: dict[str, Heldout] | None = None
    theory: Theory | None = None
    rounds: dict[str, list[Round]] | None = None
    metric: str = "judge"
    answers: AnswerProfile | None = None
    composition: Composition | None = None

    @classmethod
    def of(cls, data: dict[str, Any]) -> Report:
        """The typed view of :func:`pvar.experiment.report.collect`'s dict."""
        return cls.model_validate({**data, "cfg": validate(data["config"], f"{data['run_dir']}/config.yaml")})

    @property
    def evals(self) -> bool:
        return self.until == "eval"

    @property
    def trains(self) -> bool:
        return self.until in ("train", "eval")

    @property
    def last_run(self) -> Invocation | None:
        return self.runs[-1] if self.runs else None
