"""Adaptive sampling: the same samples as a fixed-n run where it samples, and a resumable round loop."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from pvar.pipeline import adaptive, sharded
from tests.conftest import write_jsonl

PROMPTS = [{"prompt_id": f"q{i:02d}", "prompt": f"Tell me about topic {i}.", "reference": "maybe yes often"}
           for i in range(24)]


def _gen(**kw):
    return sharded.GenerateConfig.make(backend="fake", **kw)


def _reward():
    return sharded.RewardConfig.make(reward="fake")


def _rows(path):
    return {r["prompt_id"]: r for r in pq.read_table(path).to_pylist()}


def _fixed(tmp_path, n):
    src = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    sharded.run("generate", _gen(n=n), src, tmp_path / f"g{n}", shard_size=7, show_progress=False)
    sharded.run("reward", _reward(), tmp_path / f"g{n}", tmp_path / f"r{n}.parquet", shard_size=7,
               show_progress=False)
    return _rows(tmp_path / f"r{n}.parquet")


def test_stop_off_equals_fixed_n(tmp_path):
    """With the stop rule off every prompt grows to n_max: the very samples and rewards of n = n_max."""
    src = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    cfg = adaptive.AdaptiveConfig.make(n0=4, step=3, n_max=10, stop=False)
    res = adaptive.run(src, tmp_path / "ad", _gen(), _reward(), cfg, shard_size=5, show_progress=False)
    got, want = _rows(res.measured), _fixed(tmp_path, 10)
    assert [r["round"] for r in res.rounds] == [0, 1, 2] and res.samples == 24 * 10
    for pid, row in want.items():
        assert got[pid]["responses"] == row["responses"] and got[pid]["rewards"] == row["rewards"]
        assert got[pid]["n_samples"] == 10


def test_adding_samples_never_changes_earlier_ones(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    res = adaptive.run(src, tmp_path / "ad", _gen(), _reward(), adaptive.AdaptiveConfig.make(n0=4, step=4, n_max=16,
                       fraction=0.25, n_boot=50), shard_size=8, show_progress=False)
    got, oracle = _rows(res.measured), _fixed(tmp_path, 16)
    counts = [r["n_samples"] for r in got.values()]
    assert min(counts) == 4 and res.samples == sum(counts) < 16 * 24  # some prompts stopped early
    for pid, row in got.items():
        k = row["n_samples"]
        assert row["responses"] == oracle[pid]["responses"][:k] and row["rewards"] == oracle[pid]["rewards"][:k]
    summary = json.loads((tmp_path / "ad" / "adaptive.json").read_text())
    assert summary["samples"] == res.samples and summary["rounds"][0]["prompts"] == 24


def test_does_not_depend_on_sharding(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    cfg = adaptive.AdaptiveConfig.make(n0=4, step=2, n_max=12, n_boot=50)
    a = adaptive.run(src, tmp_path / "a", _gen(), _reward(), cfg, shard_size=3, show_progress=False)
    b = adaptive.run(src, tmp_path / "b", _gen(), _reward(), cfg, shard_size=50, show_progress=False)
    assert _rows(a.measured) == _rows(b.measured) and a.rounds == b.rounds


def test_sample_budget_caps_the_spend(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    cfg = adaptive.AdaptiveConfig.make(n0=4, step=4, n_max=16, stop=False, max_samples=24 * 4 + 40)
    res = adaptive.run(src, tmp_path / "ad", _gen(), _reward(), cfg, shard_size=8, show_progress=False)
    assert res.samples <= 24 * 4 + 40 and res.samples == 24 * 4 + 40


def test_undecided_rule_by_hand():
    """Cut = PVar of the k-th prompt; only intervals straddling it, below n_max, stay open."""
    cfg = adaptive.AdaptiveConfig.make(n0=2, n_max=8, fraction=0.5)
    pvar = np.array([0.20, 0.15, 0.10, 0.0])  # k = 2: cut 0.15
    low = np.array([0.16, 0.05, 0.02, 0.0])
    high = np.array([0.25, 0.20, 0.14, 0.0])
    assert adaptive.undecided(pvar, low, high, np.array([4, 4, 4, 4]), cfg).tolist() == [1]
    assert adaptive.undecided(pvar, low, high, np.array([4, 8, 4, 4]), cfg).tolist() == []
    assert adaptive.undecided(np.array([np.nan, 0.1]), np.array([np.nan, 0.0]), np.array([np.nan, 0.2]),
                              np.array([2, 2]), cfg).tolist() == [0, 1]  # NaN: open; 0.1 is the cut itself


def test_resume_after_sigkill_mid_round(tmp_path):
    """Killed while a later round samples (slow fake policy), the rerun equals an uninterrupted run."""
    src = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    script = tmp_path / "go.py"
    script.write_text(f"""
