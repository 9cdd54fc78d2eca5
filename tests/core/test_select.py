import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvar.core.select import budget, select_bottom, select_random, select_threshold, select_top


def test_budget_rounds_half_up_caps_and_keeps_one():
    assert budget(10, fraction=0.25) == 3  # 2.5 -> 3
    assert budget(10, fraction=0.01) == 1
    assert budget(10, fraction=1.0) == 10
    assert budget(10, fraction=0.5, count=2) == 2
    assert budget(10, count=50) == 10
    assert budget(0, fraction=0.5) == 0


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_budget_rejects_fraction_outside_unit_interval(bad):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        budget(10, fraction=bad)


def test_top_and_bottom_skip_nan_and_rank():
    s = np.array([0.1, np.nan, 0.5, 0.3, 0.5])
    ids = np.array(["e", "x", "d", "c", "a"])
    assert select_top(s, 2, ids=ids).tolist() == [4, 2]  # tie at 0.5: id "a" before "d"
    assert select_top(s, 10, ids=ids).tolist() == [4, 2, 3, 0]
    assert select_bottom(s, 2, ids=ids).tolist() == [0, 3]


def test_tie_group_at_the_boundary_is_cut_by_id():
    s = np.array([1.0, 0.5, 0.5, 0.5, 0.0])
    ids = np.array(["z", "c", "a", "b", "y"])
    assert select_top(s, 3, ids=ids).tolist() == [0, 2, 3]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 5).map(float), st.just(float("nan"))), min_size=1, max_size=40),
       st.integers(1, 45), st.randoms(use_true_random=False))
def test_top_equals_full_sort_and_ignores_input_order(values, k, rnd):
    s = np.array(values)
    ids = np.array([f"p{i:03d}" for i in range(s.size)])
    got = ids[select_top(s, k, ids=ids)].tolist()
    valid = [(-v, i) for v, i in zip(values, ids, strict=True) if not np.isnan(v)]
    assert got == [i for _, i in sorted(valid)][:k]
    perm = list(range(s.size))
    rnd.shuffle(perm)
    assert ids[perm][select_top(s[perm], k, ids=ids[perm])].tolist() == got


def test_random_is_seeded_order_invariant_and_skips_nan():
    s = np.array([0.1, np.nan, 0.2, 0.3, 0.4, 0.5, 0.6])
    ids = np.array([f"p{i}" for i in range(7)])
    a = ids[select_random(s, 3, seed=1, ids=ids)].tolist()
    assert a == ids[select_random(s, 3, seed=1, ids=ids)].tolist()
    assert "p1" not in a and len(set(a)) == 3
    perm = np.array([6, 2, 0, 5, 1, 3, 4])
    assert ids[perm][select_random(s[perm], 3, seed=1, ids=ids[perm])].tolist() == a
    draws = {tuple(sorted(ids[select_random(s, 3, seed=k, ids=ids)])) for k in range(20)}
    assert len(draws) > 5


def test_random_is_uniform():
    s = np.zeros(10)
    counts = np.zeros(10)
    for seed in range(3000):
        counts[select_random(s, 3, seed=seed)] += 1
    assert counts.min() > 0.8 * 900 and counts.max() < 1.2 * 900


def test_threshold_keeps_scores_at_or_above():
    s = np.array([0.1, np.nan, 0.2, 0.3])
    assert select_threshold(s, 0.2).tolist() == [3, 2]
    assert select_threshold(s, 0.9).tolist() == []
