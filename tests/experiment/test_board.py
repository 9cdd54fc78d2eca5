"""`pvar board` end to end on tiny models: every selector, both budgets, ties, and the leaderboard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from pvar.testing import tiny_causal_lm
from tests.experiment.test_testbed import TEXTS, _rows

SELECTORS = ["top-pvar", "random", "top-std", "top-margin", "easiest-usable", "stratified", "proxy-half",
             "random-usable", "full", "top-pvar-label", "random-label"]


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pvar.experiment.board import write_board
    from pvar.experiment.config import validate
    from pvar.experiment.presets import PRESETS
    from pvar.experiment.runner import Experiment

    root = tmp_path_factory.mktemp("board")
    policy = tiny_causal_lm(root / "policy", TEXTS)
    for name, rows in (("pool.jsonl", _rows("p", 16)), ("eval.jsonl", _rows("e", 8))):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    arms = [a for a in PRESETS["board-format"]["arms"]]  # the board's own selectors, fewer seeds
    arms = [{**a, **({"seeds": [0, 1, 2]} if a["select"] == "random" and "max_steps" not in a else {}),
             **({"train_seeds": [0, 1]} if "train_seeds" in a else {})} for a in arms]
    cfg = validate({
        "name": "tiny-board", "policy": str(policy), "budget": 0.25, "dtype": "float32",
        "primary": ["top-pvar", "random"],
        "prompts": {"source": str(root / "pool.jsonl"), "eval_source": str(root / "eval.jsonl")},
        "scoring": {"n": 6, "max_new_tokens": 8, "temperature": 1.0, "top_p": 1.0, "shard_size": 8,
                    "reward": "gold", "scale": 4.0},
        "arms": arms,
        "train": {"max_steps": 2, "batch_size": 2, "max_length": 64, "lr": 5e-2},
        "eval": {"judge": "gold", "max_new_tokens": 8, "n_boot": 20, "lc_boot": 10},
        "theory": {"prompts": 0},
    })
    Experiment(cfg, root / "out" / "tiny-board", log=lambda msg: None).run()
    write_board([root / "out" / "tiny-board"], root / "out")
    return root / "out"


def test_every_selector_is_on_the_board_with_its_interval_and_composition(board):
    data = json.loads((board / "leaderboard.json").read_text())
    (tb,) = data
    rows = {r["selector"]: r for r in tb["rows"]}
    assert set(rows) == set(SELECTORS)
    assert rows["random"]["runs"] == 3 and rows["top-pvar"]["runs"] == 2 and rows["random-label"]["runs"] == 2
    assert rows["random"]["vs_random"] is None and tb["primary"] == rows["top-pvar"]["vs_random"]
    assert rows["top-pvar-label"]["rival"] == "random-label" and rows["random-label"]["vs_random"] is None
    assert rows["top-pvar-label"]["vs_random"]["b"] == "random-label" and rows["top-margin"]["rival"] == "random"
    for name, r in rows.items():
        assert r["gain"]["ci_low"] <= r["gain"]["estimate"] <= r["gain"]["ci_high"], name
        if name not in ("random", "random-label"):
            assert r["vs_random"]["boot_low"] <= r["vs_random"]["boot_high"], name
    assert rows["top-pvar-label"]["label_budget"] and not rows["top-pvar"]["label_budget"]
    assert rows["stratified"]["composition"] and tb["pool_shares"]
    assert {p["proxy"] for p in tb["proxies"]} == {"pvar_half", "reward_std", "reward_range", "reward_mean"}
    assert all(-1 <= p["spearman"] <= 1 and 0 <= p["top_k_overlap"] <= 1 for p in tb["proxies"])


def test_identical_selections_share_runs_and_show_as_tied(board):
    state = json.loads((board / "tiny-board" / "state.json").read_text())["steps"]
    shared = {k.split(":", 1)[1]: v["shared_with"] for k, v in state.items() if "shared_with" in v}
    rows = {r["selector"]: r for r in json.loads((board / "leaderboard.json").read_text())[0]["rows"]}
    for run, twin in shared.items():  # a shared run's arm shows its twin, and their scores are equal
        arm = run.rsplit("-t", 1)[0]
        assert twin.rsplit("-t", 1)[0] in rows[arm]["shares_runs_with"][0]


def test_the_label_budget_trains_one_pass_and_compute_matched_arms_equal_steps(board):
    import math

    report = json.loads((board / "tiny-board" / "report" / "report.json").read_text())
    arms = {a["name"]: a for a in report["arms"]}
    assert arms["top-pvar-t0"]["steps"] == arms["random-s0"]["steps"] == arms["full-t0"]["steps"] == 2
    for name in ("top-pvar-label-t0", "random-label-s0"):  # one pass over its own pairs, batch 2
        assert arms[name]["steps"] == math.ceil(arms[name]["pairs"] / 2), name


def test_the_table_rebuilds_from_the_folders_on_the_command_line(board, cli):
    (board / "leaderboard.md").unlink()
    code, _, err = cli("board", "--table-only", "--preset", "tiny-board", "-o", board)
    assert code == 0, err
    md = (board / "leaderboard.md").read_text()
    assert "# Prompt-selector leaderboard" in md and "| top-pvar-label (label budget) |" in md
    assert "Primary (named before the run): top-pvar − random" in md and "| proxy of gold PVar |" in md
    assert "Learning gate (random − base): " in md
