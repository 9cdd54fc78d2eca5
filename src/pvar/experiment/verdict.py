"""The experiment's verdict: a learning gate, one pre-registered primary test, Holm-corrected secondary tests,
their power and the A/A noise floor (numpy only).

Each arm is a (runs, prompts) matrix of eval scores on the same eval prompts. Model one score as
x[r, i] = mu + u_r + q_i + e_ri: u_r the run (training seed, and for arms that redraw their prompts the
selection too; variance σ²_run, the arm's own), q_i the prompt (its difficulty cancels in the pairing; what
stays is the arms' per-prompt disagreement) and e_ri the run × prompt noise (variance τ²). For arms A and
B with k_A and k_B runs on n shared prompts, d = mean_ri(A) − mean_ri(B) has

    Var(d) = σ²_A/k_A + σ²_B/k_B + Var_i(q^A_i − q^B_i)/n + τ²_A/(k_A·n) + τ²_B/(k_B·n).

The last three terms are exactly E[s²_d]/n, s²_d the variance over prompts of the paired differences of
the run-averaged scores. A run's mean score carries τ²/n of prompt noise on top of σ²_run, so an arm's run
variance is its two-way ANOVA estimate σ²_run = s²(run means) − MS_residual/n, truncated at 0 (adding the
raw variance of run means to s²_d/n would count τ²/n twice). Hence

    SE² = σ²_A/k_A + σ²_B/k_B + s²_d/n,

with Welch–Satterthwaite degrees of freedom over the three parts (a run part with those of its estimate, a
difference of mean squares, even where it truncates at 0; at least 1 in all) and Student-t intervals,
p-values and power. Run variance is per arm, never pooled: an arm that keeps its prompts varies by training
seed only, one that redraws them also by selection. An untrained arm (and the base policy) answers as the
base: σ² = 0. A trained arm with one run has no estimate of its own: it borrows the largest among the other
trained arms (recorded as a fallback). A hierarchical bootstrap (runs within each arm, prompts jointly) goes beside the
t interval as a check on its shape (skewed 0/1 scores); with few runs its percentiles are the narrower of
the two, since they cannot know the t's heavy tails.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

METHOD = ("each arm's own run variance (two-way ANOVA: variance of its run means net of their prompt noise, "
          "truncated at 0; untrained arms 0; a trained arm with one run borrows the largest of the other trained "
          "arms) / runs + paired per-prompt variance of the run-averaged scores / prompts; Welch-Satterthwaite "
          "t; beside it a hierarchical bootstrap (runs' net effects within each arm, prompts jointly)")
BASE = "base"
N_BOOT = 2000


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
class RunVariance:
    """One arm's between-run variance of its mean eval score, net of the prompt noise a run mean carries."""

    var: float
    # Satterthwaite's Σ (c_j·MS_j)²/df_j for ``var`` = Σ c_j·MS_j (half its estimated variance); 0 when known
    # exactly (untrained). Kept when ``var`` truncates at 0: an estimate of 0 from two noisy runs is not a 0
    # known for sure, and the interval's degrees of freedom must say so.
    vv: float
    runs: int
    source: str  # "estimated", "untrained", "fallback" (borrowed from ``donor``) or "none" (nothing to borrow)
    donor: str | None = None
    # Run effects net of prompt noise (population variance ``var``): what the bootstrap resamples.
    effects: np.ndarray = field(default_factory=lambda: np.zeros(1), repr=False, compare=False)

    @property
    def df(self) -> float:
        """Satterthwaite degrees of freedom of ``var`` (inf: known exactly)."""
        return self.var**2 / self.vv if self.vv > 0 else math.inf

    def as_dict(self) -> dict:
        return {"sd": math.sqrt(self.var), "df": self.df if math.isfinite(self.df) else None, "runs": self.runs,
                "source": self.source, "donor": self.donor}


UNTRAINED = RunVariance(0.0, 0.0, 1, "untrained")


