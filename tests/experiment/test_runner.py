"""Runner pieces that need no model: arm budgets, engine pass-through, the ledger."""

from __future__ import annotations

import json

import pytest

from pvar.experiment import runner
from pvar.experiment.config import ArmConfig
from pvar.experiment.presets import load_config
from pvar.experiment.state import Ledger
from pvar.experiment.steps.arms import select_args


def test_arm_budget_comes_from_the_run_unless_the_arm_sets_one():
    cfg = load_config(overrides={"budget": 0.1})
    args = select_args(cfg, ArmConfig(name="t", select="top", by="reward_std"), 0)
    assert args == {"by": "reward_std", "mode": "top", "seed": 0, "fraction": 0.1}
    cfg = load_config(overrides={"budget": 30})
    assert select_args(cfg, ArmConfig(name="t", select="random"), 4)["count"] == 30
    own = select_args(cfg, ArmConfig(name="t", select="top", fraction=0.5, count=7), 0)
    assert own["fraction"] == 0.5 and own["count"] == 7
    thr = select_args(cfg, ArmConfig(name="t", select="threshold", minimum=0.2), 0)
    assert thr["minimum"] == 0.2 and "fraction" not in thr and "count" not in thr


def test_engine_and_backend_reach_the_sharded_stages(tmp_path, monkeypatch):
    seen = {}

    def fake_run(name, cfg, source, output, *, engine, shard_size, force, **ray):
        seen[name] = (engine, getattr(cfg, "backend", None), shard_size)
        seen["ray"] = ray
        raise KeyboardInterrupt  # stop after the first stage

    from pvar.pipeline import sharded

    monkeypatch.setattr(sharded, "run", fake_run)
    monkeypatch.setattr(runner, "preflight", lambda cfg: None)
    cfg = load_config(preset="quick", overrides={"engine": "ray", "backend": "fake", "ray_address": "head:6379",
                                                 "workers": 8, "gpus_per_worker": 1})
    exp = runner.Experiment(cfg, tmp_path / "r", log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        exp.run()
    ray = seen.pop("ray")
    assert seen == {"generate": ("ray", "fake", cfg.scoring.shard_size)}
    assert ray == {"ray_address": "head:6379", "num_workers": 8, "gpus_per_worker": 1, "cpus_per_worker": 1.0,
                   "show_progress": True}
    state = json.loads((tmp_path / "r" / "state.json").read_text())
    assert "generate" not in state["steps"]  # an interrupted step is never recorded as done


def test_ledger_skips_only_matching_keys_with_outputs(tmp_path):
    out = tmp_path / "x.txt"
    led = Ledger(tmp_path)
    assert not led.done("s", "k1", out)
    out.write_text("x")
    led.record("s", "k1", 1.5, rows=3)
    again = Ledger(tmp_path)  # read back from state.json
    assert again.done("s", "k1", out) and not again.done("s", "k2", out)
    out.unlink()
    assert not again.done("s", "k1", out)  # output gone: redo
    again.record("s", "k1", 0.5)
    assert Ledger(tmp_path).data["steps"]["s"]["computed"] == 2


def test_torn_ledger_costs_only_recomputation(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    assert Ledger(tmp_path).data == {"steps": {}, "runs": []}


def test_auto_dtype_follows_the_cpu(monkeypatch, tmp_path):
    from pvar.experiment.config import auto_dtype

    assert auto_dtype("cuda") == "bfloat16"
    cpu = load_config(overrides={"dtype": "float32"})
    assert cpu.generation_dtype() == "float32"
