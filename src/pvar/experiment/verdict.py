"""The experiment's verdict: a learning gate, one pre-registered primary test, Holm-corrected secondary tests,
their power, the A/A noise floor and the rank reliability of the selection (numpy only).

Variance has two sources, and an arm-vs-arm interval must carry both:

- *runs*: which prompts a seed drew and how training went. Every trained run of the same arm is one draw;
  the between-run variance of the mean eval score is pooled over every arm with several runs (random
  seeds, training seeds) and applied to every trained arm, including arms with one run;
- *eval prompts*: the per-prompt difference of the two arms' run-averaged scores (paired, so prompt
  difficulty cancels).

For arms A and B with k_A and k_B runs on n shared eval prompts,
SE² = σ²_run·(1/k_A + 1/k_B) + Var_i(d_i)/n, with Welch–Satterthwaite degrees of freedom and Student-t
intervals, p-values and power (the base policy is untrained: it has no run term).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from pvar.core.stats import reward_stats

METHOD = ("between-run variance (selection and training seeds, pooled over arms with several runs) / runs "
          "+ paired per-prompt variance / prompts; Welch-Satterthwaite t")
BASE = "base"


# -- Student t without scipy ------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (normal when df is infinite)."""
    if not math.isfinite(df):
        return NormalDist().cdf(t)
    t2 = t * t
    # The two arguments of the incomplete beta sum to 1: use the one far from 1 (precision near t = 0).
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t2)) if t2 > df else \
        0.5 * (1.0 - _betainc(0.5, df / 2.0, t2 / (df + t2)))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on the cdf)."""
    if not math.isfinite(df):
        return NormalDist().inv_cdf(p)
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


def holm(pvalues: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as given)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


# -- comparisons ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """Arm a minus arm b in mean eval score, with its interval, test and power."""

    a: str
    b: str
    runs_a: int
    runs_b: int
    n_prompts: int
    estimate: float
    se: float
    se_runs: float  # the between-run part of se
    se_prompts: float  # the eval-prompt part of se
    df: float
    ci_low: float
    ci_high: float
    p_value: float
    mde: float  # smallest true difference this test detects with 80 % power at alpha
    power: float  # power to detect a true difference equal to the estimate
    p_holm: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def pooled_run_variance(groups: dict[str, np.ndarray]) -> tuple[float, int]:
    """Pooled between-run variance of the mean eval score over groups with >= 2 runs, and its df."""
    ss, df = 0.0, 0
    for x in groups.values():
        if x.shape[0] >= 2:
            means = x.mean(axis=1)
            ss += float(((means - means.mean()) ** 2).sum())
            df += x.shape[0] - 1
    return (ss / df, df) if df else (math.nan, 0)


def difference(a: str, xa: np.ndarray, b: str, xb: np.ndarray, *, run_var: float, run_df: int,
               trained: tuple[bool, bool] = (True, True), alpha: float = 0.05) -> Difference:
    """Compare two arms' (runs, prompts) score matrices on the same prompts (see the module docstring)."""
    d = xa.mean(axis=0) - xb.mean(axis=0)
    n = d.size
    var_p = float(d.var(ddof=1)) / n if n > 1 else math.nan
    k = (1.0 / xa.shape[0] if trained[0] else 0.0) + (1.0 / xb.shape[0] if trained[1] else 0.0)
    var_r = run_var * k if k and math.isfinite(run_var) else 0.0
    se = math.sqrt(var_p + var_r)
    parts = [(var_p, n - 1)] + ([(var_r, run_df)] if var_r > 0 else [])
    denom = sum(v * v / f for v, f in parts if f > 0)
    df = (se**4 / denom) if denom > 0 else math.inf
    crit = t_quantile(1 - alpha / 2, df)
    est = float(d.mean())
    if se > 0:
        delta = abs(est) / se
        p = 2 * (1 - t_cdf(delta, df))
        power = (1 - t_cdf(crit - delta, df)) + t_cdf(-crit - delta, df)
    else:
        p, power = (0.0 if est else 1.0), (1.0 if est else 0.0)
    return Difference(a, b, xa.shape[0], xb.shape[0], n, est, se, math.sqrt(var_r), math.sqrt(var_p), df,
                      est - crit * se, est + crit * se, float(min(1.0, p)), (crit + t_quantile(0.8, df)) * se,
                      float(power))


# -- the verdict ------------------------------------------------------------------------------------


