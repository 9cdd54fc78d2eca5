"""The algebra of the theory check (numpy only): from a prompt's Gram matrix of response
gradients and its rewards to the expected DPO gradient at initialisation and its bounds.

The derivation is in pvar/pipeline/theory.py's docstring; the torch side (gradients, Gram
matrices) is backends/gradients.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pvar.core.stats import preference_variance
from pvar.errors import ConfigError, InputError

RTOL = 1e-6  # a bound counts as violated when grad_norm > bound * (1 + RTOL) + atol
ATOL = 1e-12  # absolute slack, in units of beta * sqrt(max_i ||g_i||^2) (float64 rounding only)
SCALE_TOL = 1e-6  # largest |PVar(rewards, scale) - pool pvar| accepted as "the same scale"


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


def spread_pick(pvar: np.ndarray, k: int) -> np.ndarray:
    """Indices of k prompts evenly spaced over the PVar order (all of them if there are fewer)."""
    order = np.argsort(pvar, kind="stable")
    if k >= order.size:
        return order
    return order[np.unique(np.round(np.linspace(0, order.size - 1, k)).astype(np.int64))]


def max_ratio(num: np.ndarray, den: np.ndarray) -> float:
    """The largest num/den over positive den (NaN when none): how close a bound comes to binding."""
    ok = den > 0
    return float((num[ok] / den[ok]).max()) if ok.any() else float("nan")

