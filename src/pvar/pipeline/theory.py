r"""Numerical check of the theory: low-PVar prompts give small expected DPO gradients at initialisation.

Setting. For a prompt x with responses y_1..y_n and reward-model scores r_i, the reward model
prefers y_i to y_j with probability p_ij = σ(s (r_i − r_j)) (s: the reward scale the pool was
measured with). Let g_i = ∇_θ log π_θ(y_i | x), the gradient of the summed token log-probabilities
of the response given the chat-templated prompt (what DPO scores), over all trainable parameters
or any chosen subset of them. Write N = n (n − 1), d_ij = p_ij − ½ (antisymmetric: d_ji = −d_ij),
so that PVar = (1/N) Σ_{i≠j} d_ij² (DESIGN §1).

Expected gradient. With h = log π_θ − log π_ref, the DPO loss of the labelled pair "i beats j" is
ℓ(i≻j) = −log σ(β (h_i − h_j)), and ∇ℓ(i≻j) = −β (1 − σ(β (h_i − h_j))) (g_i − g_j). At
initialisation (π_θ = π_ref, h ≡ 0, σ = ½) this is −(β/2)(g_i − g_j). Drawing the label from the
reward model (i≻j with probability p_ij, j≻i with 1 − p_ij) gives, for the ordered pair (i, j),
−(β/2)(p_ij − (1 − p_ij))(g_i − g_j) = −(β/2)(2 p_ij − 1)(g_i − g_j); averaging over ordered pairs,

    G = −(β/2) (1/N) Σ_{i≠j} (2 p_ij − 1)(g_i − g_j) = −(β/N) Σ_{i≠j} d_ij (g_i − g_j).

G is the gradient of the label-expected loss L = (1/N) Σ_{i≠j} [p_ij ℓ(i≻j) + (1 − p_ij) ℓ(j≻i)]
at initialisation. (The one-sided (1/N) Σ_{i≠j} p_ij ℓ(i≻j) has gradient exactly G/2: each
unordered pair then enters once per orientation with weight p instead of once with both labels.)

Only the Gram matrix is needed. Because d is antisymmetric, Σ_{i≠j} d_ij (g_i − g_j) =
2 Σ_i (Σ_j d_ij) g_i, so G = Σ_i a_i g_i with a_i = −(2β/N) Σ_j d_ij, and Σ_i a_i = 0. Hence
||G||² = aᵀ K a with K_ij = g_i · g_j, and ||g_i − g_j||² = K_ii + K_jj − 2 K_ij. Since Σ a = 0,
aᵀ K a = aᵀ K_c a with the centred Gram K_c = H K H (H = I − 11ᵀ/n): G does not change when a
common vector is added to every g_i, and computing it from K_c keeps "all responses identical"
at an exact zero instead of a rounding residue.

Exact sample bound (Cauchy–Schwarz in the space of the N ordered pairs). With v_ij = g_i − g_j,

    ||G|| = (β/N) ||Σ_{i≠j} d_ij v_ij|| ≤ (β/N) Σ_{i≠j} |d_ij| ||v_ij||
          ≤ (β/N) sqrt(Σ_{i≠j} d_ij²) sqrt(Σ_{i≠j} ||v_ij||²)
          = β sqrt(PVar) sqrt(mean_{i≠j} ||g_i − g_j||²)                      (bound_exact).

It holds for every prompt, every set of responses and every parameter subset (it is just the
triangle and Cauchy–Schwarz inequalities on the given vectors), so any violation is a bug.

Fisher form (DESIGN §1). tr F_x = E_{y∼π} ||∇ log π(y|x)||² = tr Cov(g), since the score has mean
zero under π. Expanding the pairwise mean gives the identity

    mean_{i≠j} ||g_i − g_j||² = (2/(n − 1)) (tr K − 1ᵀK1/n) = 2 · n/(n − 1) · mean_i ||g_i − ḡ||²,

so with the unbiased centred estimator trF = n/(n − 1) · mean_i ||g_i − ḡ||² (the ``trF`` column)
β sqrt(2 trF) sqrt(PVar) (``bound_fisher``) *is* bound_exact, exactly; the two are computed by
different formulas here and their agreement is reported. The uncentred estimator
trF_raw = mean_i ||g_i||² (``bound_fisher_raw``) relies on E g = 0, which a finite sample, and
responses drawn with temperature/top-p rather than from π itself, do not give; it is reported
for information and can in principle fall below ||G||.

Signal to noise. The per-prompt SNR form 4 PVar / (1 − 4 PVar) is reported for information.

Where it lives: the algebra in core/theory.py (numpy), the gradients in backends/gradients.py
(torch), the figure in plots.py; this module is the verb (config, reading the pool, ``run_theory``).

Cost. One forward and one backward pass per response (model in eval mode, float32), the flattened
gradients of one prompt held together (n × n_params floats: ~2.2 GB for SmolLM2-135M with n = 4),
and K accumulated in float64 over column chunks. ``params`` restricts the gradient to a subset.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from pvar.backends.gradients import (
    gram_matrix,
    load_policy,
    response_gradients,
)
from pvar.config import Device, StageConfig
from pvar.core.stats import preference_variance, spearman
from pvar.core.theory import (
    RTOL,
    PromptTheory,
    max_ratio,
    resolve_scale,
    spread_pick,
    theory_from_gram,
)
from pvar.errors import InputError
from pvar.io.jsonable import jsonable
from pvar.plots import plot_theory

if TYPE_CHECKING:
    pass

_PARAMS = re.compile(r"^(all|last-layers(:[1-9]\d*)?|re:.+)$")


class TheoryConfig(StageConfig):
    model: str = Field("smollm2", description="Policy at initialisation (π_θ = π_ref): built-in name or folder.")
    beta: float = Field(0.1, gt=0, description="DPO β.")
    scale: float | None = Field(None, gt=0, description=(
        "Reward scale s of p_ij = sigmoid(s (r_i - r_j)). Must be the scale the pool was measured with; "
        "None infers it from the pool's pvar column (1.0 if it has none). A given scale is checked "
        "against that column."))
    prompts: int = Field(32, ge=1, description="Number of prompts (with at least two scored responses) to check.")
    pick: Literal["first", "spread"] = Field("spread", description=(
        "first: the first prompts of the pool; spread: prompts evenly spaced over the PVar quantiles "
        "(a better scatter; reads the pool twice)."))
    max_length: int = Field(512, ge=2, le=1_048_576,
                            description="Tokens of prompt + response; the prompt is cut from the left.")
    params: str = Field("all", description=(
        "Parameters the gradient is taken over: 'all', 'last-layers' (last 2 blocks + final norm), "
        "'last-layers:K', or 're:PATTERN' (names matching a regex). The bound holds for any subset."))
    append_eos: bool = Field(True, description="Score each response followed by EOS, as DPO trains on it.")
    device: Device = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', ...")

    @field_validator("params")
    @classmethod
    def _params_spec(cls, value: str) -> str:
        if not _PARAMS.match(value):
            raise ValueError("expected 'all', 'last-layers', 'last-layers:K' or 're:PATTERN'")
        if value.startswith("re:"):
            try:
                re.compile(value[3:])
            except re.error as exc:
                raise ValueError(f"bad regular expression: {exc}") from None
        return value


# -- the per-prompt algebra (numpy only) ----------------------------------------------------------


# -- the reward scale -----------------------------------------------------------------------------


# -- reading the pool -----------------------------------------------------------------------------


@dataclass
class _Prompt:
    prompt_id: str
    prompt: Any
    responses: list[str]
    rewards: np.ndarray  # valid rewards only, aligned with responses
    pool_pvar: float
    reward_std: float


def _row_prompt(row: dict[str, Any]) -> _Prompt | None:
    """A row's scored responses (a null reward drops its response), or None with fewer than two."""
    rewards = row.get("rewards") or []
    responses = row["responses"] if row.get("responses") is not None else [""] * len(rewards)  # light pass
    keep = [(t, float(r)) for t, r in zip(responses, rewards, strict=False) if r is not None]
    if len(keep) < 2:
        return None
    r = np.array([x for _, x in keep])
    pvar = row.get("pvar")
    return _Prompt(str(row["prompt_id"]), row.get("prompt"), [t for t, _ in keep], r,
                   float("nan") if pvar is None else float(pvar), float(r.std()))