import sys
from pvar.backends import fake
from pvar.pipeline import adaptive, sharded
delay = float(sys.argv[2])
orig = fake.FakePolicy.__init__
fake.FakePolicy.__init__ = lambda self, delay_=0.0: orig(self, delay)
cfg = adaptive.AdaptiveConfig.make(n0=4, step=4, n_max=12, stop=False)
adaptive.run({str(src)!r}, sys.argv[1], sharded.GenerateConfig.make(backend="fake"),
             sharded.RewardConfig.make(reward="fake"), cfg, shard_size=4, show_progress=False)
""")
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(out), "0.05"], env={**os.environ})
    deadline = time.time() + 60
    while time.time() < deadline and not any((out / "round-01" / "generate").glob("shard-*.parquet")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "measured.parquet").exists()
    subprocess.run([sys.executable, str(script), str(out), "0"], check=True)
    subprocess.run([sys.executable, str(script), str(tmp_path / "clean"), "0"], check=True)
    assert _rows(out / "measured.parquet") == _rows(tmp_path / "clean" / "measured.parquet")
    assert json.loads((out / "adaptive.json").read_text())["rounds"] == \
        json.loads((tmp_path / "clean" / "adaptive.json").read_text())["rounds"]


def test_config_is_checked():
    from pvar.errors import ConfigError

    with pytest.raises(ConfigError, match="n_max"):
        adaptive.AdaptiveConfig.make(n0=8, n_max=4)


def test_run_with_adaptive_scoring(tmp_path, cli):
    """`scoring.adaptive` in a run config: the pool is sampled adaptively, then measured and selected."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("backend: fake\nuntil: pairs\nprompts: {pool: 16, eval: 4}\n"
                   "scoring: {reward: fake, max_new_tokens: 8, adaptive: {n0: 4, step: 4, n_max: 12}}\n"
                   "theory: {prompts: 0}\narms:\n  - {name: top, select: top, by: pvar}\n")
    code, _, err = cli("run", cfg, "-o", tmp_path / "run")
    assert code == 0, err
    state = json.loads((tmp_path / "run" / "state.json").read_text())["steps"]
    assert "adaptive" in state and "generate" not in state and state["adaptive"]["samples"] >= 16 * 4
    pool = pq.read_table(tmp_path / "run" / "scoring" / "measured.parquet")
    assert "n_samples" in pool.column_names and sum(pool.column("n_samples").to_pylist()) == \
        state["adaptive"]["samples"]
    assert cli("run", cfg, "-o", tmp_path / "run")[0] == 0  # resumes with nothing to do


def test_changed_settings_reuse_round_zero_only(tmp_path):
    """A rerun with another stop rule keeps round 0 (same samples) and redoes the rest, never refusing."""
    src = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "ad"
    a = adaptive.run(src, out, _gen(), _reward(), adaptive.AdaptiveConfig.make(confidence=0.5, n_boot=50),
                     shard_size=8, show_progress=False)
    first = (out / "round-00" / "reward" / "shard-00000.parquet").stat().st_mtime_ns
    b = adaptive.run(src, out, _gen(), _reward(), adaptive.AdaptiveConfig.make(confidence=0.99, n_boot=50),
                     shard_size=8, show_progress=False)
    assert (out / "round-00" / "reward" / "shard-00000.parquet").stat().st_mtime_ns == first
    fresh = adaptive.run(src, tmp_path / "fresh", _gen(), _reward(),
                         adaptive.AdaptiveConfig.make(confidence=0.99, n_boot=50), shard_size=8, show_progress=False)
    assert _rows(b.measured) == _rows(fresh.measured) and b.samples == fresh.samples >= a.samples
