"""Arms whose selections come out identical share one training and one set of eval answers."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from pvar.testing import tiny_causal_lm, tiny_reward_model
from tests.experiment.test_run import REWARD, TEXTS, _rows


def test_an_arm_with_the_same_pairs_and_training_shares_the_earlier_arms_run(tmp_path):
    from pvar.experiment.config import validate
    from pvar.experiment.runner import Experiment

    policy = tiny_causal_lm(tmp_path / "policy", TEXTS)
    judge = tiny_reward_model(tmp_path / "judge", TEXTS, seed=3)
    (tmp_path / "reward.py").write_text(REWARD)
    for name, rows in (("pool.jsonl", _rows("p", 12)), ("eval.jsonl", _rows("e", 6))):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = validate({
        "name": "twins", "policy": str(policy), "budget": 0.5, "dtype": "float32",
        "prompts": {"source": str(tmp_path / "pool.jsonl"), "eval_source": str(tmp_path / "eval.jsonl")},
        "scoring": {"n": 3, "max_new_tokens": 8, "temperature": 1.0, "top_p": 1.0, "shard_size": 4,
                    "reward": f"{tmp_path / 'reward.py'}:score", "scale": 0.5},
        "arms": [{"name": "top", "select": "top"}, {"name": "random", "select": "random"},
                 {"name": "top-again", "select": "top", "count": 6}],
        "train": {"max_steps": 3, "batch_size": 2, "max_length": 64},
        "eval": {"judge": f"hf:{judge}", "max_new_tokens": 8, "n_boot": 50, "lc_boot": 10, "soft_scale": 1.0},
        "theory": {"prompts": 0},
    })
    run = tmp_path / "run"
    Experiment(cfg, run, log=lambda m: None).run()
    pairs = [(run / "arms" / n / "pairs.jsonl").read_bytes() for n in ("top", "top-again")]
    assert pairs[0] == pairs[1]  # a count of 6 is the budget of 0.5: the same prompts, the same pairs
    model = run / "arms" / "top-again" / "model"
    state = json.loads((run / "state.json").read_text())["steps"]
    assert json.loads((model / "shared.json").read_text()) == {"with": "top"}
    assert not list(model.glob("adapter_*")) and state["train:top-again"]["shared_with"] == "top"
    assert state["train:top-again"]["steps"] == state["train:top"]["steps"] == 3
    top_answers = (run / "arms" / "top" / "eval" / "outputs_policy.jsonl").read_text()
    assert (run / "arms" / "top-again" / "eval" / "outputs_policy.jsonl").read_text() == top_answers
    assert not (run / "arms" / "random-s0" / "model" / "shared.json").exists()
    report = json.loads((run / "report" / "report.json").read_text())
    judged = {a["name"]: a["eval"]["hard"]["estimate"] for a in report["arms"]}
    assert judged["top-again"] == judged["top"]
