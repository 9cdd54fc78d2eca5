"""The model-backed commands (train, eval, theory) wired end to end on tiny models."""

import json

import pytest

from tests.conftest import scored_rows, write_jsonl

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pvar.testing import tiny_causal_lm

    tmp = tmp_path_factory.mktemp("cli-models")
    rows = scored_rows(8)
    texts = [r["prompt"] for r in rows] + [x for r in rows for x in r["responses"]] + ["yes no maybe"]
    return tmp, tiny_causal_lm(tmp / "model", texts), rows


@pytest.mark.filterwarnings("always")  # the CLI's own filters, not the suite's, decide what is shown
def test_train_eval_theory_commands(tiny, cli):
    tmp, model, rows = tiny
    scored = write_jsonl(tmp / "scored.jsonl", rows)
    assert cli("measure", scored, "-o", tmp / "measured.jsonl")[0] == 0
    assert cli("pairs", tmp / "measured.jsonl", "-o", tmp / "pairs.jsonl")[0] == 0

    code, out, err = cli("train", tmp / "pairs.jsonl", "-o", tmp / "ckpt", "--model", model, "--max-steps", "2",
                         "--batch-size", "2", "--max-length", "64")
    assert code == 0, err
    assert "final loss" in out and (tmp / "ckpt" / "adapter_config.json").exists()
    assert "is_gradient_checkpointing" not in err  # peft's and TRL's use of a deprecated property
    log = [json.loads(x) for x in (tmp / "ckpt" / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in e for e in log)

    prompts = write_jsonl(tmp / "eval.jsonl", [{"prompt_id": r["prompt_id"], "prompt": r["prompt"],
                                                "reference": "yes"} for r in rows])
    code, out, err = cli("eval", "--policy", tmp / "ckpt", "--baseline", model, "--prompts", prompts,
                         "--judge", "fake", "-o", tmp / "eval", "--max-new-tokens", "6", "--n-boot", "200")
    assert code == 0, err
    assert "is_gradient_checkpointing" not in err
    result = json.loads((tmp / "eval" / "eval.json").read_text())
    assert result["n_prompts"] == 8 and 0.0 <= result["win_rate"]["hard"]["estimate"] <= 1.0

    code, out, err = cli("theory", tmp / "measured.jsonl", "-o", tmp / "theory", "--model", model,
                         "--prompts", "4", "--pick", "first")
    assert code == 0, err
    assert "violations of the exact bound" in out
    summary = json.loads((tmp / "theory" / "theory.json").read_text())
    assert summary["violations_exact"] == 0


def test_judge_equal_to_selection_reward_is_refused(tiny, cli):
    tmp, model, _ = tiny
    prompts = write_jsonl(tmp / "eval2.jsonl", [{"prompt_id": "a", "prompt": "x", "reference": "y"}])
    code, _, err = cli("eval", "--policy", model, "--prompts", prompts, "--judge", "minilm-ref",
                       "--selection-reward", "minilm-ref", "-o", tmp / "e2")
    assert code == 2 and err.count("\n") == 1 and "judge" in err
