import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvar.core.select import (
    apportion,
    budget,
    select_bottom,
    select_random,
    select_stratified,
    select_threshold,
    select_top,
)


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


# ---- stratified ----

# strata of sizes 6, 3, 1; budget 5: quotas 3, 1.5, 0.5, so floors 3, 1, 0 and one slot left for the
# tied remainders 0.5 of "b" and "c": it goes to the larger stratum, "b" (counts 3, 2, 0)
POOL_IDS = np.array(["a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1", "b2", "c0"])
POOL_STRATA = np.array(list("aaaaaabbbc"))
POOL_SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.95, 0.3, 0.2, 0.99])


def _stratified(scores, k):
    return POOL_IDS[select_stratified(scores, POOL_STRATA, k, ids=POOL_IDS)].tolist()


def test_apportion_by_hand():
    assert apportion(np.array([6, 3, 1]), 5).tolist() == [3, 2, 0]
    assert apportion(np.array([6, 3, 1]), 10).tolist() == [6, 3, 1]
    assert apportion(np.array([6, 3, 1]), 1).tolist() == [1, 0, 0]  # quotas 0.6, 0.3, 0.1
    assert apportion(np.array([2, 2, 2]), 4).tolist() == [2, 1, 1]  # equal remainders, equal sizes: the first
    # "b" holds 1: its quota 1.5 saturates it; 4 slots left over sizes 6 and 1 (quotas 24/7, 4/7): 3 and 1
    assert apportion(np.array([6, 3, 1]), 5, capacity=np.array([6, 1, 1])).tolist() == [3, 1, 1]
    # "b" and "c" hold 1 and 0: both saturate at once and "a" takes the other 4
    assert apportion(np.array([6, 3, 1]), 5, capacity=np.array([6, 1, 0])).tolist() == [4, 1, 0]
    assert apportion(np.array([6, 3, 1]), 50, capacity=np.array([2, 1, 0])).tolist() == [2, 1, 0]  # all it has
    assert apportion(np.array([6, 3, 1]), 0).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="counts >= 0"):
        apportion(np.array([3, 1]), 2, capacity=np.array([1]))


def test_stratified_by_hand():
    assert _stratified(POOL_SCORES, 5) == ["b0", "a0", "a1", "a2", "b1"]  # best first
    assert POOL_IDS[select_top(POOL_SCORES, 5, ids=POOL_IDS)].tolist() == ["c0", "b0", "a0", "a1", "a2"]
    no_b0 = POOL_SCORES.copy()
    no_b0[6] = np.nan  # "b" still holds 2 >= its quota 1.5: the same counts, b1 and b2 instead
    assert _stratified(no_b0, 5) == ["a0", "a1", "a2", "b1", "b2"]
    sparse = POOL_SCORES.copy()
    sparse[[6, 7, 9]] = np.nan  # "b" holds 1, "c" none: "a" takes the slots they cannot fill
    assert _stratified(sparse, 5) == ["a0", "a1", "a2", "a3", "b2"]
    assert select_stratified(np.array([]), np.array([]), 3).tolist() == []
    with pytest.raises(ValueError, match="one stratum per score"):
        select_stratified(POOL_SCORES, POOL_STRATA[:3], 2)


def test_stratified_ties_within_a_stratum_follow_top():
    s = np.array([0.5, 0.5, 0.5, 0.1])
    ids = np.array(["z", "c", "a", "b"])
    assert select_stratified(s, np.array(list("xxxy")), 2, ids=ids).tolist() == [2, 1]  # quotas 1.5, 0.5


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"),
                          st.one_of(st.integers(0, 4).map(float), st.just(float("nan")))), min_size=1, max_size=40),
       st.integers(1, 45), st.randoms(use_true_random=False))
def test_stratified_properties(rows, k, rnd):
    strata = np.array([r[0] for r in rows])
    s = np.array([r[1] for r in rows])
    ids = np.array([f"p{i:03d}" for i in range(s.size)])
    got = select_stratified(s, strata, k, ids=ids)
    n_eligible = int((~np.isnan(s)).sum())
    assert got.size == len(set(got.tolist())) == min(k, n_eligible)  # counts sum to the budget
    assert not np.isnan(s[got]).any()
    assert got.tolist() == sorted(got.tolist(), key=lambda i: (-s[i], ids[i]))  # best first
    labels = sorted(set(strata.tolist()))
    size = {g: int((strata == g).sum()) for g in labels}
    cap = {g: int(((strata == g) & ~np.isnan(s)).sum()) for g in labels}
    count = {g: int((strata[got] == g).sum()) for g in labels}
    kk = min(k, n_eligible)
    quota = {g: kk * size[g] / s.size for g in labels}
    for g in labels:
        mine = [(-v, i) for v, i, h in zip(s, ids, strata, strict=True) if h == g and not np.isnan(v)]
        assert sorted(ids[got][strata[got] == g].tolist()) == sorted(i for _, i in sorted(mine)[:count[g]])
        assert min(cap[g], int(quota[g])) <= count[g] <= cap[g]
    if all(quota[g] < cap[g] for g in labels):  # capacity allows: within 1 of the proportional share
        assert all(abs(count[g] - quota[g]) < 1 for g in labels)
    perm = list(range(s.size))
    rnd.shuffle(perm)
    assert ids[perm][select_stratified(s[perm], strata[perm], k, ids=ids[perm])].tolist() == ids[got].tolist()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(0, 30)), min_size=1, max_size=8), st.integers(0, 120))
def test_apportion_properties(pairs, k):
    sizes = np.array([p[0] for p in pairs])
    cap = np.minimum(sizes, [p[1] for p in pairs])
    counts = apportion(sizes, k, capacity=cap)
    assert counts.sum() == min(k, cap.sum()) and (counts >= 0).all() and (counts <= cap).all()
    quota = min(k, cap.sum()) * sizes / sizes.sum()
    assert (counts >= np.minimum(cap, np.floor(quota))).all()  # a capped stratum's slots only add to others
    if (quota < cap).all():
        assert (np.abs(counts - quota) < 1).all()
