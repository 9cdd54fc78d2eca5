import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvar.core.pairs import all_pairs, best_random, best_worst
from pvar.core.seeding import prompt_seed, prompt_uniforms


def test_best_worst_skips_ties_and_short_rows():
    r = [[1.0, 3.0, 2.0, np.nan], [2.0, 2.0], [5.0], [0.0, 1.0, 2.0, 3.0], [np.nan, 4.0, 1.0]]
    p = best_worst(r)
    assert p.prompt.tolist() == [0, 3, 4]
    assert p.chosen.tolist() == [1, 3, 1]
    assert p.rejected.tolist() == [0, 0, 2]


def test_best_random_picks_strictly_lower_uniformly():
    r = np.array([[5.0, 1.0, 2.0, 3.0, 5.0]])
    seen = {int(best_random(r, np.array([u])).rejected[0]) for u in np.linspace(0, 0.999, 50)}
    assert seen == {1, 2, 3}  # never the tied best (index 4)
    assert best_random(r, np.array([0.0])).chosen.tolist() == [0]


def test_best_random_needs_one_uniform_per_prompt():
    with pytest.raises(ValueError, match="one uniform per prompt"):
        best_random([[1.0, 2.0]], np.array([0.1, 0.2]))


def test_all_pairs_orders_by_gap_and_caps():
    p = all_pairs([[1.0, 3.0, 2.0, np.nan]], max_per_prompt=2)
    assert list(zip(p.chosen.tolist(), p.rejected.tolist(), strict=True)) == [(1, 0), (1, 2)]
    assert len(all_pairs([[1.0, 1.0], [0.0, 1.0, 2.0]], max_per_prompt=10)) == 3


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.one_of(st.integers(1, 5).map(float), st.just(float("nan"))), max_size=6),
                min_size=1, max_size=8))
def test_every_rule_prefers_higher_reward(rows):
    width = max((len(r) for r in rows), default=0)
    x = np.array([r + [np.nan] * (width - len(r)) for r in rows]) if width else np.zeros((len(rows), 0))
    u = np.linspace(0, 0.99, len(rows))
    for p in (best_worst(x), best_random(x, u), all_pairs(x, 4)):
        if len(p):
            assert np.all(x[p.prompt, p.chosen] > x[p.prompt, p.rejected])


def test_prompt_seeds_are_stable_and_distinct():
    assert prompt_seed(0, "a") == prompt_seed(0, "a")
    assert prompt_seed(0, "a") != prompt_seed(1, "a") != prompt_seed(0, "b")
    u = prompt_uniforms(3, [f"p{i}" for i in range(2000)])
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.03