def _iter_prompts(pool: str, columns: list[str] | None, require: tuple[str, ...]) -> Iterator[_Prompt]:
    from pvar.io.rows import read_rows

    for batch in read_rows(pool, require=require, columns=columns):
        for row in batch.data.to_pylist():
            item = _row_prompt(row)
            if item is not None:
                yield item


def load_prompts(pool: str | Path, cfg: TheoryConfig) -> tuple[list[_Prompt], float, str]:
    """The prompts to check, the reward scale and its origin (see ``TheoryConfig.pick``/``scale``)."""
    from pvar.io.readers import read_column_names

    pool = str(pool)
    names = read_column_names(pool)
    has_pvar = "pvar" in names
    full = ("prompt_id", "prompt", "responses", "rewards")
    if cfg.pick == "first":
        chosen: list[_Prompt] = []
        for item in _iter_prompts(pool, None, full):
            chosen.append(item)
            if len(chosen) >= cfg.prompts:
                break
        rewards, ids = [p.rewards for p in chosen], [p.prompt_id for p in chosen]
        pool_pvar = np.array([p.pool_pvar for p in chosen]) if has_pvar else None
        scale, origin = resolve_scale(cfg.scale, rewards, pool_pvar, ids, pool)
    else:  # pass 1: ids and rewards of every prompt; pass 2: the texts of the chosen ones
        # narrowing Parquet columns only helps rows that carry rewards (UltraFeedback rows need all)
        cols = ["prompt_id", "rewards", *(["pvar"] if has_pvar else [])] if "rewards" in names else None
        light = list(_iter_prompts(pool, cols, ("prompt_id", "rewards")))
        rewards, ids = [p.rewards for p in light], [p.prompt_id for p in light]
        pool_pvar = np.array([p.pool_pvar for p in light]) if has_pvar else None
        scale, origin = resolve_scale(cfg.scale, rewards, pool_pvar, ids, pool)
        pick = spread_pick(preference_variance(rewards, scale), cfg.prompts) if light else np.empty(0, int)
        wanted = {light[i].prompt_id: rank for rank, i in enumerate(pick)}
        found = {p.prompt_id: p for p in _iter_prompts(pool, None, full) if p.prompt_id in wanted}
        chosen = [found[i] for i in sorted(found, key=wanted.__getitem__)]
    if not chosen:
        raise InputError(pool, "no prompt has two or more scored responses")
    return chosen, scale, origin