def analyse(scores: dict[str, np.ndarray], base: np.ndarray, groups: dict[str, list[str]], *, primary: tuple[str, str],
            gate_arm: str, alpha: float = 0.05, untrained: frozenset[str] = frozenset()) -> dict:
    """The report's decision block.

    ``scores``: run name -> per-prompt eval scores (aligned, shape (n,)); ``base``: the base policy's;
    ``groups``: arm -> its run names (every arm, one run or several); ``primary``: (focus arm, comparator
    arm), named in the config before the run; ``gate_arm``: the arm that must beat the base policy for
    any ranking of arms to mean something (the random arm at the same budget). ``untrained``: arms with no
    pairs, whose answers are the base policy's (no run-to-run variance).
    """
    mats = {arm: np.stack([scores[r] for r in runs]) for arm, runs in groups.items()
            if runs and all(r in scores for r in runs)}
    run_var, run_df = pooled_run_variance({a: x for a, x in mats.items() if a not in untrained})
    base_m = base[None, :]
    common = dict(run_var=run_var, run_df=run_df, alpha=alpha)

    def trained(*arms: str) -> tuple[bool, bool]:
        return arms[0] not in untrained, arms[1] not in untrained

    vs_base = {arm: difference(arm, x, BASE, base_m, trained=(arm not in untrained, False), **common)
               for arm, x in mats.items()}
    out: dict = {"method": METHOD, "alpha": alpha, "run_sd": math.sqrt(run_var) if math.isfinite(run_var) else None,
                 "run_df": run_df, "vs_base": {k: v.as_dict() for k, v in vs_base.items()},
                 "primary_names": list(primary), "gate_arm": gate_arm}
    gate = vs_base.get(gate_arm)
    out["gate"] = None if gate is None else {**gate.as_dict(), "passed": bool(gate.ci_low > 0)}
    focus, other = primary
    if focus in mats and other in mats:
        out["primary"] = difference(focus, mats[focus], other, mats[other], trained=trained(focus, other),
                                    **common).as_dict()
        sec = [difference(focus, mats[focus], arm, x, trained=trained(focus, arm), **common)
               for arm, x in mats.items() if arm not in primary]
        adj = holm([s.p_value for s in sec])
        out["secondary"] = [{**s.as_dict(), "p_holm": q, "rejected": bool(q < alpha)}
                            for s, q in zip(sec, adj, strict=True)]
    else:
        out["primary"], out["secondary"] = None, []
    out["void"] = out["gate"] is None or not out["gate"]["passed"]
    return out


def aa_floor(first: np.ndarray, second: np.ndarray, same_text: np.ndarray, alpha: float = 0.05) -> dict:
    """The same policy judged twice (another batch arrangement): share of identical answers and the score
    difference with its paired t interval. Anything beyond zero is decoding noise."""
    d = difference("base", first[None, :], "base (A/A)", second[None, :], run_var=math.nan, run_df=0,
                   trained=(False, False), alpha=alpha)
    return {**d.as_dict(), "identical_answers": float(np.mean(same_text)) if same_text.size else None}


def rank_reliability(rewards: np.ndarray, k: int, *, scale: float, sizes: list[int] | None = None) -> list[dict]:
    """Test-retest overlap of the top-k by PVar between two disjoint sets of m samples per prompt.

    ``rewards`` (prompts, n) holds i.i.d. samples per prompt, so columns [0, m) and [m, 2m) are two
    independent measurements. Returns, per m, the overlap |top_A ∩ top_B| / k and chance (k / prompts).
    A selection made from all n samples is at least as reliable as the largest m shown.
    """
    n_prompts, n = rewards.shape
    out = []
    for m in sizes or list(range(2, n // 2 + 1)):
        a = reward_stats(rewards[:, :m], scale=scale).pvar
        b = reward_stats(rewards[:, m:2 * m], scale=scale).pvar
        ids = np.arange(n_prompts)
        out.append({"samples": m, "overlap": _top_overlap(a, b, ids, k), "chance": k / n_prompts if n_prompts else 0})
    return out


def resampled_reliability(rewards: np.ndarray, k: int, *, scale: float, sizes: list[int], draws: int = 50,
                          seed: int = 0) -> list[dict]:
    """Test-retest overlap of the top-k at sample sizes beyond what split halves reach: two sets of m rewards
    per prompt are drawn with replacement from the prompt's own observed rewards (a plug-in bootstrap of
    each prompt's reward distribution), ``draws`` times. Read it beside `rank_reliability` at the same m,
    which it should roughly reproduce (plug-in draws understate the spread of rare outcomes a little).
    """
    rng = np.random.default_rng(seed)
    valid = [r[np.isfinite(r)] for r in rewards]
    ids = np.arange(len(valid))
    out = []
    for m in sizes:
        got = []
        for _ in range(draws):
            sets = [np.stack([rng.choice(v, m) if v.size else np.full(m, np.nan) for v in valid]) for _ in (0, 1)]
            a, b = (reward_stats(x, scale=scale).pvar for x in sets)
            got.append(_top_overlap(a, b, ids, k))
        out.append({"samples": m, "overlap": float(np.mean(got)), "chance": k / len(valid) if valid else 0})
    return out


def _top_overlap(a: np.ndarray, b: np.ndarray, ids: np.ndarray, k: int) -> float:
    """Top-k overlap; ties at the cut are shared out by expectation (a random tie-break would add noise)."""
    def members(score: np.ndarray) -> np.ndarray:
        s = np.where(np.isfinite(score), score, -np.inf)
        cut = np.sort(s)[::-1][k - 1]
        above, at = s > cut, s == cut
        w = above.astype(float)
        w[at] = (k - above.sum()) / at.sum()
        return w

    return float((members(a) * members(b)).sum() / k) if k else math.nan
