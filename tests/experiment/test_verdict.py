"""The verdict's statistics: Student t without scipy, Holm, run + prompt variance, power, gate, reliability."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvar.experiment import verdict

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


def test_pooled_run_variance_uses_only_arms_with_several_runs():
    a = np.array([[1.0, 1.0], [3.0, 3.0]])  # run means 1 and 3: variance 2, df 1
    b = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 3.0]])  # means 0, 0, 3: ss 6, df 2
    single = np.array([[100.0, -100.0]])
    var, df = verdict.pooled_run_variance({"a": a, "b": b, "single": single})
    assert df == 3 and var == pytest.approx((2.0 + 6.0) / 3)
    assert math.isnan(verdict.pooled_run_variance({"single": single})[0])


def _arm(rng, mean, runs, n, run_sd, prompt_effect):
    return np.stack([mean + rng.normal(0, run_sd) + prompt_effect + rng.normal(0, 0.05, n) for _ in range(runs)])


def test_run_noise_enters_the_interval_and_a_planted_effect_is_found():
    rng = np.random.default_rng(0)
    n = 400
    prompts = rng.normal(0, 0.3, n)  # shared difficulty: cancels in the pairing
    top = _arm(rng, 0.60, 2, n, 0.02, prompts)
    rnd = _arm(rng, 0.50, 4, n, 0.02, prompts)
    var, df = verdict.pooled_run_variance({"top": top, "random": rnd})
    d = verdict.difference("top", top, "random", rnd, run_var=var, run_df=df)
    assert d.ci_low < 0.10 < d.ci_high and d.ci_low > 0
    assert d.se_runs > d.se_prompts  # with 400 prompts, seeds dominate, as the design expects
    no_runs = verdict.difference("top", top, "random", rnd, run_var=math.nan, run_df=0)
    assert no_runs.se < d.se  # ignoring seeds would overstate precision
    assert d.mde == pytest.approx((stats.t.ppf(0.975, d.df) + stats.t.ppf(0.8, d.df)) * d.se, rel=1e-6)
    assert 0.8 < d.power <= 1 and d.p_value < 0.05


def test_power_is_about_80_percent_at_the_mde():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (1, 50))
    d = verdict.difference("a", x, "b", np.zeros((1, 50)), run_var=math.nan, run_df=0, trained=(False, False))
    shifted = x - x.mean() + d.mde  # same spread, mean at the MDE
    e = verdict.difference("a", shifted, "b", np.zeros((1, 50)), run_var=math.nan, run_df=0, trained=(False, False))
    assert e.power == pytest.approx(0.8, abs=0.01)


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
    rr = verdict.rank_reliability(rewards, 50, scale=1.0)
    assert [r["samples"] for r in rr] == [2, 3, 4]
    assert rr[-1]["overlap"] == 1.0 and rr[-1]["chance"] == 0.25
    tied = verdict.rank_reliability(np.zeros((prompts, n)), 50, scale=1.0, sizes=[4])
    assert tied[0]["overlap"] == pytest.approx(0.25)  # every prompt tied: expected overlap is chance


def test_resampled_reliability_grows_with_samples_and_matches_planted_truth():
    rng = np.random.default_rng(4)
    prompts, n = 120, 8
    p_success = rng.uniform(0, 1, prompts)
    rewards = (rng.uniform(size=(prompts, n)) < p_success[:, None]).astype(float)
    out = verdict.resampled_reliability(rewards, 30, scale=4.0, sizes=[4, 8, 16], draws=20)
    overlaps = [r["overlap"] for r in out]
    assert overlaps[0] < overlaps[2] and all(0.25 <= o <= 1 for o in overlaps)
    tied = verdict.resampled_reliability(np.ones((prompts, n)), 30, scale=4.0, sizes=[8], draws=5)
    assert tied[0]["overlap"] == pytest.approx(0.25)
