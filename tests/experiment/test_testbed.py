"""The testbed design end to end on tiny models: exact gold reward and judge, training seeds, random arms
pooled, random among usable prompts, the learning gate, Holm, the A/A floor and rank reliability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from pvar.testing import tiny_causal_lm

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TEXTS = [
    "the cat sat on the mat and looked at the dog", "a quick brown fox jumps over the lazy dog today",
    "why is the sky blue in the morning and red at night", "tell me a story about a robot who learns to paint",
]


def _spec(i: int) -> str:
    if i % 4 == 3:  # a keyword the tiny model never writes: every sample scores 0, the prompt ties (PVar 0)
        return json.dumps({"task": "ifeval", "constraints": [{"id": "keywords:existence", "keywords": ["zebra"]}]},
                          sort_keys=True)
    constraints = [{"id": "keywords:existence", "keywords": [["the", "dog", "sky", "cat"][i % 4]]},
                   {"id": "length_constraints:number_words", "num_words": 5 + i % 3, "relation": "less than"}]
    return json.dumps({"task": "ifeval", "constraints": constraints[: 1 + i % 2]}, sort_keys=True)


def _rows(prefix: str, n: int) -> list[dict]:
    return [{"prompt_id": f"{prefix}{i}", "prompt": TEXTS[i % len(TEXTS)] + f" {prefix}{i}", "reference": _spec(i)}
            for i in range(n)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pvar.experiment.config import validate
    from pvar.experiment.runner import Experiment

    root = tmp_path_factory.mktemp("testbed")
    policy = tiny_causal_lm(root / "policy", TEXTS)
    for name, rows in (("pool.jsonl", _rows("p", 16)), ("eval.jsonl", _rows("e", 12))):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = validate({
        "name": "tiny-testbed", "policy": str(policy), "budget": 0.25, "dtype": "float32",
        "prompts": {"source": str(root / "pool.jsonl"), "eval_source": str(root / "eval.jsonl")},
        "scoring": {"n": 8, "max_new_tokens": 8, "temperature": 1.0, "top_p": 1.0, "shard_size": 8,
                    "reward": "gold", "scale": 4.0},
        "arms": [{"name": "top-pvar", "select": "top", "train_seeds": [0, 1]},
                 {"name": "random", "select": "random", "seeds": [0, 1, 2, 3]},
                 {"name": "random-usable", "select": "random", "usable": True, "seeds": [0]},
                 {"name": "bottom-pvar", "select": "bottom"}],
        "train": {"max_steps": 3, "batch_size": 2, "max_length": 64, "lr": 5e-2},
        "eval": {"judge": "gold", "max_new_tokens": 8, "n_boot": 50, "lc_boot": 10, "aa_batch_size": 5},
        "theory": {"prompts": 0, "params": "all", "max_length": 64, "signal_prompts": 4, "signal_samples": 3,
                   "heldout_pairs": 12, "heldout_samples": 4},
    })
    out = root / "run"
    Experiment(cfg, out, log=lambda msg: None).run()
    return out


def test_testbed_report_carries_the_design(run):
    report = json.loads((run / "report" / "report.json").read_text())
    names = [a["name"] for a in report["arms"]]
    assert names == ["top-pvar-t0", "top-pvar-t1", "random-s0", "random-s1", "random-s2", "random-s3",
                     "random-usable-s0", "bottom-pvar"]
    v = report["verdict"]
    assert v["primary_names"] == ["top-pvar", "random"] and v["gate_arm"] == "random"
    p = v["primary"]
    assert p["runs_a"] == 2 and p["runs_b"] == 4 and p["n_prompts"] == 12
    assert p["se_runs"] > 0 and p["se_prompts"] >= 0 and p["mde"] > 0 and 0 <= p["power"] <= 1
    assert p["ci_low"] <= p["estimate"] <= p["ci_high"]
    sd = v["run_sd"]  # each arm's own: top-pvar's 2 training seeds, random's 4 seeds; usable's one run borrows
    assert [sd[a]["runs"] for a in ("top-pvar", "random", "random-usable", "bottom-pvar")] == [2, 4, 1, 1]
    assert sd["top-pvar"]["source"] == sd["random"]["source"] == "estimated"
    donor = max(("top-pvar", "random"), key=lambda a: sd[a]["sd"])
    assert sd["random-usable"] == {**sd[donor], "runs": 1, "source": "fallback", "donor": donor}
    assert sd["bottom-pvar"] == {"sd": 0.0, "df": None, "runs": 1, "source": "untrained", "donor": None}
    assert p["boot_low"] <= p["boot_high"]
    assert {s["b"] for s in v["secondary"]} == {"random-usable", "bottom-pvar"}
    assert all(s["p_holm"] >= s["p_value"] for s in v["secondary"])
    assert isinstance(v["gate"]["passed"], bool) and v["void"] == (not v["gate"]["passed"])
    assert 0 <= v["aa_batches"]["identical_answers"] <= 1 and v["aa_runs"]["a"] == "top-pvar-t0"
    assert report["matching"]["mode"] == "compute" and report["matching"]["equal_steps"]
    assert {n: s for n, s in report["matching"]["steps"].items() if n != "bottom-pvar"} == \
        dict.fromkeys(names[:-1], 3)
    assert report["rank_reliability"][-1]["samples"] == 4
    assert set(v["guard"]) == {*names, "base"} and all(0 <= g <= 1 for g in v["guard"].values())


def test_usable_arm_draws_only_prompts_that_yield_pairs(run):
    import pyarrow.parquet as pq

    measured = pq.read_table(run / "scoring" / "measured.parquet").to_pylist()
    usable = {r["prompt_id"] for r in measured if r["pvar"] > 0}
    picked = pq.read_table(run / "arms" / "random-usable-s0" / "selected.parquet").column("prompt_id").to_pylist()
    assert len(picked) == min(4, len(usable)) and set(picked) <= usable  # budget 0.25 of 16 prompts
    pairs = (run / "arms" / "random-usable-s0" / "pairs.jsonl").read_text().splitlines()
    assert len(pairs) == len(picked)  # every usable prompt yields its pair


def test_training_seeds_differ_between_runs_of_an_arm(run):
    cfg_t0 = json.loads((run / "arms" / "top-pvar-t0" / "model" / "train_config.json").read_text())
    cfg_t1 = json.loads((run / "arms" / "top-pvar-t1" / "model" / "train_config.json").read_text())
    assert cfg_t0["config"]["seed"] == 0 and cfg_t1["config"]["seed"] == 1
    assert (run / "arms" / "top-pvar-t0" / "pairs.jsonl").read_text() == \
        (run / "arms" / "top-pvar-t1" / "pairs.jsonl").read_text()  # same selection, another training seed


def test_eval_scores_are_the_gold_of_the_answers(run):
    from pvar import tasks

    specs = {r["prompt_id"]: r["reference"] for r in _rows("e", 12)}
    answers = [json.loads(x) for x in (run / "arms" / "random-s0" / "eval" / "outputs_policy.jsonl").read_text()
               .splitlines()]
    judged = {json.loads(x)["prompt_id"]: json.loads(x)["policy_score"]
              for x in (run / "arms" / "random-s0" / "eval" / "judgements.jsonl").read_text().splitlines()}
    for a in answers:
        assert judged[a["prompt_id"]] == tasks.gold(specs[a["prompt_id"]], a["output"])


def test_report_states_the_verdict(run):
    md = (run / "report" / "report.md").read_text()
    assert "## Verdict" in md and "Primary comparison (named before the run)" in md
    assert "A/A noise floor" in md and "Minimum detectable effect" in md and "compute-matched" in md
    assert "hierarchical bootstrap" in md and "Welch–Satterthwaite" in md and "random-usable" in md
    assert "between-run SD of its mean score, net of prompt noise: top-pvar " in md and "**fallback** to" in md
    report = json.loads((run / "report" / "report.json").read_text())
    if report["verdict"]["void"]:
        assert "The comparison is void" in md


def test_gradient_signal_and_heldout_pairs(run):
    import math

    report = json.loads((run / "report" / "report.json").read_text())
    sig = report["signal"]
    assert sig["n_prompts"] == 4 and sig["samples_per_set"] == 3
    rows = [json.loads(x) for x in (run / "signal" / "signal.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(math.isfinite(r["dot"]) for r in rows)
    for r in rows:  # Cauchy-Schwarz: the two estimates' dot product is bounded by their norms
        assert abs(r["dot"]) <= r["norm_a"] * r["norm_b"] * (1 + 1e-9) + 1e-12
    assert set(sig["fit_pvar"]) == {"n", "slope", "r2", "pearson", "spearman"}
    for fresh in (run / "signal" / "fresh", run / "heldout" / "fresh"):  # sampled by the pool's scoring chain
        manifest = json.loads((fresh / "reward" / "_manifest.json").read_text())
        assert manifest["complete"] and (fresh / "generate" / "_manifest.json").is_file()
    pairs = (run / "heldout" / "pairs.jsonl").read_text().splitlines()
    held = report["heldout"]
    assert set(held) == {a["name"] for a in report["arms"]}
    for h in held.values():
        assert h["n_pairs"] == len(pairs) and 0 <= h["accuracy"] <= 1 and h["loss"] > 0
    for line in pairs:
        pair = json.loads(line)
        assert pair["chosen_reward"] > pair["rejected_reward"] and pair["prompt_id"].startswith("e")


def test_per_prompt_data_is_exported_for_rescoring(run):
    pool = [json.loads(x) for x in (run / "report" / "data" / "pool.jsonl").read_text().splitlines()]
    assert len(pool) == 16 and all(len(r["responses"]) == len(r["rewards"]) == 8 for r in pool)
    assert sum("top-pvar-t0" in r["selected_by"] for r in pool) == 4
    answers = [json.loads(x) for x in (run / "report" / "data" / "eval_answers.jsonl").read_text().splitlines()]
    assert len(answers) == (2 + 8) * 12  # base, base-aa and 8 runs, 12 eval prompts each
    for a in answers:
        assert a["gold"] == a["judge_score"] and a["guard"] in (0.0, 1.0) and set(a["constraints"])


def test_an_arm_of_tied_prompts_is_not_trained_and_answers_as_the_base(run):
    report = json.loads((run / "report" / "report.json").read_text())
    bottom = next(a for a in report["arms"] if a["name"] == "bottom-pvar")
    assert bottom["pairs"] == 0 and bottom["steps"] == 0
    assert report["matching"]["untrained"] == ["bottom-pvar"] and report["verdict"]["untrained"] == ["bottom-pvar"]
    base = (run / "base" / "eval" / "outputs_policy.jsonl").read_text()
    assert (run / "arms" / "bottom-pvar" / "eval" / "outputs_policy.jsonl").read_text() == base
    assert report["verdict"]["vs_base"]["bottom-pvar"]["estimate"] == 0.0
    assert report["verdict"]["vs_base"]["bottom-pvar"]["se_runs"] == 0.0
    assert report["heldout"]["bottom-pvar"]["accuracy"] == 0.0


def test_report_draws_the_verdict_and_signal_figures(run):
    for fig in ("verdict.png", "signal.png", "pvar_pool.png"):
        assert (run / "report" / "figures" / fig).stat().st_size > 1000
    html = (run / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and "<script" not in html


def test_the_verdict_scores_the_preregistered_metric(run, tmp_path):
    """eval.metric gold-guarded: every test scores a prompt by gold x content guard, recomputable from the
    exported answers (the same folder's report under the judge's score differs where the guard fails)."""
    import shutil

    import yaml

    from pvar.experiment.report import write_report

    judge = json.loads((run / "report" / "report.json").read_text())
    assert judge["metric"] == "judge"
    guarded_gate = judge["verdict"]["gate_guarded"]  # the judge's report carries the gate under gold x guard
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["eval"]["metric"] = "gold-guarded"
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    write_report(copy)
    report = json.loads((copy / "report" / "report.json").read_text())
    assert report["metric"] == "gold-guarded"
    assert report["verdict"]["gate"] == guarded_gate and "gate_guarded" not in report["verdict"]
    rows = [json.loads(x) for x in (run / "report" / "data" / "eval_answers.jsonl").read_text().splitlines()]
    mean = {}
    for r in rows:
        mean.setdefault(r["run"], []).append(r["gold"] * r["guard"])
    top = np.mean([np.mean(mean[n]) for n in ("top-pvar-t0", "top-pvar-t1")])
    got = report["verdict"]["vs_base"]["top-pvar"]["estimate"]
    assert got == pytest.approx(top - np.mean(mean["base"]), abs=1e-12)


def test_the_report_shows_what_the_answers_are_and_what_each_arm_selected(run):
    report = json.loads((run / "report" / "report.json").read_text())
    answers = report["answers"]
    assert set(answers["arms"]) == {"base", "top-pvar", "random", "random-usable", "bottom-pvar"}
    top = answers["arms"]["top-pvar"]
    assert top["answers"] == 2 * 12 and 0 <= top["guard_rate"] <= 1 and top["mean_words"] > 0
    assert set(top["constraints"]) <= {"keywords:existence", "length_constraints:number_words"}
    shares = report["composition"]["shares"]
    assert report["composition"]["stratum"] == "constraints"
    assert sum(shares["pool"].values()) == pytest.approx(1.0) and sum(shares["top-pvar"].values()) == pytest.approx(1.0)
    md = (run / "report" / "report.md").read_text()
    assert "## What the answers are" in md and "## What each arm selected, by constraints" in md
