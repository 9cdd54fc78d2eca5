import math
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvar.core.winrate import (
    HARD,
    LC_L2_INTERCEPT,
    LC_L2_LENGTH,
    LENGTH_CONTROLLED,
    SOFT,
    fit_length_glm,
    hard_judgements,
    is_extreme_change,
    length_controlled_win_rate,
    length_feature,
    paired_difference,
    sigmoid,
    soft_judgements,
    win_rate,
)

score = st.floats(-5, 5, allow_nan=False, width=64)
pairs = st.lists(st.tuples(score, score), min_size=1, max_size=40)
lengths = st.integers(1, 500)
pairs_with_lengths = st.lists(st.tuples(score, score, lengths, lengths), min_size=2, max_size=40)


def split(rows):
    return [np.array(c, dtype=np.float64) for c in zip(*rows, strict=True)]


# -- hard and soft win rates ----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(score, min_size=1, max_size=60))
def test_identical_scores_give_exactly_half_with_all_ties(a):
    a = np.array(a)
    wr = win_rate(a, a.copy(), n_boot=50)
    assert wr.estimate == 0.5 and wr.ci_low == 0.5 and wr.ci_high == 0.5
    assert (wr.n, wr.n_ties, wr.wins, wr.losses) == (a.size, a.size, 0, 0)
    assert wr.method == HARD
    soft = win_rate(a, a.copy(), n_boot=50, soft_scale=10.0)
    assert soft.estimate == 0.5 and soft.method == SOFT


@settings(max_examples=100, deadline=None)
@given(pairs, st.integers(0, 2**32 - 1))
def test_swapping_a_and_b_mirrors_estimate_and_interval(rows, seed):
    a, b = split(rows)
    for scale in (None, 3.0):
        ab = win_rate(a, b, n_boot=50, seed=seed, soft_scale=scale)
        ba = win_rate(b, a, n_boot=50, seed=seed, soft_scale=scale)
        assert ba.estimate == pytest.approx(1 - ab.estimate, abs=1e-12)
        assert ba.ci_low == pytest.approx(1 - ab.ci_high, abs=1e-12)
        assert ba.ci_high == pytest.approx(1 - ab.ci_low, abs=1e-12)
        assert (ba.wins, ba.losses, ba.n_ties) == (ab.losses, ab.wins, ab.n_ties)


@settings(max_examples=100, deadline=None)
@given(pairs, st.floats(0.01, 3.0))
def test_soft_rate_lies_strictly_inside_zero_one(rows, scale):
    a, b = split(rows)
    wr = win_rate(a, b, n_boot=20, soft_scale=scale)
    assert 0 < wr.estimate < 1
    assert 0 < wr.ci_low <= wr.ci_high < 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-50, 50), st.integers(-50, 50)), min_size=1, max_size=40))
def test_soft_rate_tends_to_hard_rate_as_scale_grows(rows):
    a, b = (x / 10 for x in split(rows))  # gaps are 0 or at least 0.1
    hard = hard_judgements(a, b)
    gaps = [np.abs(soft_judgements(a, b, s) - hard) for s in (1.0, 10.0, 100.0, 1e4)]
    assert all((later <= earlier).all() for earlier, later in pairwise(gaps))
    assert abs(win_rate(a, b, n_boot=20, soft_scale=1e4).estimate - win_rate(a, b, n_boot=20).estimate) < 1e-12


@settings(max_examples=100, deadline=None)
@given(pairs, st.integers(0, 2**32 - 1), st.sampled_from([None, 0.5, 10.0]))
def test_bootstrap_is_deterministic_for_a_seed_and_contains_the_estimate(rows, seed, scale):
    a, b = split(rows)
    one = win_rate(a, b, n_boot=200, seed=seed, soft_scale=scale)
    two = win_rate(a, b, n_boot=200, seed=seed, soft_scale=scale)
    assert one == two
    assert one.ci_low - 1e-12 <= one.estimate <= one.ci_high + 1e-12
    assert 0 <= one.ci_low <= one.ci_high <= 1


def test_against_itself_the_interval_contains_half_and_a_better_model_excludes_it():
    rng = np.random.default_rng(0)
    a = rng.normal(size=400)
    noisy_self = a + rng.normal(scale=1e-3, size=400)  # the same model, judged with a little noise
    wr = win_rate(a, noisy_self, n_boot=1000)
    assert wr.ci_low < 0.5 < wr.ci_high
    better = win_rate(a + 0.5, a + rng.normal(scale=0.3, size=400), n_boot=1000)
    assert better.ci_low > 0.5


