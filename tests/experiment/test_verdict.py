"""The verdict's statistics: Student t without scipy, Holm, per-arm run + prompt variance, its coverage, the
bootstrap beside it, power, gate, reliability."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvar.experiment import analysis, verdict

stats = pytest.importorskip("scipy.stats")


def _exact_t_cdf(t: float, df: float) -> float:
    """Student t cdf in 50-digit arithmetic (scipy's t.cdf is off by ~1e-9 near t = 0 for small df)."""
    import mpmath

    mpmath.mp.dps = 50
    t, df = mpmath.mpf(t), mpmath.mpf(df)
    c = mpmath.gamma((df + 1) / 2) / (mpmath.sqrt(df * mpmath.pi) * mpmath.gamma(df / 2))
    return float(mpmath.mpf("0.5") + t * c * mpmath.hyp2f1(0.5, (df + 1) / 2, 1.5, -t * t / df))


@given(t=st.floats(-30, 30), df=st.floats(1, 500))
@settings(max_examples=200, deadline=None)
def test_t_cdf_matches_exact_arithmetic(t, df):
    assert verdict.t_cdf(t, df) == pytest.approx(_exact_t_cdf(t, df), abs=1e-9)


def test_t_cdf_at_small_t_is_exact_where_scipy_is_not():
    assert verdict.t_cdf(1e-8, 1.0) == pytest.approx(0.5 + math.atan(1e-8) / math.pi, abs=1e-15)  # Cauchy


@given(p=st.floats(0.001, 0.999), df=st.floats(1, 200))
@settings(max_examples=100, deadline=None)
def test_t_quantile_inverts_the_cdf(p, df):
    assert verdict.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), abs=1e-6)


def test_normal_limit():
    assert verdict.t_quantile(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)


def test_holm_by_hand():
    # sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04); back in the given order
    assert verdict.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert verdict.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1, monotone
    assert verdict.holm([]) == []


def test_run_variance_by_hand():
    # rows constant over prompts: no prompt noise, so the run variance is the variance of the run means
    a = verdict.run_variance(np.array([[1.0, 1.0], [3.0, 3.0]]))
    assert a.var == pytest.approx(2.0) and a.df == pytest.approx(1.0) and a.source == "estimated"
    # run means 2 and 1 (s² 0.5), residuals ±1 (MS 4 on 1 df): 0.5 − 4/2 < 0, all of it prompt noise
    b = verdict.run_variance(np.array([[1.0, 3.0], [2.0, 0.0]]))
    assert b.var == 0.0 and not b.effects.any()
    assert b.vv == pytest.approx(0.5**2 + 2.0**2 / 1) and b.df == 0.0  # an estimated 0, not a known one
    d = verdict.difference("b", np.array([[1.0, 3.0], [2.0, 0.0]]), "c", np.array([[0.0, 1.0]]))
    assert d.se_runs == 0.0 and d.df == 1.0  # its noise still costs degrees of freedom (floored at 1)
    # run means 0, 1, 2 over 3 prompts with residual pattern of MS 1: σ² = 1 − 1/3
    x = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]) + np.array([[1, -1, 0], [-1, 1, 0], [0, 0, 0.0]])
    c = verdict.run_variance(x)
    assert c.var == pytest.approx(1.0 - 1.0 / 3)
    assert c.df == pytest.approx(c.var**2 / (1.0**2 / 2 + (1 / 3) ** 2 / 4))  # Satterthwaite of 1 − MS/n
    assert np.mean(c.effects**2) == pytest.approx(c.var) and c.effects.sum() == pytest.approx(0.0)
    with pytest.raises(ValueError):
        verdict.run_variance(np.ones((1, 3)))


def test_each_arm_has_its_own_run_variance_and_one_run_borrows_the_largest():
    fixed = np.array([[1.0, 1.0], [1.2, 1.2]])  # var 0.02
    redrawn = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 3.0]])  # var 3
    single, untrained = np.array([[100.0, -100.0]]), np.array([[5.0, 5.0]])
    rv = verdict.run_variances({"fixed": fixed, "redrawn": redrawn, "single": single, "bottom": untrained},
                               frozenset({"bottom"}))
    assert list(rv) == ["fixed", "redrawn", "single", "bottom"]
    assert rv["fixed"].var == pytest.approx(0.02) and rv["redrawn"].var == pytest.approx(3.0)
    assert (rv["single"].source, rv["single"].donor, rv["single"].runs) == ("fallback", "redrawn", 1)
    assert rv["single"].var == rv["redrawn"].var and rv["single"].df == rv["redrawn"].df
    assert (rv["bottom"].source, rv["bottom"].var) == ("untrained", 0.0)
    alone = verdict.run_variances({"single": single})["single"]
    assert (alone.source, alone.var) == ("none", 0.0)
    assert rv["single"].as_dict() == {"sd": pytest.approx(math.sqrt(3.0)), "df": pytest.approx(2.0), "runs": 1,
                                      "source": "fallback", "donor": "redrawn"}


