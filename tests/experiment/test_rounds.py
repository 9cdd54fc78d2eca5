"""Iterative rounds: train, re-sample the unselected prompts from the trained policy, select, train on."""

import json

import pyarrow.parquet as pq
import pytest

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    from pvar.testing import tiny_causal_lm

    tmp = tmp_path_factory.mktemp("rounds")
    words = "yes no maybe certainly perhaps indeed rarely often always never"
    return tiny_causal_lm(tmp / "model", [f"Tell me about topic {i}. {words}" for i in range(12)])


def _config(tmp_path, policy, rounds_by="pvar"):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
policy: {policy}
backend: fake
until: train
rounds: 3
rounds_by: {rounds_by}
budget: 0.25
prompts: {{pool: 16, eval: 4}}
scoring: {{n: 4, reward: fake, max_new_tokens: 6}}
theory: {{prompts: 0}}
train: {{max_steps: 2, batch_size: 2, max_length: 64, lr: 0.01}}
arms:
  - {{name: top, select: top, by: pvar}}
  - {{name: random, select: random, seeds: [0]}}
""")
    return cfg


@pytest.mark.parametrize("rounds_by", ["pvar", "pvar_policy"])
def test_rounds_select_fresh_prompts_and_chain_training(tmp_path, cli, tiny_policy, torch_one_thread, rounds_by):
    cfg = _config(tmp_path, tiny_policy, rounds_by)
    code, _, err = cli("run", cfg, "-o", tmp_path / "run")
    assert code == 0, err
    root = tmp_path / "run"
    state = json.loads((root / "state.json").read_text())["steps"]
    for arm in ("top", "random-s0"):
        chosen = [set(pq.read_table(root / "arms" / arm / "selected.parquet").column("prompt_id").to_pylist())]
        for r in (2, 3):
            rdir = root / "arms" / arm / f"round-{r}"
            score = state[f"round{r}-score:{arm}"]
            assert score["prompts"] == 16 - 4 * (r - 1)  # the prompts not selected in earlier rounds
            assert score["mean_pvar_policy"] > 0  # the trained policy has preferences of its own
            chosen.append(set(pq.read_table(rdir / "selected.parquet").column("prompt_id").to_pylist()))
            adapter = json.loads((rdir / "model" / "adapter_config.json").read_text())
            assert adapter["base_model_name_or_path"] == str(rdir / "policy")  # trained on from the last round
        assert all(len(c) == 4 for c in chosen) and len(set().union(*chosen)) == 12  # disjoint slices
    assert (root / "arms" / "top" / "round-3" / "model" / "train_log.jsonl").is_file()
    code, _, err = cli("run", cfg, "-o", tmp_path / "run")  # resumes: every step reused
    assert code == 0 and "round3-train:top: done earlier" in err.replace("- ", ""), err


def test_policy_pvar_is_zero_at_init():
    from pvar.pipeline.policy_pvar import policy_pvar

    same = [[-3.0, -5.0, -4.0]]
    assert policy_pvar(same, same, 0.1)[0] == 0.0
    assert policy_pvar([[-3.0, -5.0, -4.0]], [[-4.0, -4.0, -4.0]], 0.1)[0] > 0


def test_report_shows_the_rounds(tmp_path, cli, tiny_policy, torch_one_thread):
    cfg = _config(tmp_path, tiny_policy)
    assert cli("run", cfg, "-o", tmp_path / "run")[0] == 0
    md = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "## Iterative rounds" in md and md.count("| top | ") >= 2
    data = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    assert [r["round"] for r in data["rounds"]["top"]] == [2, 3]
