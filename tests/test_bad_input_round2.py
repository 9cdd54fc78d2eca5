"""Bad input, second round: what the verbs added since the first round let through.

The same contract as tests/test_bad_input.py (exit 2, one error line naming the file and line or key,
no traceback, the folder as it was), for silent acceptance of contradictory settings, refusals that
came late, strings no encoder takes, and, in the notebook API, inputs of the wrong type.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pvar.errors import PvarError
from tests.conftest import scored_rows, write_jsonl
from tests.test_bad_input import Case, _snapshot, assert_one_clean_line


def _run_cfg(tmp: Path, body: str) -> list[str]:
    (tmp / "cfg.yaml").write_text(textwrap.dedent(body).lstrip())
    return ["run", str(tmp / "cfg.yaml"), "-o", str(tmp / "run")]


def _plain_refs() -> list[dict]:
    return [{"prompt_id": f"a{i}", "prompt": "hi", "reference": "a plain answer"} for i in range(3)]


def _surrogate(tmp: Path, verb: str, field: str) -> list[str]:
    rows = scored_rows(2)
    text = "\n".join(json.dumps(r) for r in rows) + "\n"
    line = json.dumps(rows[0] | {"prompt_id": "z"}).replace('"prompt_id": "z"', '"prompt_id": "z\\ud800"')
    if field == "prompt":
        line = json.dumps(rows[0] | {"prompt_id": "z", "prompt": "hi ZZ"}).replace("ZZ", "\\udfff")
    (tmp / "in.jsonl").write_text(text + line + "\n")
    out = tmp / ("out.jsonl" if verb != "generate" else "out.parquet")
    extra = ["--backend", "fake"] if verb == "generate" else []
    return [verb, str(tmp / "in.jsonl"), "-o", str(out), *extra]


SILENT = {
    "run: a section given twice": Case(lambda t: _run_cfg(t, """
        train: {max_steps: 3}
        scoring: {n: 4}
        train: {lr: 0.001}
        """), ["cfg.yaml:3", "key 'train' given twice"]),
    "run: a key given twice inside a section": Case(lambda t: _run_cfg(t, """
        scoring:
          n: 4
          max_new_tokens: 8
          n: 6
        """), ["cfg.yaml:4", "key 'n' given twice"]),
    "run: the primary compares an arm with itself": Case(lambda t: _run_cfg(t, """
        primary: [top-pvar, top-pvar]
        """), ["cfg.yaml", "primary", "with itself"]),
    "run: a task family on a prompts file": Case(lambda t: _run_cfg(t, f"""
        prompts: {{source: {write_jsonl(t / "p.jsonl", [{"prompt_id": "a", "prompt": "hi"}])}, task: format}}
        """), ["cfg.yaml", "prompts", "task 'format'", "p.jsonl"]),
}

LATE = {
    "run: adaptive n_max below n0": Case(lambda t: _run_cfg(t, """
        scoring:
          adaptive: {n0: 6, n_max: 4}
        """), ["cfg.yaml", "scoring.adaptive", "n_max (4) must be >= n0 (6)"]),
    "run: adaptive n_max below n0, the defaults' n0": Case(lambda t: _run_cfg(t, """
        scoring:
          adaptive: {n_max: 2, n0: 3}
        """), ["scoring.adaptive", "n_max (2)"]),
    "score: adaptive sizes checked before sampling": Case(lambda t: _run_cfg(t, """
        until: measure
        scoring:
          adaptive: {n0: 9, n_max: 8, step: 1}
        """), ["scoring.adaptive", "n_max (8) must be >= n0 (9)"]),
    "run: rounds that exhaust the pool": Case(lambda t: _run_cfg(t, """
        rounds: 5
        budget: 0.25
        """), ["cfg.yaml", "rounds: 5 rounds of 0.25", "at most 4 rounds fit"]),
    "run: rounds on a full arm": Case(lambda t: _run_cfg(t, """
        rounds: 2
        arms:
          - {name: all, select: full}
          - {name: random, select: random}
        """), ["cfg.yaml", "arm 'all' takes the full pool"]),
    "run: rounds of a count the pool cannot feed": Case(lambda t: _run_cfg(t, """
        rounds: 3
        budget: 50
        prompts: {pool: 128}
        """), ["cfg.yaml", "need 150, and the pool has 128"]),
    "run: adaptive max_samples below the first round": Case(lambda t: _run_cfg(t, """
        prompts: {pool: 64}
        scoring:
          adaptive: {n0: 4, n_max: 8, max_samples: 100}
        """), ["cfg.yaml", "max_samples: 100 is below n0 x pool", "256"]),
    "run: gold reward over a prompts file without task specs": Case(lambda t: _run_cfg(t, f"""
        prompts: {{source: {write_jsonl(t / "p.jsonl", _plain_refs())}}}
        scoring: {{reward: gold}}
        """), ["p.jsonl:1", "field 'reference'", "not a task spec"]),
    "run: gold judge over an eval file without task specs": Case(lambda t: _run_cfg(t, f"""
        prompts: {{eval_source: {write_jsonl(t / "e.jsonl", _plain_refs())}, task: null}}
        scoring: {{reward: minilm-ref}}
        eval: {{judge: gold}}
        """), ["e.jsonl:1", "field 'reference'", "not a task spec"]),
    "score: a gold reward on ShareGPT without a task family": Case(
        lambda t: ["score", "-o", str(t / "sc"), "--reward", "gold"], ["scoring.reward", "prompts.task"]),
    "run: a gold judge on ShareGPT without a task family": Case(lambda t: _run_cfg(t, """
        scoring: {reward: minilm-ref}
        eval: {judge: gold}
        """), ["eval.judge", "prompts.task"]),
    "eval: gold judge checks task specs before any answer": Case(
        lambda t: ["eval", "--policy", "smollm2", "--prompts", str(write_jsonl(t / "p.jsonl", _plain_refs())),
                   "-o", str(t / "ev"), "--judge", "gold"], ["p.jsonl:1", "field 'reference'", "not a task spec"]),
}

ENCODING = {
    "run: a lone surrogate in a config path": Case(lambda t: _run_cfg(t, """
        prompts: {source: "pool\\ud800.jsonl"}
        """), ["cfg.yaml", "field 'prompts.source'", "surrogate"]),
    "measure: a lone surrogate in an id": Case(lambda t: _surrogate(t, "measure", "prompt_id"),
                                               ["in.jsonl:3", "field 'prompt_id'", "surrogate"]),
    "measure: a lone surrogate in a prompt": Case(lambda t: _surrogate(t, "measure", "prompt"),
                                                  ["in.jsonl:3", "field 'prompt'", "surrogate"]),
    "pairs: a lone surrogate": Case(lambda t: _surrogate(t, "pairs", "prompt"),
                                    ["in.jsonl:3", "field 'prompt'", "surrogate"]),
    "generate: a lone surrogate": Case(lambda t: _surrogate(t, "generate", "prompt"),
                                       ["in.jsonl:3", "field 'prompt'", "surrogate"]),
}

def _loop(tmp: Path) -> Path:
    (tmp / "a").symlink_to(tmp / "b")
    (tmp / "b").symlink_to(tmp / "a")
    return tmp / "a"


PATHS = {
    "measure: output inside a symlink loop": Case(
        lambda t: ["measure", str(write_jsonl(t / "in.jsonl", scored_rows(2))), "-o", str(_loop(t) / "out.jsonl")],
        ["a/out.jsonl", "symlink loop"]),
    "generate: output folder is a symlink loop": Case(
        lambda t: ["generate", str(write_jsonl(t / "in.jsonl", scored_rows(2))), "-o", str(_loop(t)),
                   "--backend", "fake"], ["symlink loop"]),
    "run: run folder is a symlink loop": Case(lambda t: ["run", "--preset", "score", "-o", str(_loop(t))],
                                              ["symlink loop"]),
    "reward: a user module through a symlink loop": Case(
        lambda t: ["reward", str(write_jsonl(t / "in.jsonl", scored_rows(2))), "-o", str(t / "o.jsonl"),
                   "--reward", f"{_loop(t)}/mod.py:score"], ["symlink loop"]),
}

CLASSES = {"silent": SILENT, "late": LATE, "encoding": ENCODING, "paths": PATHS}
ALL = [(cls, name) for cls, cases in CLASSES.items() for name in cases]


@pytest.mark.parametrize(("cls", "name"), ALL, ids=[f"{c}: {n}" for c, n in ALL])
def test_second_round_is_one_clean_line(tmp_path, cli, cls, name):
    assert_one_clean_line(tmp_path, cli, CLASSES[cls][name])


def test_case_counts_per_class():
    assert all(len(cases) >= 3 for cases in CLASSES.values()), {k: len(v) for k, v in CLASSES.items()}


def test_a_valid_surrogate_pair_is_text(tmp_path, cli):
    rows = scored_rows(2)
    lines = [json.dumps(rows[0]), json.dumps(rows[1] | {"prompt": "smile ZZ"}).replace("ZZ", "\\ud83d\\ude00")]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    code, _out, err = cli("measure", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"))
    assert code == 0, err
    assert "\U0001F600" in (tmp_path / "out.jsonl").read_text(encoding="utf-8")


# -- the notebook API dispatches on the type it is given ---------------------------------------------

ROWS = [{"prompt_id": f"p{i}", "prompt": "x", "responses": ["a", "b", "c"], "rewards": [0.1 * i, 0.5, 1.0]}
        for i in range(4)]


def _datasetdict():
    datasets = pytest.importorskip("datasets")
    return datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS)})


@pytest.mark.parametrize(("make", "kwargs", "needle"), [
    (_datasetdict, {}, "a DatasetDict with splits 'train', 'test': pass split="),
    (_datasetdict, {"split": "val"}, "split 'val' is not one of its splits"),
    (lambda: ROWS, {}, "not a list"),
    (lambda: pytest.importorskip("pandas").DataFrame(ROWS), {"split": "train"}, "data is a DataFrame"),
])
def test_notebook_refuses_what_it_cannot_read(make, kwargs, needle, tmp_path, monkeypatch):
    import pvar

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PvarError) as info:
        pvar.measure(make(), **kwargs)
    message = str(info.value)
    assert needle in message and "\n" not in message
    assert not any(tmp_path.iterdir())


def test_notebook_reads_a_dataframe_and_a_datasetdict_split():
    import pvar

    pd = pytest.importorskip("pandas")
    out = pvar.measure(pd.DataFrame(ROWS))
    assert type(out).__name__ == "DataFrame" and "pvar" in out.columns and len(out) == 4
    split = pvar.measure(_datasetdict(), split="test")
    assert type(split).__name__ == "Dataset" and split.num_rows == 4
    single = pvar.select(pvar.measure(_datasetdict(), split="train"), top=0.5)
    assert single.num_rows == 2


# -- a second identical command started at the same moment waits; it does not call the output foreign ----

def test_a_start_during_anothers_first_shard_waits_for_it(tmp_path, cli):
    """Another writer holds the lock and has made the stage folder but not its manifest yet (the moment
    two simultaneous starts met in 2 of 8 tries): this command waits for the lock, then finds a stage
    output, not a foreign folder."""
    import threading
    import time

    from pvar.engines.shards import Layout
    from pvar.io.paths import file_lock

    src = write_jsonl(tmp_path / "in.jsonl", scored_rows(4))
    out = tmp_path / "out.jsonl"
    layout = Layout.for_output(out)
    locked, release = threading.Event(), threading.Event()

    def other_writer():
        with file_lock(layout.lock, "other"):
            layout.shard_dir.mkdir(parents=True)
            (layout.shard_dir / "shard-00000.parquet.tmp-123").write_text("half-made")
            locked.set()
            release.wait(10)
            (layout.shard_dir / "shard-00000.parquet.tmp-123").unlink()  # the other writer fails cleanly
            layout.shard_dir.rmdir()

    thread = threading.Thread(target=other_writer)
    thread.start()
    locked.wait(10)
    threading.Timer(0.5, release.set).start()
    started = time.perf_counter()
    code, _out, err = cli("reward", str(src), "-o", str(out), "--reward", "fake")
    thread.join(10)
    assert code == 0, err
    assert time.perf_counter() - started >= 0.4  # it waited for the lock
    assert sum(1 for _ in out.open()) == 4


# -- pvar report on a run folder whose artefacts are damaged: each reader names its file ---------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished run (gold testbed off: a rule reward and a tiny judge), made once per module."""
    import yaml

    from pvar.cli import main  # noqa: F401 - the in-process CLI below
    from pvar.testing import tiny_causal_lm, tiny_reward_model

    root = tmp_path_factory.mktemp("finished")
    texts = ["why is the sky blue", "tell me about cats", "the cat sat on the mat", "rain falls on the sea"]
    policy, judge = tiny_causal_lm(root / "policy", texts), tiny_reward_model(root / "judge", texts, seed=3)
    (root / "reward.py").write_text("def score(prompts, responses, references):\n"
                                    "    return [[float(len(r)) for r in rs] for rs in responses]\n")
    rows = [{"prompt_id": f"p{i}", "prompt": texts[i % 4], "reference": "x"} for i in range(6)]
    for name in ("pool.jsonl", "eval.jsonl"):
        write_jsonl(root / name, rows)
    cfg = {"name": "tiny", "policy": str(policy), "budget": 0.5, "dtype": "float32",
           "prompts": {"source": str(root / "pool.jsonl"), "eval_source": str(root / "eval.jsonl")},
           "scoring": {"n": 3, "max_new_tokens": 6, "temperature": 1.0, "top_p": 1.0, "shard_size": 6,
                       "reward": f"{root / 'reward.py'}:score", "scale": 0.5},
           "arms": [{"name": "top-pvar", "select": "top", "by": "pvar"},
                    {"name": "random", "select": "random", "seeds": [0]}],
           "train": {"max_steps": 2, "batch_size": 2, "max_length": 64},
           "eval": {"judge": f"hf:{judge}", "max_new_tokens": 6, "n_boot": 50, "lc_boot": 10, "soft_scale": 1.0,
                    "aa_batch_size": 0},
           "theory": {"prompts": 0}}
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pvar.cli", "run", str(root / "tiny.yaml"), "-o", str(root / "run")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "run"