def test_difference_by_hand_with_known_run_means():
    a = np.array([[1.0, 1.0], [3.0, 3.0]])  # run means 1, 3: σ²_a = 2 on 1 df
    b = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 3.0]])  # run means 0, 0, 3: σ²_b = 3 on 2 df
    d = verdict.difference("a", a, "b", b)
    assert d.estimate == pytest.approx(1.0) and d.se_prompts == 0.0
    assert d.se == pytest.approx(math.sqrt(2 / 2 + 3 / 3)) and d.se_runs == pytest.approx(d.se)
    assert d.df == pytest.approx(2.0**2 / (1.0**2 / 1 + 1.0**2 / 2))  # Welch–Satterthwaite: 8/3
    half = stats.t.ppf(0.975, 8 / 3) * math.sqrt(2)
    assert (d.ci_low, d.ci_high) == pytest.approx((1 - half, 1 + half))
    # with run means as above and per-prompt differences ±0.5 on 4 prompts, the prompt part adds s²_d/n
    shift = np.array([0.5, -0.5, 0.5, -0.5])
    e = verdict.difference("a", np.repeat(a, 2, axis=1) + shift, "b", np.repeat(b, 2, axis=1))
    assert e.se_prompts**2 == pytest.approx(np.var(shift, ddof=1) / 4) and e.se_runs == pytest.approx(math.sqrt(2))
    assert e.se**2 == pytest.approx(e.se_runs**2 + e.se_prompts**2)


def test_single_runs_compare_as_a_paired_t_over_prompts():
    rng = np.random.default_rng(5)
    x, y = rng.normal(0, 1, 30), rng.normal(0.2, 1, 30)
    d = verdict.difference("x", x[None, :], "y", y[None, :])
    ref = stats.ttest_rel(x, y)
    assert d.se_runs == 0.0 and d.df == pytest.approx(29) and d.p_value == pytest.approx(ref.pvalue, rel=1e-6)


def _arm(rng, mean, runs, n, run_sd, prompt_effect):
    return np.stack([mean + rng.normal(0, run_sd) + prompt_effect + rng.normal(0, 0.05, n) for _ in range(runs)])


def test_run_noise_enters_the_interval_and_a_planted_effect_is_found():
    rng = np.random.default_rng(0)
    n = 400
    prompts = rng.normal(0, 0.3, n)  # shared difficulty: cancels in the pairing
    top = _arm(rng, 0.60, 4, n, 0.01, prompts)  # fixed selection: training seeds only
    rnd = _arm(rng, 0.50, 8, n, 0.06, prompts)  # selection redrawn per run
    rt, rr = verdict.run_variance(top), verdict.run_variance(rnd)
    assert math.sqrt(rt.var) < 0.03 and 0.02 < math.sqrt(rr.var) < 0.15  # each arm's own, not one pooled number
    d = verdict.difference("top", top, "random", rnd, run_a=rt, run_b=rr)
    assert d.ci_low < 0.10 < d.ci_high and d.ci_low > 0
    assert d.se_runs > d.se_prompts  # with 400 prompts, seeds dominate, as the design expects
    no_runs = verdict.difference("top", top, "random", rnd, run_a=verdict.UNTRAINED, run_b=verdict.UNTRAINED)
    assert no_runs.se < d.se  # ignoring seeds would overstate precision
    assert verdict.difference("top", top, "random", rnd) == d  # by default each arm's own runs
    assert d.mde == pytest.approx((stats.t.ppf(0.975, d.df) + stats.t.ppf(0.8, d.df)) * d.se, rel=1e-6)
    assert 0.8 < d.power <= 1 and d.p_value < 0.05


