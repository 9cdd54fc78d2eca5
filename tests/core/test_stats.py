import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvar.core.stats import (
    preference_variance,
    pvar_interval,
    reward_mean,
    reward_range,
    reward_stats,
    reward_std,
    spearman,
)


def brute_pvar(rewards, scale=1.0):
    """Reference: the DESIGN formula over ordered pairs, one prompt, plain Python."""
    r = [float(x) for x in rewards if not math.isnan(x)]
    n = len(r)
    if n < 2:
        return math.nan
    total = sum(
        (1.0 / (1.0 + math.exp(-scale * (r[i] - r[j]))) - 0.5) ** 2
        for i in range(n) for j in range(n) if i != j
    )
    return total / (n * (n - 1))


reward = st.floats(-20, 20, allow_nan=False, width=64)
row = st.lists(reward, min_size=0, max_size=9)
maybe_nan_row = st.lists(st.one_of(reward, st.just(math.nan)), min_size=0, max_size=9)
scale = st.floats(0.05, 5.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(maybe_nan_row, min_size=1, max_size=12), scale)
def test_matches_brute_force_on_ragged_rows_with_nan(rows, s):
    got = preference_variance(rows, s)
    want = np.array([brute_pvar(r, s) for r in rows])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(reward, min_size=2, max_size=9), scale, st.randoms(use_true_random=False))
def test_permutation_invariant(r, s, rnd):
    shuffled = list(r)
    rnd.shuffle(shuffled)
    a, b = preference_variance([r, shuffled], s)
    assert a == pytest.approx(b, rel=1e-12, abs=1e-15)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=9), st.floats(-100, 100), scale)
def test_shift_invariant(r, c, s):
    a, b = preference_variance([r, [x + c for x in r]], s)
    assert a == pytest.approx(b, rel=1e-6, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(reward, min_size=2, max_size=9), scale)
def test_range_is_quarter_open(r, s):
    (p,) = preference_variance([r], s)
    assert 0.0 <= p <= 0.25
    gap = (max(r) - min(r)) * s
    if gap < 15:  # tanh saturates to exactly 1.0 in float64 only beyond this
        assert p < 0.25


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=9), st.floats(0.05, 3), st.floats(1.01, 3))
def test_monotone_in_scale(r, s, factor):
    lo, hi = preference_variance([r], s)[0], preference_variance([r], s * factor)[0]
    assert hi >= lo - 1e-15


def test_order_dependent_np_var_over_unordered_pairs_differs():
    """The naive estimator depends on response order; ours must not (DESIGN §1)."""
    def naive(r):
        p = [1 / (1 + math.exp(-(r[i] - r[j]))) for i in range(len(r)) for j in range(i + 1, len(r))]
        return float(np.var(p))

    r, swapped = [0.0, 1.0, 3.0], [1.0, 0.0, 3.0]
    assert naive(r) != pytest.approx(naive(swapped))
    assert preference_variance([r])[0] == pytest.approx(preference_variance([swapped])[0])


def test_fewer_than_two_valid_is_nan_never_zero():
    p = preference_variance([[1.0], [np.nan, 2.0], [], [1.0, 1.0]])
    assert np.isnan(p[:3]).all()
    assert p[3] == 0.0


def test_2d_array_and_float32_keep_values():
    x = np.random.default_rng(0).normal(size=(50, 6))
    np.testing.assert_allclose(preference_variance(x.astype(np.float32)), preference_variance(x), rtol=1e-5)
    np.testing.assert_allclose(preference_variance(x), [brute_pvar(r) for r in x], rtol=1e-10)


def test_chunk_boundaries_do_not_change_results():
    x = np.random.default_rng(1).normal(size=(40_000, 5))
    full = preference_variance(x)
    parts = np.concatenate([preference_variance(x[:12_345]), preference_variance(x[12_345:])])
    np.testing.assert_array_equal(full, parts)


@pytest.mark.parametrize("bad", [[[1.0, np.inf]], [[-np.inf, 0.0]]])
def test_infinite_reward_is_an_error(bad):
    with pytest.raises(ValueError, match="infinite"):
        preference_variance(bad)


@pytest.mark.parametrize("bad_scale", [0.0, -1.0, np.nan, np.inf])
def test_bad_scale_is_an_error(bad_scale):
    with pytest.raises(ValueError, match="scale"):
        preference_variance([[0.0, 1.0]], bad_scale)