def test_seed_changes_the_resamples_but_not_the_estimate():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=50), rng.normal(size=50)
    one, two = win_rate(a, b, seed=1, soft_scale=2.0), win_rate(a, b, seed=2, soft_scale=2.0)
    assert one.estimate == two.estimate
    assert (one.ci_low, one.ci_high) != (two.ci_low, two.ci_high)


def test_hard_judgements_values():
    np.testing.assert_array_equal(hard_judgements([1, 0, 2], [0, 0, 3]), [1.0, 0.5, 0.0])


def test_sigmoid_is_accurate_in_both_tails():
    z = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    got = sigmoid(z)
    assert got[0] == 0.0 and got[-1] == 1.0 and got[2] == 0.5
    assert got[1] == pytest.approx(math.exp(-40), rel=1e-12)


@pytest.mark.parametrize(
    "a, b, kwargs, match",
    [
        ([], [], {}, "no prompts"),
        ([1.0], [1.0, 2.0], {}, "differ in length"),
        ([1.0, math.nan], [1.0, 2.0], {}, "finite"),
        ([[1.0]], [[1.0]], {}, "1-D"),
        ([1.0], [2.0], {"n_boot": 5}, "n_boot"),
        ([1.0], [2.0], {"confidence": 1.0}, "confidence"),
        ([1.0], [2.0], {"soft_scale": 0.0}, "soft_scale"),
        ([1.0], [2.0], {"soft_scale": math.inf}, "soft_scale"),
    ],
)
def test_bad_input_is_refused(a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        win_rate(a, b, **kwargs)


# -- paired difference ----------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(pairs, st.integers(0, 2**32 - 1))
def test_paired_difference_is_the_mean_gap_and_antisymmetric(rows, seed):
    a, b = split(rows)
    ab = paired_difference(a, b, n_boot=100, seed=seed)
    ba = paired_difference(b, a, n_boot=100, seed=seed)
    assert ab.estimate == pytest.approx(float(np.mean(a - b)), abs=1e-12)
    assert ba.estimate == pytest.approx(-ab.estimate, abs=1e-12)
    assert ba.ci_low == pytest.approx(-ab.ci_high, abs=1e-12)
    assert ab.ci_low - 1e-12 <= ab.estimate <= ab.ci_high + 1e-12
    assert ab == paired_difference(a, b, n_boot=100, seed=seed)


def test_pairing_gives_a_narrower_interval_than_the_prompt_spread():
    rng = np.random.default_rng(2)
    difficulty = rng.normal(scale=3.0, size=300)  # shared by both arms: pairing cancels it
    a = difficulty + 0.2 + rng.normal(scale=0.1, size=300)
    b = difficulty + rng.normal(scale=0.1, size=300)
    d = paired_difference(a, b, n_boot=1000)
    assert d.ci_low > 0.15 and d.ci_high < 0.25
    assert paired_difference(a, a.copy(), n_boot=100).as_dict()["estimate"] == 0.0


# -- length-controlled win rate -------------------------------------------------------------------


def length_design(n: int, seed: int, share_longer: float = 0.8):
    """Baseline lengths 50-400; a is longer on ``share_longer`` of prompts by 5-200 characters."""
    rng = np.random.default_rng(seed)
    lb = rng.integers(50, 400, n).astype(float)
    longer = rng.random(n) < share_longer
    gap = rng.integers(5, 200, n)
    return rng, np.where(longer, lb + gap, lb - gap), lb


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lc_removes_a_preference_driven_by_length_alone(seed):
    # The judge prefers the longer answer and nothing else: P(a wins) = sigmoid(6 tanh(gap / std)).
    # Gumbel noise on both scores makes exactly that probability (their difference is logistic).
    n = 4000
    rng, la, lb = length_design(n, seed)
    a = 6.0 * length_feature(la, lb) + rng.gumbel(size=n)
    b = rng.gumbel(size=n)
    raw = win_rate(a, b, n_boot=20).estimate
    lc = length_controlled_win_rate(a, b, la, lb, n_boot=200, seed=seed)
    assert raw > 0.7
    assert abs(lc.estimate - 0.5) < 0.1
    assert lc.ci_low < 0.5 < lc.ci_high
    assert lc.method == LENGTH_CONTROLLED


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lc_matches_the_raw_rate_when_quality_drives_preference(seed):
    n = 2000
    rng, la, lb = length_design(n, seed)
    a = 0.6 + rng.gumbel(size=n)  # better on every prompt, whatever the length
    b = rng.gumbel(size=n)
    raw = win_rate(a, b, n_boot=20).estimate
    lc = length_controlled_win_rate(a, b, la, lb, n_boot=200, seed=seed)
    assert raw > 0.6
    assert abs(lc.estimate - raw) < 0.03


def test_lc_on_separable_length_judgements_moves_halfway_on_the_logit_scale():
    # Documented limit: a wins exactly when longer, all gaps equal: no finite MLE, and the ridge
    # limit is sigmoid(logit(q) / 2) for a share q of longer answers, not 1/2.
    n = 2000
    rng, _, lb = length_design(n, 3)
    longer = rng.random(n) < 0.8
    la = np.where(longer, lb + 100, lb - 100)
    a, b = longer.astype(float), np.full(n, 0.5)
    q = longer.mean()
    raw = win_rate(a, b, n_boot=20).estimate
    lc = length_controlled_win_rate(a, b, la, lb, n_boot=50)
    assert raw == pytest.approx(q)
    assert lc.estimate == pytest.approx(1 / (1 + math.sqrt((1 - q) / q)), abs=0.01)
    assert 0.5 < lc.estimate < raw


@settings(max_examples=50, deadline=None)
@given(pairs_with_lengths, st.integers(0, 2**32 - 1))
def test_lc_is_symmetric_and_deterministic(rows, seed):
    a, b, la, lb = split(rows)
    ab = length_controlled_win_rate(a, b, la, lb, n_boot=30, seed=seed)
    ba = length_controlled_win_rate(b, a, lb, la, n_boot=30, seed=seed)
    assert ba.estimate == pytest.approx(1 - ab.estimate, abs=1e-7)
    assert ba.ci_low == pytest.approx(1 - ab.ci_high, abs=1e-7)
    assert ab == length_controlled_win_rate(a, b, la, lb, n_boot=30, seed=seed)
    assert 0 < ab.estimate < 1


@settings(max_examples=50, deadline=None)
@given(pairs_with_lengths)
def test_lc_against_itself_is_exactly_half(rows):
    a, _, la, lb = split(rows)
    lc = length_controlled_win_rate(a, a.copy(), la, lb, n_boot=30)
    assert lc.estimate == 0.5 and lc.ci_low == 0.5 and lc.ci_high == 0.5


def test_lc_without_length_differences_is_the_raw_rate():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.3, 1, 300), rng.normal(0, 1, 300)
    same = np.full(300, 120.0)
    raw = win_rate(a, b, n_boot=20).estimate
    lc = length_controlled_win_rate(a, b, same, same, n_boot=50)
    assert lc.estimate == pytest.approx(raw, abs=1e-4)  # only the tiny ridge on theta0 separates them