def _damage_eval_keys(run: Path) -> str:
    path = run / "base" / "eval" / "eval.json"
    data = json.loads(path.read_text())
    del data["policy"]["mean_score"]
    path.write_text(json.dumps(data))
    return "base/eval/eval.json: field 'policy.mean_score': missing"


def _damage_state(run: Path) -> str:
    data = json.loads((run / "state.json").read_text())
    data["steps"]["measure"] = "done"
    (run / "state.json").write_text(json.dumps(data))
    return "state.json: field 'steps.measure'"


def _damage_selection(run: Path) -> str:
    path = run / "arms" / "top-pvar" / "selected.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "top-pvar/selected.parquet"


def _damage_judgements(run: Path) -> str:
    path = run / "arms" / "random-s0" / "eval" / "judgements.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", *lines[2:]]) + "\n")
    return "judgements.jsonl:2: malformed JSON"


def _damage_train_log(run: Path) -> str:
    path = run / "arms" / "top-pvar" / "model" / "train_log.jsonl"
    path.write_text(path.read_text() + "[1, 2]\n")
    return "train_log.jsonl"


@pytest.mark.parametrize("damage", [_damage_eval_keys, _damage_state, _damage_selection, _damage_judgements,
                                    _damage_train_log])
def test_report_names_the_damaged_artefact(finished_run, tmp_path, cli, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    shutil.rmtree(run / "report", ignore_errors=True)
    needle = damage(run)
    before = _snapshot(tmp_path)
    code, _out, err = cli("report", str(run))
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "unexpected" not in err, err
    assert needle in err, (needle, err)
    assert _snapshot(tmp_path) == before