def run_variance(x: np.ndarray) -> RunVariance:
    """Run variance of one arm's (runs >= 2, prompts) matrix by the two-way ANOVA method of moments.

    E[s²(run means)] = σ²_run + τ²/n and E[MS_residual] = τ², so σ²_run = s²(run means) − MS_residual/n,
    truncated at 0; its df is Satterthwaite's for that difference of mean squares (fewer than runs − 1 when
    prompt noise is much of the spread, which keeps intervals honest for arms with a small run variance).
    """
    k, n = x.shape
    if k < 2:
        raise ValueError(f"a run variance needs at least 2 runs, got {k}")
    m = x.mean(axis=1)
    s2m = float(m.var(ddof=1))
    resid = x - m[:, None] - x.mean(axis=0)[None, :] + m.mean()
    noise = float((resid**2).sum()) / ((k - 1) * (n - 1)) / n if n > 1 else 0.0  # MS_residual / n
    var = max(0.0, s2m - noise)
    vv = s2m**2 / (k - 1) + (noise**2 / ((k - 1) * (n - 1)) if n > 1 else 0.0)
    dev = m - m.mean()
    effects = dev * math.sqrt(var / float((dev**2).mean())) if var > 0 else np.zeros(k)
    return RunVariance(var, vv, k, "estimated", effects=effects)


def run_variances(mats: dict[str, np.ndarray], untrained: frozenset[str] = frozenset()) -> dict[str, RunVariance]:
    """Each arm's own run variance; an untrained arm has none, a trained arm with one run borrows the largest
    of the other trained arms' (conservative: its own is unknown), and says so."""
    out = {a: RunVariance(0.0, 0.0, x.shape[0], "untrained") if a in untrained else run_variance(x)
           for a, x in mats.items() if a in untrained or x.shape[0] >= 2}
    donors = {a: v for a, v in out.items() if v.source == "estimated"}
    for a, x in mats.items():
        if a in out:
            continue
        if donors:
            name, v = max(donors.items(), key=lambda kv: kv[1].var)
            out[a] = RunVariance(v.var, v.vv, x.shape[0], "fallback", name, v.effects)
        else:
            out[a] = RunVariance(0.0, 0.0, x.shape[0], "none")
    return {a: out[a] for a in mats}


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
    se_runs: float  # the between-run part of se: sqrt(σ²_a/k_a + σ²_b/k_b)
    se_prompts: float  # the eval-prompt part of se: sqrt(s²_d/n)
    df: float
    ci_low: float
    ci_high: float
    p_value: float
    mde: float  # smallest true difference this test detects with 80 % power at alpha
    power: float  # power to detect a true difference equal to the estimate
    boot_low: float | None = None  # hierarchical bootstrap percentile interval, beside the t interval
    boot_high: float | None = None
    p_holm: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _own(x: np.ndarray) -> RunVariance:
    """An arm's run variance from its own runs, or none for a single run (compared paired over prompts)."""
    return run_variance(x) if x.shape[0] >= 2 else RunVariance(0.0, 0.0, 1, "none")