def test_flat_list_is_ambiguous():
    with pytest.raises(ValueError, match="wrap"):
        preference_variance([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="2-D"):
        preference_variance(np.array([1.0, 2.0]))


def test_small_gap_approximation_matches_reward_variance():
    """PVar ~ s^2 Var(r) / 8 for small gaps (with the unbiased pair normalisation n/(n-1))."""
    r = np.random.default_rng(2).normal(scale=0.01, size=(1, 8))
    approx = np.var(r) * 8 / 7 / 8
    assert preference_variance(r)[0] == pytest.approx(approx, rel=1e-3)


@settings(max_examples=100, deadline=None)
@given(st.lists(maybe_nan_row, min_size=1, max_size=10))
def test_baselines_against_numpy(rows):
    s = reward_stats(rows)
    for i, r in enumerate(rows):
        v = np.array([x for x in r if not math.isnan(x)])
        assert s.n_valid[i] == v.size
        if v.size < 2:
            assert np.isnan([s.reward_mean[i], s.reward_std[i], s.reward_range[i]]).all()
        else:
            assert s.reward_mean[i] == pytest.approx(v.mean(), abs=1e-9)
            assert s.reward_std[i] == pytest.approx(v.std(), abs=1e-9)
            assert s.reward_range[i] == pytest.approx(v.max() - v.min(), abs=1e-9)


def test_single_statistic_functions_agree_with_reward_stats():
    x = [[1.0, 2.0, 4.0], [0.0, np.nan, 1.0]]
    s = reward_stats(x)
    np.testing.assert_array_equal(reward_mean(x), s.reward_mean)
    np.testing.assert_array_equal(reward_std(x), s.reward_std)
    np.testing.assert_array_equal(reward_range(x), s.reward_range)


# -- interval ---------------------------------------------------------------------------------------


def test_interval_brackets_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(3)
    small = rng.normal(size=(400, 4))
    large = rng.normal(size=(400, 64))
    lo_s, hi_s = pvar_interval(small)
    lo_l, hi_l = pvar_interval(large)
    assert np.all(lo_s <= hi_s)
    assert np.median(hi_l - lo_l) < 0.5 * np.median(hi_s - lo_s)
    p = preference_variance(large)
    assert np.mean((lo_l <= p) & (p <= hi_l)) > 0.9


def test_interval_bootstrap_matches_explicit_resampling_distribution():
    """The matrix-product bootstrap equals resampling responses and recomputing PVar (x n/(n-1))."""
    r = np.array([[0.0, 0.3, 1.2, 2.0, 2.1]])
    n = r.shape[1]
    rng = np.random.default_rng(4)
    boots = [preference_variance(r[:, rng.integers(0, n, n)])[0] * n / (n - 1) for _ in range(4000)]
    lo, hi = pvar_interval(r, n_boot=4000)
    assert lo[0] == pytest.approx(np.quantile(boots, 0.025), abs=0.01)
    assert hi[0] == pytest.approx(np.quantile(boots, 0.975), abs=0.01)


@settings(max_examples=50, deadline=None)
@given(st.lists(reward, min_size=2, max_size=8), st.randoms(use_true_random=False))
def test_interval_is_permutation_invariant_and_seeded(r, rnd):
    shuffled = list(r)
    rnd.shuffle(shuffled)
    a = pvar_interval([r, shuffled], seed=7)
    b = pvar_interval([r, shuffled], seed=7)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0][0] == pytest.approx(a[0][1], abs=1e-12)
    assert a[1][0] == pytest.approx(a[1][1], abs=1e-12)


def test_interval_independent_of_batching_and_nan_rows():
    x = np.random.default_rng(5).normal(size=(20_000, 6))
    x[::7, 4:] = np.nan
    lo, _hi = pvar_interval(x)
    lo2 = np.concatenate([pvar_interval(x[:777])[0], pvar_interval(x[777:])[0]])
    np.testing.assert_array_equal(lo, lo2)
    assert np.isnan(pvar_interval([[1.0]])[0][0])


def test_spearman_handles_ties_and_nan():
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 40.0])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1.0)
    a = np.array([1, 2, 2, 3, np.nan, 5.0])
    b = np.array([1, 3, 2, 4, 9.0, 6.0])
    scipy_stats = pytest.importorskip("scipy.stats")
    want = scipy_stats.spearmanr(a[[0, 1, 2, 3, 5]], b[[0, 1, 2, 3, 5]]).statistic
    assert spearman(a, b) == pytest.approx(want)