# -- gradients (torch) ----------------------------------------------------------------------------


# -- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TheoryResult:
    """Summary of a run; ``rows`` holds the per-prompt records written to theory.jsonl."""

    n_prompts: int
    n_params: int
    scale: float
    scale_source: str
    beta: float
    spearman_pvar: float  # ρ(PVar, ||G||)
    spearman_reward_std: float  # ρ(reward std, ||G||): the closest baseline, reported beside PVar
    violations_exact: int
    violations_fisher: int
    violations_fisher_raw: int
    max_ratio_exact: float  # max ||G|| / bound over prompts with a positive bound
    max_ratio_fisher: float
    max_ratio_fisher_raw: float
    max_fisher_exact_gap: float  # max |bound_fisher − bound_exact| / bound_exact: 0 up to rounding
    seconds: float
    device: str
    rows: list[dict[str, Any]] = field(repr=False)
    paths: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "rows"}


def run_theory(pool: str | Path, out_dir: str | Path, cfg: TheoryConfig,
               progress: Callable[[int], None] | None = None) -> TheoryResult:
    """Compute ||G|| and its bounds on ``cfg.prompts`` prompts of ``pool``; write theory.{jsonl,json,png}.

    All three files are written atomically. ``progress`` is called with 1 after each prompt.
    """
    from pvar.io.writers import atomic_write_text

    t0 = time.perf_counter()
    prompts, scale, origin = load_prompts(pool, cfg)
    policy, tokenizer, params, device = load_policy(cfg.model, cfg.device, cfg.params)
    n_params = sum(p.numel() for p in params)
    rows: list[dict[str, Any]] = []
    checks: list[PromptTheory] = []
    for item in prompts:
        t1 = time.perf_counter()
        grads, lengths = response_gradients(policy, tokenizer, params, item.prompt, item.responses,
                                            max_length=cfg.max_length, append_eos=cfg.append_eos)
        k = gram_matrix(grads)
        del grads
        th = theory_from_gram(k, item.rewards, scale, cfg.beta)
        checks.append(th)
        rows.append({
            "prompt_id": item.prompt_id, "pvar": th.pvar, "grad_norm": th.grad_norm,
            "bound_exact": th.bound_exact, "bound_fisher": th.bound_fisher, "trF": th.trF, "snr": th.snr,
            "bound_fisher_raw": th.bound_fisher_raw, "trF_raw": th.trF_raw, "mean_pair_sq": th.mean_pair_sq,
            "ratio": th.grad_norm / th.bound_exact if th.bound_exact > 0 else float("nan"),
            "reward_std": item.reward_std, "pool_pvar": item.pool_pvar, "n": len(item.responses),
            "response_tokens": lengths, "seconds": round(time.perf_counter() - t1, 3),
        })
        if progress:
            progress(1)
    col = {k: np.array([r[k] for r in rows], dtype=np.float64)
           for k in ("pvar", "grad_norm", "bound_exact", "bound_fisher", "bound_fisher_raw", "reward_std")}
    positive = col["bound_exact"] > 0
    gap = np.abs(col["bound_fisher"] - col["bound_exact"])[positive] / col["bound_exact"][positive]
    out = Path(out_dir)
    paths = {"jsonl": str(out / "theory.jsonl"), "json": str(out / "theory.json"), "png": str(out / "theory.png")}
    result = TheoryResult(
        n_prompts=len(rows), n_params=n_params, scale=scale, scale_source=origin, beta=cfg.beta,
        spearman_pvar=spearman(col["pvar"], col["grad_norm"]),
        spearman_reward_std=spearman(col["reward_std"], col["grad_norm"]),
        violations_exact=sum(c.violates(c.bound_exact) for c in checks),
        violations_fisher=sum(c.violates(c.bound_fisher) for c in checks),
        violations_fisher_raw=sum(c.violates(c.bound_fisher_raw) for c in checks),
        max_ratio_exact=max_ratio(col["grad_norm"], col["bound_exact"]),
        max_ratio_fisher=max_ratio(col["grad_norm"], col["bound_fisher"]),
        max_ratio_fisher_raw=max_ratio(col["grad_norm"], col["bound_fisher_raw"]),
        max_fisher_exact_gap=float(gap.max()) if gap.size else 0.0,
        seconds=round(time.perf_counter() - t0, 2), device=device, rows=rows, paths=paths,
    )
    atomic_write_text(out / "theory.jsonl", "".join(json.dumps(jsonable(r)) + "\n" for r in rows))
    plot_theory(col["pvar"], col["grad_norm"], col["bound_exact"], [c.trF for c in checks], cfg.beta,
                out / "theory.png", title=f"ρ(PVar, ||G||) = {result.spearman_pvar:.2f}, "
                f"{result.violations_exact}/{result.n_prompts} bound violations")
    summary = {**result.summary(), "rtol": RTOL, "config": cfg.model_dump(), "pool": str(pool)}
    atomic_write_text(out / "theory.json", json.dumps(jsonable(summary), indent=2) + "\n")
    return result




def run(source: str | Path, output: str | Path, cfg: TheoryConfig,
        progress: Callable[[int], None] | None = None) -> TheoryResult:
    """The verb's uniform entry (source, output, cfg): :func:`run_theory` on the measured pool ``source``."""
    return run_theory(source, output, cfg, progress)