def test_prompt_noise_is_counted_once():
    """No run effect at all, only run × prompt noise: SE² must match the estimate's variance (the old formula,
    raw run-mean variance / runs + s²_d / n, had it about twice)."""
    rng = np.random.default_rng(6)
    est, se2, old = [], [], []
    for _ in range(300):
        a, b = rng.normal(0, 1, (4, 128)), rng.normal(0, 1, (8, 128))
        d = verdict.difference("a", a, "b", b, n_boot=0)
        est.append(d.estimate)
        se2.append(d.se**2)
        old.append(d.se_prompts**2 + a.mean(1).var(ddof=1) / 4 + b.mean(1).var(ddof=1) / 8)
    truth = 1 / (4 * 128) + 1 / (8 * 128)
    assert np.var(est) == pytest.approx(truth, rel=0.2)
    assert 0.95 < np.mean(se2) / truth < 1.35  # truncation at 0 leaves a little upward bias, on the safe side
    assert np.mean(old) / truth == pytest.approx(2.0, rel=0.1)


def test_power_is_about_80_percent_at_the_mde():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (1, 50))
    d = verdict.difference("a", x, "b", np.zeros((1, 50)))
    shifted = x - x.mean() + d.mde  # same spread, mean at the MDE
    e = verdict.difference("a", shifted, "b", np.zeros((1, 50)))
    assert e.power == pytest.approx(0.8, abs=0.01)


# -- coverage of the Welch interval, by simulation with known variance components ----------------------

FIXED_SD, REDRAWN_SD = 0.011, 0.057  # the run-mean SDs the re-analysis measured, here as true run SDs