def test_glm_fit_is_a_stationary_point_of_the_penalised_likelihood():
    rng = np.random.default_rng(5)
    x = np.tanh(rng.normal(size=(3, 500)))
    y = (rng.random((3, 500)) < sigmoid(0.4 + 1.5 * x)).astype(float)
    y[2] = 1.0  # separated row: a wins everything
    t0, t1 = fit_length_glm(y, x)
    r = y - sigmoid(t0[:, None] + t1[:, None] * x)
    np.testing.assert_allclose(r.sum(axis=1) - LC_L2_INTERCEPT * t0, 0, atol=1e-6)
    np.testing.assert_allclose((r * x).sum(axis=1) - LC_L2_LENGTH * t1, 0, atol=1e-6)
    assert np.isfinite(t0).all() and t0[2] > 5


def test_length_feature_guards_a_zero_spread():
    np.testing.assert_array_equal(length_feature([5, 5, 5], [1, 1, 1]), [0, 0, 0])
    np.testing.assert_array_equal(length_feature([5], [1]), [0])
    x = length_feature([3, 1], [1, 3])
    assert x[0] == pytest.approx(-x[1]) and 0 < x[0] < 1


def test_lc_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="lengths"):
        length_controlled_win_rate([1.0, 2.0], [0.0, 1.0], [1.0], [2.0])


def test_extreme_change_rule_matches_alpaca_eval():
    assert is_extreme_change(0.5, 0.2) and is_extreme_change(0.5, 0.8)
    assert not is_extreme_change(0.5, 0.41) and not is_extreme_change(0.5, 0.59)
    assert is_extreme_change(0.2, 0.09) and not is_extreme_change(0.2, 0.11)
