"""Paired arm comparisons and the PVar-vs-std sweep behind the report."""

from __future__ import annotations

import numpy as np
import pytest

from pvar.core.stats import reward_std
from pvar.experiment import analysis


def _judged(ids, scores):
    return analysis.Judged(np.array(ids, dtype=object), np.asarray(scores, float), np.zeros(len(ids)))


def test_aligned_uses_common_prompts_in_one_order():
    judged = {"a": _judged(["p1", "p2", "p3"], [1, 2, 3]), "b": _judged(["p3", "p1"], [30, 10])}
    ids, scores = analysis.aligned(judged)
    assert ids.tolist() == ["p1", "p3"]
    assert scores["a"].tolist() == [1, 3] and scores["b"].tolist() == [10, 30]


def test_clear_difference_is_not_noise_and_shift_is_recovered():
    rng = np.random.default_rng(0)
    hard = rng.normal(size=300)  # prompt difficulty, shared by both arms
    ids = [f"p{i}" for i in range(300)]
    judged = {"top": _judged(ids, hard + 0.05 + rng.normal(scale=0.01, size=300)),
              "other": _judged(ids, hard + rng.normal(scale=0.01, size=300))}
    (c,) = analysis.paired_comparisons(judged, "top", {}, n_boot=500)
    assert c.b == "other" and not c.within_noise
    assert c.difference["estimate"] == pytest.approx(0.05, abs=0.005)
    assert c.head_to_head["estimate"] > 0.95
    # unpaired, the shared difficulty (sd 1) would swamp a 0.05 shift: the pairing is what separates them
    assert c.difference["ci_high"] - c.difference["ci_low"] < 0.01


def test_identical_arms_are_within_noise():
    ids = [f"p{i}" for i in range(50)]
    s = np.random.default_rng(1).normal(size=50)
    (c,) = analysis.paired_comparisons({"a": _judged(ids, s), "b": _judged(ids, s)}, "a", {}, n_boot=200)
    assert c.within_noise and c.difference["estimate"] == 0 and c.head_to_head["estimate"] == 0.5


def test_group_is_compared_through_its_per_prompt_mean():
    ids = ["p0", "p1", "p2", "p3"]
    judged = {"top": _judged(ids, [1, 1, 1, 1]), "r-s0": _judged(ids, [0, 2, 0, 2]),
              "r-s1": _judged(ids, [2, 0, 2, 0])}
    comps = analysis.paired_comparisons(judged, "top", {"r": ["r-s0", "r-s1"]}, n_boot=100)
    assert [c.b for c in comps] == ["r-s0", "r-s1", "r (mean of 2)"]
    pooled = comps[-1]
    assert pooled.difference["estimate"] == 0 and pooled.difference["ci_low"] == pooled.difference["ci_high"] == 0


def test_missing_focus_gives_nothing():
    assert analysis.paired_comparisons({"a": _judged(["p"], [1])}, "top", {}) == []


def test_top_ids_break_ties_by_id_and_skip_nan():
    ids = np.array(["c", "a", "b", "d"], dtype=object)
    assert analysis.top_ids(ids, np.array([1.0, 1.0, 0.5, np.nan]), 2) == {"a", "c"}


def test_scale_sweep_agrees_with_std_at_small_scale():
    rng = np.random.default_rng(2)
    rewards = rng.normal(size=(200, 4)) * rng.uniform(0.01, 1, size=(200, 1))
    pool = analysis.Pool(np.array([f"p{i}" for i in range(200)], dtype=object), np.zeros(200),
                         reward_std(rewards), rewards)
    sweep = analysis.scale_sweep(pool, 50, scales=(0.01, 100.0))
    small, large = sweep
    assert small["spearman"] > 0.97 and small["top_overlap"] > 0.85  # tanh² ≈ quadratic: PVar ~ variance
    assert large["spearman"] < small["spearman"]  # saturation reorders prompts with big gaps


def test_overlap():
    assert analysis.overlap({"a", "b"}, {"b", "c"}) == 0.5
    assert np.isnan(analysis.overlap(set(), {"a"}))


def test_same_answer_in_two_arms_ties_exactly():
    ids = ["p0", "p1"]
    a = analysis.Judged(np.array(ids, dtype=object), np.array([0.5, 0.7]), np.zeros(2),
                        np.array(["same", "x"], dtype=object))
    b = analysis.Judged(np.array(ids, dtype=object), np.array([0.5 + 1e-9, 0.6]), np.zeros(2),
                        np.array(["same", "y"], dtype=object))
    _, scores = analysis.aligned({"a": a, "b": b})
    assert scores["b"].tolist() == [0.5, 0.6]  # the re-scored identical answer takes a's score
    (c,) = analysis.paired_comparisons({"a": a, "b": b}, "a", {}, n_boot=50)
    assert c.head_to_head["n_ties"] == 1 and c.head_to_head["wins"] == 1


def test_read_judgements_picks_up_answers(tmp_path):
    (tmp_path / "judgements.jsonl").write_text('{"prompt_id": "q", "policy_score": 0.1, "baseline_score": 0.2}\n')
    assert analysis.read_judgements(tmp_path).texts is None
    (tmp_path / "outputs_policy.jsonl").write_text('{"prompt_id": "q", "output": "hi"}\n')
    j = analysis.read_judgements(tmp_path)
    assert j.texts.tolist() == ["hi"] and j.policy.tolist() == [0.1] and j.baseline.tolist() == [0.2]
