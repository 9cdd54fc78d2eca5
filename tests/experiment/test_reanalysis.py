"""pvar verdict: a run's verdict rebuilt from its exported answers, re-scored under today's rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from pvar.experiment import verdict
from pvar.experiment.reanalysis import export_verdict

SPEC = json.dumps({"task": "format", "constraints": [{"id": "startend:start_phrase", "start_phrase": "Sure"}]})
PROMPT = "Tell me about rivers.\n\nBegin your reply with the exact phrase 'Sure'."


def _export(tmp_path, answers):
    cfg = {"name": "x", "arms": [{"name": "top", "select": "top", "train_seeds": [0, 1]},
                                 {"name": "random", "select": "random", "seeds": [0, 1, 2]}],
           "scoring": {"reward": "gold"}, "eval": {"judge": "gold"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "data").mkdir()
    lines = []
    for run, outputs in answers.items():
        for i, text in enumerate(outputs):
            stored = 1.0 if text.startswith("Sure") else 0.0  # the old prefix rule
            lines.append(json.dumps({"run": run, "prompt_id": f"p{i}", "prompt": PROMPT, "output": text,
                                     "stopped_at_eos": True, "judge_score": stored, "spec": SPEC,
                                     "gold": stored, "guard": 1.0}))
    (tmp_path / "data" / "eval_answers.jsonl").write_text("\n".join(lines) + "\n")


GOOD, GAMED, BAD = "Sure, rivers carve valleys over long ages.", "Surefire rivers carve valleys.", "Rivers flow."
ANSWERS = {"base": [BAD, BAD, GOOD, BAD], "top-t0": [GOOD, GAMED, GOOD, BAD], "top-t1": [GOOD, GOOD, GAMED, BAD],
           "random-s0": [GOOD, BAD, BAD, BAD], "random-s1": [BAD, GOOD, GOOD, BAD]}


def test_the_stored_scores_give_the_verdict_analyse_gives_on_them(tmp_path):
    _export(tmp_path, ANSWERS)
    got = export_verdict(tmp_path, "judge")
    assert got["missing_runs"] == ["random-s2"] and got["n_prompts"] == 4
    mats = {r: np.array([1.0 if t.startswith("Sure") else 0.0 for t in ts]) for r, ts in ANSWERS.items()}
    want = verdict.analyse({r: v for r, v in mats.items() if r != "base"}, mats["base"],
                           {"top": ["top-t0", "top-t1"], "random": ["random-s0", "random-s1"]},
                           primary=("top", "random"), gate_arm="random", alpha=0.05, seed=0)
    assert got["verdict"]["primary"] == want["primary"]
    assert got["means"]["top"] == [0.75, 0.75]


def test_answers_are_rescored_under_todays_rules(tmp_path):
    _export(tmp_path, ANSWERS)
    got = export_verdict(tmp_path, "gold")  # "Surefire" no longer begins with the word "Sure"
    assert got["means"]["top"] == [0.5, 0.5] and got["means"]["random"] == [0.25, 0.5]
    assert got["verdict"]["primary"]["estimate"] == pytest.approx(0.5 - 0.375)


def test_a_folder_without_exported_answers_is_one_clean_error(tmp_path, cli):
    (tmp_path / "config.yaml").write_text("name: x\n")
    code, _, err = cli("verdict", tmp_path)
    assert code == 2 and err.count("\n") == 1 and "no data/eval_answers.jsonl" in err


def test_an_unknown_metric_is_one_clean_error_and_the_files_are_written(tmp_path, cli):
    _export(tmp_path, ANSWERS)
    code, _, err = cli("verdict", tmp_path, "--metric", "bleu")
    assert code == 2 and err == "error: --metric: 'bleu' is not judge, gold or gold-guarded\n"
    code, out, err = cli("verdict", tmp_path, "--metric", "gold", "-o", tmp_path / "v")
    assert code == 0, err
    assert json.loads((tmp_path / "v" / "verdict.json").read_text())[0]["metric"] == "gold"
    assert "Primary top − random" in (tmp_path / "v" / "verdict.md").read_text() and "Primary top" in out
