"""`pvar run` end to end on tiny models: killed during training, resumed, every arm judged once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from pvar.testing import tiny_causal_lm, tiny_reward_model

TEXTS = [
    "the cat sat on the mat and looked at the dog", "a quick brown fox jumps over the lazy dog today",
    "why is the sky blue in the morning and red at night", "tell me a story about a robot who learns to paint",
    "how do plants turn light into sugar and air", "what makes bread rise in a warm oven",
    "name three rivers that cross more than one country", "explain why ice floats on water",
]

REWARD = '''
def score(prompts, responses, references):
    """A rule reward with spread: longer answers with more distinct words score higher."""
    return [[len(set(r.split())) + 0.1 * len(r) for r in rs] for rs in responses]
'''


def _rows(prefix: str, n: int) -> list[dict]:
    return [{"prompt_id": f"{prefix}{i}", "prompt": TEXTS[i % len(TEXTS)] + f" ({prefix}{i})",
             "reference": TEXTS[(i + 3) % len(TEXTS)]} for i in range(n)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exp")
    policy = tiny_causal_lm(root / "policy", TEXTS)
    judge = tiny_reward_model(root / "judge", TEXTS, seed=3)
    (root / "reward.py").write_text(REWARD)
    for name, rows in (("pool.jsonl", _rows("p", 12)), ("eval.jsonl", _rows("e", 10))):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {
        "name": "tiny", "policy": str(policy), "budget": 0.5, "dtype": "float32",
        "prompts": {"source": str(root / "pool.jsonl"), "eval_source": str(root / "eval.jsonl")},
        "scoring": {"n": 3, "max_new_tokens": 8, "temperature": 1.0, "top_p": 1.0, "shard_size": 4,
                    "reward": f"{root / 'reward.py'}:score", "scale": 0.5},
        "train": {"max_steps": 40, "batch_size": 2, "max_length": 64},
        "eval": {"judge": f"hf:{judge}", "max_new_tokens": 8, "n_boot": 100, "lc_boot": 20, "soft_scale": 1.0},
        "theory": {"prompts": 3, "max_length": 64},
    }
    import yaml

    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    return {"root": root, "config": root / "tiny.yaml"}


def _cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pvar.cli", "run", str(config), "-o", str(out), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_killed_during_training_then_resumed(setup):
    out = setup["root"] / "run"
    proc = subprocess.Popen(_cmd(setup["config"], out), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if any((out / "arms").glob("*/model/train_config.json")):  # a trainer has started
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"run ended before training was seen: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "report" / "report.json").exists()
    first = json.loads((out / "state.json").read_text())["steps"]
    assert first["generate"]["done"] and first["reward"]["done"]  # scoring finished before training began

    done = subprocess.run(_cmd(setup["config"], out), env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "generate: done earlier, reused" in done.stderr and "reward: done earlier, reused" in done.stderr

    state = json.loads((out / "state.json").read_text())
    steps = state["steps"]
    assert len(state["runs"]) == 2
    assert steps["generate"]["computed"] == steps["reward"]["computed"] == steps["measure"]["computed"] == 1
    assert steps["generate"]["shards"] == 3 and steps["generate"]["shards_run"] == 3
    arms = ["top-pvar", "bottom-pvar", "random-s0", "random-s1", "random-s2", "top-std", "full"]
    for arm in arms:
        assert steps[f"train:{arm}"]["computed"] == 1 and steps[f"eval:{arm}"]["computed"] == 1
        assert steps[f"eval:{arm}"]["baseline_cached"]  # the base policy's answers were generated once
    assert steps["eval:base"]["win_rate"] == 0.5

    report = json.loads((out / "report" / "report.json").read_text())
    assert [a["name"] for a in report["arms"]] == arms
    for arm in report["arms"]:
        assert arm["eval"]["n_prompts"] == 10 and 0 <= arm["eval"]["hard"]["estimate"] <= 1
        assert arm["pairs"] >= 1 and len(report["curves"][arm["name"]]) == 40
    assert {c["b"] for c in report["comparisons"]} == {*arms[1:], "random (mean of 3)"}
    assert report["complete"] and report["theory"]["violations_exact"] == 0
    html = (out / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "<script" not in html
    md = (out / "report" / "report.md").read_text()
    assert "## Paired comparisons on the same eval prompts" in md and "within noise" in md.lower()
    for fig in ("pvar_pool.png", "win_rates.png", "paired.png", "training_curves.png", "theory.png"):
        assert (out / "report" / "figures" / fig).stat().st_size > 1000

    # a third run has nothing left to do, and the report can be rebuilt on its own
    again = subprocess.run(_cmd(setup["config"], out), env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "> train" not in again.stderr and "> generate" not in again.stderr
    steps3 = json.loads((out / "state.json").read_text())["steps"]
    assert all(steps3[k]["computed"] == steps[k]["computed"] for k in steps)
    rep = subprocess.run([sys.executable, "-m", "pvar.cli", "report", str(out)], env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert rep.returncode == 0 and "top-pvar vs bottom-pvar" in rep.stdout

    # a different config in the same folder is refused, in one line, before any work
    changed = setup["root"] / "changed.yaml"
    changed.write_text(setup["config"].read_text().replace("budget: 0.5", "budget: 0.25"))
    bad = subprocess.run(_cmd(changed, out), env=_env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "differs in budget" in bad.stderr
