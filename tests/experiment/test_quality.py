"""experiment.quality by hand: constraint success, guard and length per arm; never-learned types; strata."""

import pytest

from pvar.experiment.quality import answer_profile, composition, metric_scores

GROUPS = {"top": ["top-t0", "top-t1"], "random": ["random-s0"]}


def _row(run, pid, words, guard, gold, **constraints):
    return {"run": run, "prompt_id": pid, "output": " ".join(["w"] * words), "judge_score": gold, "gold": gold,
            "guard": guard, "constraints": constraints}


ROWS = [
    _row("base", "a", 30, 1.0, 0.0, no_comma=False, lowercase=False),
    _row("base", "b", 20, 1.0, 1.0, no_comma=True, lowercase=False),
    _row("base-aa", "a", 30, 1.0, 0.0, no_comma=False, lowercase=False),  # the noise floor: no arm
    _row("top-t0", "a", 10, 0.0, 1.0, no_comma=True, lowercase=False),
    _row("top-t0", "b", 12, 1.0, 1.0, no_comma=True, lowercase=False),
    _row("top-t1", "a", 14, 1.0, 1.0, no_comma=True, lowercase=False),
    _row("top-t1", "b", 16, 1.0, 0.0, no_comma=False, lowercase=True),
    _row("random-s0", "a", 20, 1.0, 0.0, no_comma=False, lowercase=False),
    _row("random-s0", "b", 22, 0.0, 1.0, no_comma=True, lowercase=False),
]


def test_answer_profile_pools_an_arms_runs():
    p = answer_profile(ROWS, GROUPS)
    top = p["arms"]["top"]
    assert top["answers"] == 4 and top["mean_words"] == 13.0 and top["guard_rate"] == 0.75
    assert top["constraints"] == {"lowercase": {"n": 4, "success": 0.25}, "no_comma": {"n": 4, "success": 0.75}}
    assert p["arms"]["base"]["answers"] == 2  # base-aa is not an arm
    assert p["arms"]["random"]["constraints"]["no_comma"]["success"] == 0.5


def test_a_type_no_arm_beats_the_base_on_is_named():
    p = answer_profile(ROWS, GROUPS)
    # lowercase: base 0 %, best arm top 25 % -> learned; no_comma: base 50 %, top 75 % -> learned
    assert p["never_learned"] == []
    flat = [r for r in ROWS if not (r["run"] == "top-t1" and r["prompt_id"] == "b")]
    never = answer_profile(flat, GROUPS)["never_learned"]
    assert never == [{"constraint": "lowercase", "base": 0.0, "best_arm": "top", "best": 0.0}]


def test_metric_scores_gold_times_guard_or_the_judge():
    guarded = metric_scores(ROWS, "gold-guarded")
    assert guarded["top-t0"] == {"a": 0.0, "b": 1.0} and guarded["random-s0"] == {"a": 0.0, "b": 0.0}
    assert metric_scores(ROWS, "judge")["top-t0"] == {"a": 1.0, "b": 1.0}


def test_composition_by_a_column_and_by_the_specs_constraints():
    pool = [{"prompt_id": f"p{i}", "family": "x" if i < 6 else "y"} for i in range(8)]
    got = composition(pool, {"top": ["p0", "p1", "p6", "p7"], "none": None}, "family")
    assert got == {"stratum": "family", "shares": {"pool": {"x": 0.75, "y": 0.25}, "top": {"x": 0.5, "y": 0.5}}}
    spec = '{"task": "format", "constraints": [{"id": "punctuation:no_comma"}]}'
    rows = [{"prompt_id": "a", "reference": spec}, {"prompt_id": "b", "reference": "a plain answer"}]
    shares = composition(rows, {"arm": ["a"]})["shares"]
    assert shares["pool"] == {"": 0.5, "punctuation:no_comma": 0.5} and shares["arm"]["punctuation:no_comma"] == 1.0
    assert sum(shares["arm"].values()) == pytest.approx(1.0)