def bootstrap(d: np.ndarray, parts: list[tuple[RunVariance, int, float]], *, n_boot: int = N_BOOT, seed: int = 0,
              alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of a hierarchical bootstrap of mean(d) + Σ sign·(mean run effect of k runs).

    Prompts are resampled jointly (``d``: the paired per-prompt differences of run-averaged scores); within
    each arm k runs are drawn from its net run effects. Resampling raw runs and then raw prompts would count
    the run × prompt noise three times (Owen 2007, the pigeonhole bootstrap); net effects count it once, as
    s²_d does. Both levels are rescaled to match the unbiased variances (few runs: k/(k−1) matters).
    """
    rng = np.random.default_rng(seed)
    n = d.size
    dev = (d - d.mean()) * math.sqrt(n / (n - 1))
    draws = d.mean() + dev[rng.integers(0, n, (n_boot, n))].mean(axis=1)
    for rv, k, sign in parts:
        if rv.var > 0:
            draws += sign * rv.effects[rng.integers(0, rv.effects.size, (n_boot, k))].mean(axis=1)
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def difference(a: str, xa: np.ndarray, b: str, xb: np.ndarray, *, run_a: RunVariance | None = None,
               run_b: RunVariance | None = None, alpha: float = 0.05, n_boot: int = N_BOOT,
               seed: int = 0) -> Difference:
    """Compare two arms' (runs, prompts) score matrices on the same prompts (see the module docstring).

    ``run_a``/``run_b``: each arm's run variance; None estimates it from the arm's own runs, or counts none
    for a single run (two single runs: a paired t over prompts, as the A/A floors want). ``n_boot`` 0 skips
    the bootstrap.
    """
    ra = _own(xa) if run_a is None else run_a
    rb = _own(xb) if run_b is None else run_b
    ka, kb = xa.shape[0], xb.shape[0]
    d = xa.mean(axis=0) - xb.mean(axis=0)
    n = d.size
    var_p = float(d.var(ddof=1)) / n if n > 1 else math.nan
    var_r = ra.var / ka + rb.var / kb
    se = math.sqrt(var_p + var_r)
    denom = ra.vv / ka**2 + rb.vv / kb**2 + (var_p**2 / (n - 1) if var_p > 0 else 0.0)  # Welch–Satterthwaite
    df = max(1.0, se**4 / denom) if denom > 0 and se > 0 else math.inf  # below 1 the approximation means nothing
    crit = t_quantile(1 - alpha / 2, df)
    est = float(d.mean())
    if se > 0:
        delta = abs(est) / se
        p = 2 * (1 - t_cdf(delta, df))
        power = (1 - t_cdf(crit - delta, df)) + t_cdf(-crit - delta, df)
    else:
        p, power = (0.0 if est else 1.0), (1.0 if est else 0.0)
    boot = bootstrap(d, [(ra, ka, 1.0), (rb, kb, -1.0)], n_boot=n_boot, seed=seed, alpha=alpha) \
        if n_boot > 0 and n > 1 else (None, None)
    return Difference(a, b, ka, kb, n, est, se, math.sqrt(var_r), math.sqrt(var_p), df, est - crit * se,
                      est + crit * se, float(min(1.0, p)), (crit + t_quantile(0.8, df)) * se, float(power), *boot)


# -- the verdict ------------------------------------------------------------------------------------


def analyse(scores: dict[str, np.ndarray], base: np.ndarray, groups: dict[str, list[str]], *, primary: tuple[str, str],
            gate_arm: str, alpha: float = 0.05, untrained: frozenset[str] = frozenset(), n_boot: int = N_BOOT,
            seed: int = 0) -> dict:
    """The report's decision block.

    ``scores``: run name -> per-prompt eval scores (aligned, shape (n,)); ``base``: the base policy's;
    ``groups``: arm -> its run names (every arm, one run or several); ``primary``: (focus arm, comparator
    arm), named in the config before the run; ``gate_arm``: the arm that must beat the base policy for
    any ranking of arms to mean something (the random arm at the same budget). ``untrained``: arms with no
    pairs, whose answers are the base policy's (no run-to-run variance).
    """
    mats = {arm: np.stack([scores[r] for r in runs]) for arm, runs in groups.items()
            if runs and all(r in scores for r in runs)}
    runs = run_variances(mats, untrained)
    base_m = base[None, :]
    common = dict(alpha=alpha, n_boot=n_boot, seed=seed)

    def diff(a: str, b: str) -> Difference:
        return difference(a, mats[a], b, mats[b], run_a=runs[a], run_b=runs[b], **common)

    vs_base = {arm: difference(arm, x, BASE, base_m, run_a=runs[arm], run_b=UNTRAINED, **common)
               for arm, x in mats.items()}
    out: dict = {"method": METHOD, "alpha": alpha, "n_boot": n_boot,
                 "run_sd": {arm: rv.as_dict() for arm, rv in runs.items()},
                 "vs_base": {k: v.as_dict() for k, v in vs_base.items()},
                 "primary_names": list(primary), "gate_arm": gate_arm}
    gate = vs_base.get(gate_arm)
    out["gate"] = None if gate is None else {**gate.as_dict(), "passed": bool(gate.ci_low > 0)}
    focus, other = primary
    if focus in mats and other in mats:
        out["primary"] = diff(focus, other).as_dict()
        sec = [diff(focus, arm) for arm in mats if arm not in primary]
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
    d = difference("base", first[None, :], "base (A/A)", second[None, :], alpha=alpha)
    return {**d.as_dict(), "identical_answers": float(np.mean(same_text)) if same_text.size else None}