def _experiment(rng, n: int, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Base policy (one untrained run), a fixed-selection arm (4 training seeds, small run SD, +0.05) and a
    redrawn-selection arm (8 runs, large run SD, +0.02), on n shared prompts."""
    if kind == "normal":
        prompt = rng.normal(0, 0.3, n)

        def arm(mu: float, k: int, sd: float) -> np.ndarray:
            return mu + prompt + rng.normal(0, 0.1, n) + rng.normal(0, sd, (k, 1)) + rng.normal(0, 0.2, (k, n))

        return prompt + rng.normal(0, 0.1, n), arm(0.05, 4, FIXED_SD), arm(0.02, 8, REDRAWN_SD)
    p = rng.uniform(0.25, 0.75, n)  # 0/1 scores; every term bounded so the success rate stays in [0, 1]

    def u(half: float, size) -> np.ndarray:
        return rng.uniform(-half, half, size)

    def arm(mu: float, k: int, sd: float) -> np.ndarray:
        prob = p + mu + u(0.05, n) + u(sd * math.sqrt(3), (k, 1)) + u(0.03, (k, n))
        return (rng.uniform(size=(k, n)) < prob).astype(float)

    return (rng.uniform(size=n) < p + u(0.05, n)).astype(float), arm(0.05, 4, FIXED_SD), arm(0.02, 8, REDRAWN_SD)


@pytest.mark.parametrize(("kind", "n"), [("normal", 256), ("bernoulli", 512)])
def test_welch_intervals_cover_for_fixed_and_redrawn_arms(kind, n):
    truth = {"fixed - base": 0.05, "redrawn - base": 0.02, "fixed - redrawn": 0.03}
    rng = np.random.default_rng(0)
    sims = 600
    cover, prompt_only = dict.fromkeys(truth, 0), dict.fromkeys(truth, 0)
    for _ in range(sims):
        base, fixed, redrawn = _experiment(rng, n, kind)
        rf, rr = verdict.run_variance(fixed), verdict.run_variance(redrawn)
        cases = {"fixed - base": (fixed, rf, base[None, :], verdict.UNTRAINED),
                 "redrawn - base": (redrawn, rr, base[None, :], verdict.UNTRAINED),
                 "fixed - redrawn": (fixed, rf, redrawn, rr)}
        for key, (xa, ra, xb, rb) in cases.items():
            d = verdict.difference("a", xa, "b", xb, run_a=ra, run_b=rb, n_boot=0)
            cover[key] += d.ci_low <= truth[key] <= d.ci_high
            prompt_only[key] += abs(d.estimate - truth[key]) <= 1.96 * d.se_prompts
    rates = {k: v / sims for k, v in cover.items()}
    assert all(0.93 <= r <= 0.985 for r in rates.values()), rates  # neither too narrow nor too wide
    assert prompt_only["redrawn - base"] / sims < 0.9  # without the run part the redrawn arm is overconfident


# -- the bootstrap beside it ----------------------------------------------------------------------------


def test_bootstrap_roughly_agrees_with_welch_and_is_deterministic():
    rng = np.random.default_rng(7)
    base, fixed, redrawn = _experiment(rng, 512, "normal")
    d = verdict.difference("fixed", fixed, "redrawn", redrawn)
    assert d.boot_low < d.estimate < d.boot_high
    boot_se = (d.boot_high - d.boot_low) / (2 * 1.959964)
    assert boot_se == pytest.approx(d.se, rel=0.15)  # same variance parts; percentiles, not t, in the tails
    assert abs(d.boot_low - d.ci_low) < 0.25 * (d.ci_high - d.ci_low)
    assert verdict.difference("fixed", fixed, "redrawn", redrawn) == d  # seeded
    other = verdict.difference("fixed", fixed, "redrawn", redrawn, seed=1)
    assert other.boot_low != d.boot_low and other.boot_low == pytest.approx(d.boot_low, abs=0.2 * d.se)
    vs_base = verdict.difference("fixed", fixed, "base", base[None, :], run_b=verdict.UNTRAINED, n_boot=0)
    assert vs_base.boot_low is None and vs_base.boot_high is None


def test_bootstrap_of_prompts_alone_is_a_paired_bootstrap():
    d = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    low, high = verdict.bootstrap(d, [], n_boot=20000, seed=0)
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert (high - low) / (2 * 1.959964) == pytest.approx(se, rel=0.1) and low < d.mean() < high


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(2, 8), n=st.integers(2, 40),
       shift=st.floats(-5, 5), scale=st.floats(0.1, 10))
@settings(max_examples=60, deadline=None)
def test_run_variance_ignores_prompt_effects_and_scales(seed, k, n, shift, scale):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (k, n)) + rng.normal(0, 1, (k, 1))
    rv = verdict.run_variance(x)
    assert rv.var >= 0 and rv.df >= 0 and rv.effects.shape == (k,)
    moved = verdict.run_variance(scale * x + shift + rng.normal(0, 3, (1, n)))  # prompt difficulty cancels
    assert moved.var == pytest.approx(scale**2 * rv.var, rel=1e-6, abs=1e-9)
    assert verdict.run_variance(x[rng.permutation(k)][:, rng.permutation(n)]).var == pytest.approx(rv.var)


@given(seed=st.integers(0, 2**32 - 1), ka=st.integers(1, 6), kb=st.integers(1, 6), n=st.integers(3, 60))
@settings(max_examples=60, deadline=None)
def test_difference_parts_add_up_and_swap_sides(seed, ka, kb, n):
    rng = np.random.default_rng(seed)
    xa, xb = rng.normal(0, 1, (ka, n)) + rng.normal(0, 0.5, (ka, 1)), rng.normal(0, 1, (kb, n))
    d = verdict.difference("a", xa, "b", xb, n_boot=200)
    assert d.se**2 == pytest.approx(d.se_runs**2 + d.se_prompts**2)
    assert d.ci_low <= d.estimate <= d.ci_high and d.boot_low <= d.boot_high
    assert d.df > 0
    e = verdict.difference("b", xb, "a", xa, n_boot=0)
    assert e.estimate == pytest.approx(-d.estimate) and e.se == pytest.approx(d.se) and e.df == pytest.approx(d.df)
    assert e.p_value == pytest.approx(d.p_value)


def test_gate_fails_when_random_does_not_beat_the_base_and_the_verdict_is_void():
    rng = np.random.default_rng(2)
    n = 100
    base = rng.uniform(0, 1, n)
    runs = {f"random-s{i}": base + rng.normal(0, 0.01, n) for i in range(4)}
    runs |= {"top-t0": base + 0.2, "top-t1": base + 0.21, "bottom": base - 0.1}
    groups = {"top": ["top-t0", "top-t1"], "random": [f"random-s{i}" for i in range(4)], "bottom": ["bottom"]}
    out = verdict.analyse(runs, base, groups, primary=("top", "random"), gate_arm="random")
    assert out["gate"]["passed"] is False and out["void"] is True
    assert out["primary"]["estimate"] > 0.15  # computed, but void
    learned = {k: v + (0.3 if k.startswith("random") else 0.0) for k, v in runs.items()}
    ok = verdict.analyse(learned, base, groups, primary=("top", "random"), gate_arm="random")
    assert ok["gate"]["passed"] is True and ok["void"] is False
    (sec,) = ok["secondary"]
    assert sec["b"] == "bottom" and sec["p_holm"] >= sec["p_value"]


def test_analyse_states_the_method_and_each_arms_run_sd():
    rng = np.random.default_rng(8)
    n = 64
    base = rng.uniform(0, 1, n)
    runs = {f"random-s{i}": base + 0.3 + rng.normal(0, 0.05) + rng.normal(0, 0.01, n) for i in range(4)}
    runs |= {"top-t0": base + 0.4, "top-t1": base + 0.42, "usable": base + 0.35, "bottom": base.copy()}
    groups = {"top": ["top-t0", "top-t1"], "random": [f"random-s{i}" for i in range(4)], "usable": ["usable"],
              "bottom": ["bottom"]}
    out = verdict.analyse(runs, base, groups, primary=("top", "random"), gate_arm="random",
                          untrained=frozenset({"bottom"}))
    assert out["method"] == verdict.METHOD and "Welch-Satterthwaite" in out["method"] and "bootstrap" in out["method"]
    sd = out["run_sd"]
    assert sd["top"]["source"] == "estimated" and sd["top"]["sd"] == pytest.approx(math.sqrt(0.02**2 / 2))
    assert sd["random"]["source"] == "estimated" and sd["random"]["sd"] > 3 * sd["top"]["sd"]
    assert sd["usable"] == {**sd["random"], "runs": 1, "source": "fallback", "donor": "random"}
    assert sd["bottom"] == {"sd": 0.0, "df": None, "runs": 1, "source": "untrained", "donor": None}
    assert out["vs_base"]["bottom"]["se_runs"] == 0.0 and out["vs_base"]["bottom"]["estimate"] == 0.0
    pr = out["primary"]
    assert pr["se_runs"] == pytest.approx(math.sqrt(sd["top"]["sd"] ** 2 / 2 + sd["random"]["sd"] ** 2 / 4))
    assert pr["mde"] > 0 and 0 <= pr["power"] <= 1 and pr["boot_low"] < pr["estimate"] < pr["boot_high"]
    assert verdict.analyse(runs, base, groups, primary=("top", "random"), gate_arm="random",
                           untrained=frozenset({"bottom"})) == out  # deterministic, bootstrap included


def test_analyse_is_fast_at_full_size():
    """16 runs x 512 prompts, every comparison with its 2000-draw bootstrap: the report builds in well under
    a second (loose bound: the machine may be busy)."""
    import time

    rng = np.random.default_rng(9)
    n = 512
    base = rng.uniform(0, 1, n)
    names = {"top": 4, "random": 8, "std": 2, "usable": 1, "bottom": 1}
    groups = {a: [f"{a}-{i}" for i in range(k)] for a, k in names.items()}
    runs = {r: base + rng.normal(0, 0.2, n) for rs in groups.values() for r in rs}
    start = time.perf_counter()
    out = verdict.analyse(runs, base, groups, primary=("top", "random"), gate_arm="random",
                          untrained=frozenset({"bottom"}))
    assert time.perf_counter() - start < 3.0 and len(out["secondary"]) == 3


def test_aa_floor_reports_identical_answers():
    a = np.array([0.5, 1.0, 0.0, 1.0])
    b = np.array([0.5, 1.0, 1.0, 1.0])
    out = verdict.aa_floor(a, b, np.array([True, True, False, True]))
    assert out["identical_answers"] == 0.75 and out["estimate"] == pytest.approx(-0.25)


def test_rank_reliability_is_perfect_for_planted_spread_and_chance_for_noise():
    rng = np.random.default_rng(3)
    prompts, n = 200, 8
    spread = np.where(np.arange(prompts) < 50, 3.0, 0.0)  # 50 prompts with spread, the rest tied
    rewards = spread[:, None] * rng.standard_normal((prompts, n))
    rr = analysis.rank_reliability(rewards, 50, scale=1.0)
    assert [r["samples"] for r in rr] == [2, 3, 4]
    assert rr[-1]["overlap"] == 1.0 and rr[-1]["chance"] == 0.25
    tied = analysis.rank_reliability(np.zeros((prompts, n)), 50, scale=1.0, sizes=[4])
    assert tied[0]["overlap"] == pytest.approx(0.25)  # every prompt tied: expected overlap is chance


def test_resampled_reliability_grows_with_samples_and_matches_planted_truth():
    rng = np.random.default_rng(4)
    prompts, n = 120, 8
    p_success = rng.uniform(0, 1, prompts)
    rewards = (rng.uniform(size=(prompts, n)) < p_success[:, None]).astype(float)
    out = analysis.resampled_reliability(rewards, 30, scale=4.0, sizes=[4, 8, 16], draws=20)
    overlaps = [r["overlap"] for r in out]
    assert overlaps[0] < overlaps[2] and all(0.25 <= o <= 1 for o in overlaps)
    tied = analysis.resampled_reliability(np.ones((prompts, n)), 30, scale=4.0, sizes=[8], draws=5)
    assert tied[0]["overlap"] == pytest.approx(0.25)
