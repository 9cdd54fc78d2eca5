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

Cost. One forward and one backward pass per response (model in eval mode, float32), the flattened
gradients of one prompt held together (n × n_params floats: ~2.2 GB for SmolLM2-135M with n = 4),
and K accumulated in float64 over column chunks. ``params`` restricts the gradient to a subset.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from pvar.backends.base import generation_prompt_ids
from pvar.config import Device, StageConfig
from pvar.core.stats import preference_variance, spearman
from pvar.errors import ConfigError, InputError
from pvar.io.writers import atomic_file

if TYPE_CHECKING:
    import torch

RTOL = 1e-6  # a bound counts as violated when grad_norm > bound * (1 + RTOL) + atol
ATOL = 1e-12  # absolute slack, in units of beta * sqrt(max_i ||g_i||^2) (float64 rounding only)
SCALE_TOL = 1e-6  # largest |PVar(rewards, scale) - pool pvar| accepted as "the same scale"
_GRAM_CHUNK = 1 << 22  # columns of the gradient matrix per float64 Gram update (~128 MB for n = 4)
_PARAMS = re.compile(r"^(all|last-layers(:[1-9]\d*)?|re:.+)$")


class TheoryConfig(StageConfig):
    model: str = Field("smollm2", description="Policy at initialisation (π_θ = π_ref): built-in name or folder.")
    beta: float = Field(0.1, gt=0, description="DPO β.")
    scale: float | None = Field(None, gt=0, description=(
        "Reward scale s of p_ij = sigmoid(s (r_i - r_j)). Must be the scale the pool was measured with; "
        "None infers it from the pool's pvar column (1.0 if it has none). A given scale is checked "
        "against that column."))
    prompts: int = Field(32, ge=1, description="Number of prompts (with at least two scored responses) to check.")
    pick: Literal["first", "spread"] = Field("first", description=(
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


def preference_gaps(rewards: np.ndarray, scale: float) -> np.ndarray:
    """d_ij = p_ij − ½ = tanh(s (r_i − r_j) / 2) / 2, an antisymmetric n × n matrix (zero diagonal).

    The tanh form keeps tiny gaps exact (σ(z) − ½ loses digits near z = 0).
    """
    r = np.asarray(rewards, dtype=np.float64)
    return np.tanh(scale * (r[:, None] - r[None, :]) / 2.0) / 2.0


def dpo_coefficients(gaps: np.ndarray, beta: float) -> np.ndarray:
    """a with G = Σ_i a_i g_i: a_i = −(2β / (n (n − 1))) Σ_j d_ij (see the module docstring)."""
    n = gaps.shape[0]
    return -2.0 * beta * gaps.sum(axis=1) / (n * (n - 1))


@dataclass(frozen=True)
class PromptTheory:
    """The theory's quantities for one prompt, all from the Gram matrix of its response gradients."""

    pvar: float
    grad_norm: float  # ||G||
    mean_pair_sq: float  # mean_{i≠j} ||g_i − g_j||²
    trF: float  # n/(n−1) · mean_i ||g_i − ḡ||² (unbiased centred estimator of tr F_x)
    trF_raw: float  # mean_i ||g_i||² (uncentred estimator)
    bound_exact: float  # β sqrt(PVar) sqrt(mean_pair_sq)
    bound_fisher: float  # β sqrt(2 trF) sqrt(PVar): equals bound_exact up to rounding
    bound_fisher_raw: float  # β sqrt(2 trF_raw) sqrt(PVar)
    snr: float  # 4 PVar / (1 − 4 PVar)
    atol: float  # absolute slack of the violation test for this prompt

    def violates(self, bound: float) -> bool:
        return bool(self.grad_norm > bound * (1.0 + RTOL) + self.atol)


def theory_from_gram(gram: np.ndarray, rewards: np.ndarray, scale: float, beta: float) -> PromptTheory:
    """Expected DPO gradient norm at initialisation and its bounds, from K_ij = g_i · g_j."""
    k = np.asarray(gram, dtype=np.float64)
    n = k.shape[0]
    if n < 2 or k.shape != (n, n) or len(rewards) != n:
        raise ValueError(f"need an n x n Gram matrix with n >= 2 matching {len(rewards)} rewards, got {k.shape}")
    gaps = preference_gaps(rewards, scale)
    pvar = float((gaps**2).sum() / (n * (n - 1)))
    a = dpo_coefficients(gaps, beta)
    a -= a.mean()  # Σ a = 0 exactly in theory; remove the rounding residue
    centre = np.eye(n) - 1.0 / n
    kc = centre @ k @ centre
    grad_norm = math.sqrt(max(float(a @ kc @ a), 0.0))
    sq = np.diag(k)
    off = ~np.eye(n, dtype=bool)
    mean_pair_sq = max(float((sq[:, None] + sq[None, :] - 2.0 * k)[off].mean()), 0.0)
    trf = max(float(np.trace(kc)) / (n - 1), 0.0)
    trf_raw = float(sq.mean())
    return PromptTheory(
        pvar=pvar,
        grad_norm=grad_norm,
        mean_pair_sq=mean_pair_sq,
        trF=trf,
        trF_raw=trf_raw,
        bound_exact=beta * math.sqrt(pvar) * math.sqrt(mean_pair_sq),
        bound_fisher=beta * math.sqrt(2.0 * trf) * math.sqrt(pvar),
        bound_fisher_raw=beta * math.sqrt(2.0 * trf_raw) * math.sqrt(pvar),
        snr=4.0 * pvar / (1.0 - 4.0 * pvar) if pvar < 0.25 else math.inf,  # 1/4 only when tanh rounds to 1
        atol=ATOL * beta * math.sqrt(max(float(sq.max()), 0.0)),
    )


# -- the reward scale -----------------------------------------------------------------------------


def infer_scale(rewards: list[np.ndarray], pool_pvar: np.ndarray) -> float | None:
    """The scale s that reproduces the pool's pvar column, or None if no prompt pins it down.

    PVar(s) of one prompt is increasing in s (each tanh² term is), so bisection in log s on the
    prompt with the largest pvar finds it; a 6-significant-digit rounding is kept when it still
    reproduces the column (a pool measured with s = 10 gives back 10.0, not 9.99999998).
    """
    pool_pvar = np.asarray(pool_pvar, dtype=np.float64)
    ok = np.isfinite(pool_pvar) & (pool_pvar > 0)
    if not ok.any():
        return None
    i = int(np.flatnonzero(ok)[np.argmax(pool_pvar[ok])])
    target = pool_pvar[i]
    r = np.asarray(rewards[i], dtype=np.float64)
    lo, hi = math.log(1e-8), math.log(1e8)
    if not preference_variance([r], math.exp(lo))[0] <= target <= preference_variance([r], math.exp(hi))[0]:
        return None
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if preference_variance([r], math.exp(mid))[0] < target:
            lo = mid
        else:
            hi = mid
    found = math.exp((lo + hi) / 2.0)
    rounded = float(f"{found:.6g}")
    return rounded if _scale_mismatch(rewards, pool_pvar, rounded)[0] <= SCALE_TOL else found


def _scale_mismatch(rewards: list[np.ndarray], pool_pvar: np.ndarray, scale: float) -> tuple[float, int]:
    """Largest |PVar(rewards, scale) − pool pvar| over prompts where both exist, and where."""
    if not rewards:
        return 0.0, -1
    mine = preference_variance(rewards, scale)
    both = np.isfinite(mine) & np.isfinite(pool_pvar)
    if not both.any():
        return 0.0, -1
    diff = np.where(both, np.abs(mine - pool_pvar), -1.0)
    at = int(np.argmax(diff))
    return float(diff[at]), at


def resolve_scale(cfg_scale: float | None, rewards: list[np.ndarray], pool_pvar: np.ndarray | None,
                  ids: list[str], source: str) -> tuple[float, str]:
    """Pick the reward scale and say where it came from; refuse one the pool's pvar contradicts.

    A wrong scale changes every p_ij, so the check would test other preferences than the ones the
    pool was selected by: a mismatch is an error, not a warning.
    """
    if pool_pvar is None or not np.isfinite(pool_pvar).any():
        return (cfg_scale, "given") if cfg_scale is not None else (1.0, "default (the pool has no pvar column)")
    if cfg_scale is None:
        inferred = infer_scale(rewards, pool_pvar)
        if inferred is None:
            return 1.0, "default (the pool's pvar is 0 everywhere: any scale fits)"
        gap, at = _scale_mismatch(rewards, pool_pvar, inferred)
        if gap > SCALE_TOL:
            raise InputError(source, f"no single reward scale reproduces the pvar column (best s={inferred:.6g} "
                                     f"misses prompt {ids[at]!r} by {gap:.3g}); pass scale explicitly",
                             field="pvar")
        return inferred, "inferred from the pool's pvar column"
    gap, at = _scale_mismatch(rewards, pool_pvar, cfg_scale)
    if gap > SCALE_TOL:
        hint = infer_scale(rewards, pool_pvar)
        seems = f"; the pool looks measured with scale={hint:.6g}" if hint is not None else ""
        raise ConfigError(f"scale: {cfg_scale:g} does not reproduce the pool's pvar column (prompt {ids[at]!r} "
                          f"differs by {gap:.3g} > {SCALE_TOL:g}){seems}")
    return cfg_scale, "given (matches the pool's pvar column)"


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


def _spread(pvar: np.ndarray, k: int) -> np.ndarray:
    """Indices of k prompts evenly spaced over the PVar order (all of them if there are fewer)."""
    order = np.argsort(pvar, kind="stable")
    if k >= order.size:
        return order
    return order[np.unique(np.round(np.linspace(0, order.size - 1, k)).astype(np.int64))]


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
        pick = _spread(preference_variance(rewards, scale), cfg.prompts) if light else np.empty(0, int)
        wanted = {light[i].prompt_id: rank for rank, i in enumerate(pick)}
        found = {p.prompt_id: p for p in _iter_prompts(pool, None, full) if p.prompt_id in wanted}
        chosen = [found[i] for i in sorted(found, key=wanted.__getitem__)]
    if not chosen:
        raise InputError(pool, "no prompt has two or more scored responses")
    return chosen, scale, origin


# -- gradients (torch) ----------------------------------------------------------------------------


def select_parameters(model: torch.nn.Module, spec: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The named parameters the gradient is taken over (see ``TheoryConfig.params``).

    'last-layers[:K]' keeps the parameters of the K highest-numbered blocks (names holding
    ``layers.N.``, ``h.N.``, ``blocks.N.`` or ``layer.N.``) plus unnumbered norms (the final norm);
    embeddings and a tied LM head stay out (they are the largest tensors).
    """
    named = list(model.named_parameters())
    if spec == "all":
        return named
    if spec.startswith("re:"):
        pattern = re.compile(spec[3:])
        chosen = [(n, p) for n, p in named if pattern.search(n)]
    else:
        k = int(spec.split(":", 1)[1]) if ":" in spec else 2
        block = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
        index = {n: int(m.group(1)) for n, _ in named if (m := block.search(n))}
        if not index:
            raise ConfigError(f"params: {spec!r} found no numbered blocks in {type(model).__name__}")
        top = max(index.values())
        chosen = [(n, p) for n, p in named
                  if (n in index and index[n] > top - k) or (n not in index and re.search(r"norm|ln_f", n))]
    if not chosen:
        raise ConfigError(f"params: {spec!r} selects no parameter of {type(model).__name__}")
    return chosen


def sequence_ids(tokenizer: Any, prompt: Any, response: str, *, max_length: int,
                 append_eos: bool = True) -> tuple[list[int], int]:
    """Token ids of chat-templated prompt + response, and the prompt's length in them.

    The prompt is rendered as the policy saw it when sampling (chat template with the generation
    prompt); the response follows as the assistant turn, closed by EOS as DPO trains on it. Over
    ``max_length`` the response is cut to leave at least one prompt token, then the prompt is cut
    from the left (its end holds the question and the assistant header).
    """
    prompt_ids = generation_prompt_ids(tokenizer, prompt)
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if append_eos and tokenizer.eos_token_id is not None:
        response_ids = [*response_ids, tokenizer.eos_token_id]
    if not prompt_ids:
        raise ValueError("the prompt renders to no tokens")
    response_ids = response_ids[: max_length - 1]
    prompt_ids = prompt_ids[len(prompt_ids) - min(len(prompt_ids), max_length - len(response_ids)):]
    return prompt_ids + response_ids, len(prompt_ids)


def sequence_logprob(model: torch.nn.Module, ids: list[int], n_prompt: int) -> torch.Tensor:
    """log π(response | prompt): the sum of the response tokens' log-probabilities (a 0-d tensor)."""
    import torch

    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits[0, n_prompt - 1 : -1].float()
    targets = input_ids[0, n_prompt:]
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).sum()


def response_gradients(model: torch.nn.Module, tokenizer: Any, params: list[torch.nn.Parameter], prompt: Any,
                       responses: list[str], *, max_length: int = 512, append_eos: bool = True,
                       ) -> tuple[torch.Tensor, list[int]]:
    """Flattened g_i = ∇ log π(y_i | x) over ``params``, one row per response (n × n_params, float32).

    One forward and one backward per response: a batched forward would make every backward pay
    for the whole batch. Also returns each response's token count.
    """
    import torch

    total = sum(p.numel() for p in params)
    out = torch.empty((len(responses), total), dtype=torch.float32, device=params[0].device)
    lengths = []
    for i, response in enumerate(responses):
        ids, n_prompt = sequence_ids(tokenizer, prompt, response, max_length=max_length, append_eos=append_eos)
        lengths.append(len(ids) - n_prompt)
        grads = torch.autograd.grad(sequence_logprob(model, ids, n_prompt), params, allow_unused=True)
        at = 0
        for p, g in zip(params, grads, strict=True):
            view = out[i, at : at + p.numel()]
            if g is None:  # a parameter the response does not reach (e.g. an unused position)
                view.zero_()
            else:
                view.copy_(g.reshape(-1))
            at += p.numel()
        del grads
    return out, lengths


def gram_matrix(grads: torch.Tensor) -> np.ndarray:
    """K = grads · gradsᵀ in float64, over column chunks (a float64 copy of all of them is 2× the memory)."""
    import torch

    n, total = grads.shape
    k = torch.zeros((n, n), dtype=torch.float64, device=grads.device)
    for start in range(0, total, _GRAM_CHUNK):
        chunk = grads[:, start : start + _GRAM_CHUNK].double()
        k += chunk @ chunk.T
    return k.cpu().numpy()


def load_policy(model: str, device: str = "auto", params: str = "all") -> tuple[Any, Any, list[Any], str]:
    """Model (eval, float32, gradients only where ``params`` says), tokenizer, parameters, device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pvar.backends.assets import resolve_policy

    path = resolve_policy(model)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(path)
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    chosen = select_parameters(policy, params)
    keep = {id(p) for _, p in chosen}
    for p in policy.parameters():
        p.requires_grad_(id(p) in keep)
    return policy, tokenizer, [p for _, p in chosen], device


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


def _max_ratio(num: np.ndarray, den: np.ndarray) -> float:
    ok = den > 0
    return float((num[ok] / den[ok]).max()) if ok.any() else float("nan")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


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
        max_ratio_exact=_max_ratio(col["grad_norm"], col["bound_exact"]),
        max_ratio_fisher=_max_ratio(col["grad_norm"], col["bound_fisher"]),
        max_ratio_fisher_raw=_max_ratio(col["grad_norm"], col["bound_fisher_raw"]),
        max_fisher_exact_gap=float(gap.max()) if gap.size else 0.0,
        seconds=round(time.perf_counter() - t0, 2), device=device, rows=rows, paths=paths,
    )
    atomic_write_text(out / "theory.jsonl", "".join(json.dumps(_json_safe(r)) + "\n" for r in rows))
    plot_theory(col["pvar"], col["grad_norm"], col["bound_exact"], [c.trF for c in checks], cfg.beta,
                out / "theory.png", title=f"ρ(PVar, ||G||) = {result.spearman_pvar:.2f}, "
                f"{result.violations_exact}/{result.n_prompts} bound violations")
    summary = {**result.summary(), "rtol": RTOL, "config": cfg.model_dump(), "pool": str(pool)}
    atomic_write_text(out / "theory.json", json.dumps(_json_safe(summary), indent=2) + "\n")
    return result


def plot_theory(pvar: np.ndarray, grad_norm: np.ndarray, bound: np.ndarray, trf: list[float], beta: float,
                path: str | Path, title: str = "") -> Path:
    """||G|| against PVar (log-log over positive values), with each prompt's bound and the median-tr F curve.

    Saved to a temporary name and renamed, so a failed save never leaves a half-written PNG.
    """
    from pvar.plots import _pyplot

    plt = _pyplot()
    pvar, grad_norm, bound = (np.asarray(x, dtype=np.float64) for x in (pvar, grad_norm, bound))
    pos = (pvar > 0) & (grad_norm > 0)
    log = int(pos.sum()) >= 2
    show = pos if log else np.ones(pvar.size, dtype=bool)
    fig, ax = plt.subplots(figsize=(6, 4.5), constrained_layout=True)
    ax.scatter(pvar[show], grad_norm[show], s=18, color="#4C72B0", label="||G|| (expected DPO gradient at init)")
    ax.scatter(pvar[show], bound[show], s=22, marker="_", color="#C44E52", label="β·sqrt(PVar)·sqrt(mean ||g_i−g_j||²)")
    trf_arr = np.asarray(trf, dtype=np.float64)
    if show.any() and np.isfinite(trf_arr).any():
        grid = np.linspace(pvar[show].min(), pvar[show].max(), 200)
        if log and grid[0] > 0:
            grid = np.geomspace(grid[0], grid[-1], 200)
        med = float(np.nanmedian(trf_arr))
        ax.plot(grid, beta * np.sqrt(2 * med * grid), "--", color="#C44E52", lw=1,
                label="β·sqrt(2·median tr F·PVar)")
    if log:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short decade overlap
    dropped = int((~show).sum())
    note = f" ({dropped} with PVar or ||G|| = 0 not shown)" if dropped else ""
    ax.set(xlabel="PVar", ylabel="||G||", title=(title + note) if title else note.strip())
    ax.legend(fontsize=7, loc="upper left")
    path = Path(path)
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)
    return path
