"""Bad input, class by class: exit 2, one error line naming file/line/field, no traceback, nothing left.

Each case builds its inputs in an empty folder, runs one verb (in process through ``main``, or as
a real subprocess where the process matters), and checks the folder afterwards: only the inputs
the case wrote may remain. Row and line numbers are 1-based in every verb.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import scored_rows, write_jsonl

PROMPTS = [{"prompt_id": f"q{i}", "prompt": f"Say something about {i}.", "reference": "something"}
           for i in range(6)]


def _pairs(n: int = 4) -> list[dict]:
    return [{"prompt": f"Q{i}?", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(n)]


def _reward_module(tmp: Path, body: str) -> str:
    path = tmp / "user_reward.py"
    path.write_text(textwrap.dedent(body))
    return f"{path}:score"


@dataclass
class Case:
    """``make(tmp)`` writes the inputs and returns the argv; ``expect`` must all appear in the error."""

    make: Callable[[Path], list[str]]
    expect: list[str] = field(default_factory=list)


def _file(name: str) -> Callable[[Path], str]:
    return lambda tmp: str(tmp / name)


# -- 1. what used to end in a traceback ---------------------------------------------------------------

def _non_utf8_jsonl(tmp: Path) -> list[str]:
    (tmp / "in.jsonl").write_bytes(json.dumps(scored_rows(1)[0]).encode() + b'\n{"prompt": "caf\xe9"}\n')
    return ["measure", str(tmp / "in.jsonl"), "-o", str(tmp / "out.jsonl")]


def _non_utf8_yaml(tmp: Path) -> list[str]:
    (tmp / "cfg.yaml").write_bytes(b"name: ok\nscoring:\n  n: 4\n# caf\xe9\n")
    return ["run", str(tmp / "cfg.yaml"), "-o", str(tmp / "run")]


def _deep_json(tmp: Path) -> list[str]:
    row = {"prompt_id": "a", "prompt": "x", "responses": ["a", "b"], "rewards": [1, 2]}
    text = json.dumps(row)[:-1] + ', "meta": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (tmp / "in.jsonl").write_text(json.dumps(row | {"prompt_id": "b"}) + "\n" + text + "\n")
    return ["measure", str(tmp / "in.jsonl"), "-o", str(tmp / "out.jsonl")]


def _huge_int_reward(tmp: Path) -> list[str]:
    line = '{"prompt_id": "a", "prompt": "x", "responses": ["a", "b"], "rewards": [1, ' + "9" * 400 + "]}"
    (tmp / "in.jsonl").write_text(line + "\n")
    return ["measure", str(tmp / "in.jsonl"), "-o", str(tmp / "out.jsonl")]


def _parquet_prompt_ints(tmp: Path) -> list[str]:
    pq.write_table(pa.table({"prompt_id": ["a"], "prompt": [[1, 2, 3]]}), tmp / "in.parquet")
    return ["generate", str(tmp / "in.parquet"), "-o", str(tmp / "out.parquet"), "--backend", "fake"]


def _parquet_messages_wrong_keys(tmp: Path) -> list[str]:
    pq.write_table(pa.table({"prompt_id": ["a"], "prompt": [[{"speaker": "user", "text": "hi"}]]}),
                   tmp / "in.parquet")
    return ["generate", str(tmp / "in.parquet"), "-o", str(tmp / "out.parquet"), "--backend", "fake"]


def _reward_fn(body: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        src = write_jsonl(tmp / "in.jsonl", [{k: v for k, v in r.items() if k != "rewards"} for r in scored_rows(3)])
        spec = _reward_module(tmp, body)
        return ["reward", str(src), "-o", str(tmp / "out.jsonl"), "--reward", spec]
    return make


def _report_config_only(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    (tmp / "run" / "config.yaml").write_text("name: x\n")
    return ["report", str(tmp / "run")]


def _report_corrupt_state(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()
    (tmp / "run" / "config.yaml").write_text("name: x\n")
    (tmp / "run" / "state.json").write_text('{"steps": {"a": ')
    return ["report", str(tmp / "run")]


def _corrupt_manifest(tmp: Path) -> list[str]:
    (tmp / "stage").mkdir()
    (tmp / "stage" / "_manifest.json").write_text("{oops")
    return ["measure", str(tmp / "stage"), "-o", str(tmp / "o.jsonl")]


def _scored(tmp: Path) -> str:
    return str(write_jsonl(tmp / "in.jsonl", scored_rows(4)))


TRACEBACKS = {
    "non-utf8 jsonl": Case(_non_utf8_jsonl, ["in.jsonl:2", "not UTF-8"]),
    "non-utf8 yaml": Case(_non_utf8_yaml, ["cfg.yaml:4", "not UTF-8"]),
    "deeply nested json": Case(_deep_json, ["in.jsonl:2", "nested too deeply"]),
    "integer too big for a float": Case(_huge_int_reward, ["in.jsonl:1", "field 'rewards'", "too large"]),
    "parquet prompt list<int64>": Case(_parquet_prompt_ints, ["in.parquet", "field 'prompt'", "int64"]),
    "parquet messages with wrong keys": Case(_parquet_messages_wrong_keys, ["in.parquet", "field 'prompt'"]),
    "scale inf": Case(lambda t: ["measure", _scored(t), "-o", str(t / "out.jsonl"), "--scale", "inf"],
                      ["scale", "finite"]),
    "shard size -1": Case(lambda t: ["generate", str(write_jsonl(t / "in.jsonl", PROMPTS)), "-o",
                                     str(t / "out.jsonl"), "--backend", "fake", "--shard-size", "-1"],
                          ["shard_size", "greater than or equal to 1"]),
    "reward function raises": Case(_reward_fn("""
        def score(prompts, responses, references):
            raise RuntimeError("backend down")
        """), ["user_reward.py:score", "raised RuntimeError: backend down"]),
    "reward function wrong length": Case(_reward_fn("""
        def score(prompts, responses, references):
            return [[1.0] * len(r) for r in responses][:-1]
        """), ["user_reward.py:score", "one list of scores per prompt", "got 2 rows"]),
    "reward function NaN": Case(_reward_fn("""
        def score(prompts, responses, references):
            return [[float("nan")] * len(r) for r in responses]
        """), ["user_reward.py:score", "NaN"]),
    "reward function strings": Case(_reward_fn("""
        def score(prompts, responses, references):
            return [["1.5"] * len(r) for r in responses]
        """), ["user_reward.py:score", "non-number", "'1.5'"]),
    "reward module does not import": Case(_reward_fn("""
        import no_such_package_here
        def score(prompts, responses, references):
            return []
        """), ["user_reward.py", "ModuleNotFoundError", "no_such_package_here"]),
    "figure with an unknown suffix": Case(lambda t: ["stats", _scored(t), "--plot", str(t / "fig.txt")],
                                          ["fig.txt", ".png"]),
    "unknown device": Case(lambda t: ["generate", str(write_jsonl(t / "in.jsonl", PROMPTS)), "-o", str(t / "o.jsonl"),
                                      "--device", "quantum"], ["device", "torch device"]),
    "bad ray address": Case(lambda t: ["generate", str(write_jsonl(t / "in.jsonl", PROMPTS)), "-o", str(t / "o.jsonl"),
                                       "--backend", "fake", "--engine", "ray", "--ray-address", "x"], ["ray-address"]),
    "column reward of text": Case(lambda t: ["reward", _scored(t), "-o", str(t / "o.jsonl"), "--reward",
                                             "column:prompt"], ["in.jsonl:1", "field 'prompt'", "list of numbers"]),
    "rewards spanning past float64": Case(lambda t: ["measure", str(write_jsonl(t / "in.jsonl", [
        {"prompt_id": "a", "prompt": "x", "responses": ["a", "b"], "rewards": [-1e308, 1e308]}])), "-o",
        str(t / "o.jsonl")], ["in.jsonl:1", "field 'rewards'", "float64"]),
    "corrupt stage manifest": Case(_corrupt_manifest, ["_manifest.json", "corrupt"]),
    "report: only a config": Case(_report_config_only, ["run", "nothing to report"]),
    "report: corrupt state.json": Case(_report_corrupt_state, ["state.json", "corrupt run state"]),
}


# -- 2. what used to hang --------------------------------------------------------------------------

def _alias_bomb(tmp: Path, *extra: str) -> list[str]:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    (tmp / "cfg.yaml").write_text("\n".join(lines).replace("a0:", "train:\n  trl_args:\n    a0:", 1)
                                  .replace("\na", "\n    a") + "\n")
    return ["run", str(tmp / "cfg.yaml"), "-o", str(tmp / "run"), *extra]


HANGS = {
    "shard size 0": Case(lambda t: ["generate", str(write_jsonl(t / "in.jsonl", PROMPTS)), "-o",
                                    str(t / "out.jsonl"), "--backend", "fake", "--shard-size", "0"],
                         ["shard_size", "greater than or equal to 1"]),
    "yaml alias bomb --show-config": Case(lambda t: _alias_bomb(t, "--show-config"), ["cfg.yaml", "expands"]),
    "yaml alias bomb run": Case(_alias_bomb, ["cfg.yaml", "expands"]),
    "reward shard size 0": Case(lambda t: ["reward", _scored(t), "-o", str(t / "out.jsonl"), "--reward", "fake",
                                           "--shard-size", "0"], ["shard_size"]),
    "workers 0": Case(lambda t: ["generate", str(write_jsonl(t / "in.jsonl", PROMPTS)), "-o", str(t / "o.jsonl"),
                                 "--backend", "fake", "--workers", "0"], ["workers", "greater than or equal to 1"]),
}


# -- 3. data loss and silent acceptance --------------------------------------------------------------

def _same_path(verb: str, *extra: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        src = _scored(tmp) if verb != "generate" else str(write_jsonl(tmp / "in.jsonl", PROMPTS))
        return [verb, src, "-o", src, *extra]
    return make


def _via_symlink(tmp: Path) -> list[str]:
    src = _scored(tmp)
    (tmp / "link.jsonl").symlink_to(src)
    return ["select", src, "-o", str(tmp / "link.jsonl"), "--top", "0.5"]


def _user_folder(tmp: Path) -> list[str]:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("keep me")
    return ["generate", str(write_jsonl(tmp / "in.jsonl", PROMPTS)), "-o", str(tmp / "mine"), "--backend", "fake",
            "--force"]


def _identical_pairs(tmp: Path) -> list[str]:
    rows = _pairs(3)
    rows[2]["rejected"] = rows[2]["chosen"]
    return ["train", str(write_jsonl(tmp / "pairs.jsonl", rows)), "-o", str(tmp / "model")]


def _empty_yaml(tmp: Path) -> list[str]:
    (tmp / "cfg.yaml").write_text("# nothing here\n")
    return ["run", str(tmp / "cfg.yaml"), "-o", str(tmp / "run")]


DATA_LOSS = {
    "select output is its input": Case(_same_path("select", "--top", "0.5"), ["in.jsonl", "is the input"]),
    "measure output is its input": Case(_same_path("measure"), ["is the input"]),
    "generate output is its input": Case(_same_path("generate", "--backend", "fake"), ["is the input"]),
    "output is a symlink to the input": Case(_via_symlink, ["link.jsonl", "is the input"]),
    "stage output is a user's folder": Case(_user_folder, ["mine", "never overwritten"]),
    "run folder is a file": Case(lambda t: (t / "afile").write_text("x") and ["run", "--preset", "quick", "-o",
                                                                             str(t / "afile")], ["afile", "a file"]),
    "min nan": Case(lambda t: ["select", _scored(t), "-o", str(t / "o.jsonl"), "--min", "nan", "--by", "reward_std"],
                    ["minimum", "finite"]),
    "temperature inf": Case(lambda t: ["generate", str(write_jsonl(t / "in.jsonl", PROMPTS)), "-o",
                                       str(t / "o.jsonl"), "--backend", "fake", "--temperature", "inf"],
                            ["temperature", "finite"]),
    "chosen equals rejected": Case(_identical_pairs, ["pairs.jsonl:3", "field 'rejected'", "identical"]),
    "empty yaml": Case(_empty_yaml, ["cfg.yaml", "empty config"]),
    "empty prompt": Case(lambda t: ["generate", str(write_jsonl(t / "in.jsonl", [PROMPTS[0], {"prompt": "  "}])),
                                    "-o", str(t / "o.jsonl"), "--backend", "fake"],
                         ["in.jsonl:2", "field 'prompt'", "empty prompt"]),
    "role robot": Case(lambda t: ["generate", str(write_jsonl(t / "in.jsonl", [
        {"prompt": [{"role": "robot", "content": "beep"}]}])), "-o", str(t / "o.jsonl"), "--backend", "fake"],
        ["in.jsonl:1", "field 'prompt'", "'robot'"]),
    "negative seed": Case(lambda t: ["measure", _scored(t), "-o", str(t / "o.jsonl"), "--seed", "-1"],
                          ["seed", "greater than or equal to 0"]),
}


# -- 4. misleading messages ---------------------------------------------------------------------------

def _corrupt_parquet(tmp: Path) -> list[str]:
    rows = [{**r, "pad": "x" * 2000} for r in scored_rows(200)]
    pq.write_table(pa.Table.from_pylist(rows), tmp / "in.parquet", row_group_size=50, compression="none")
    data = bytearray((tmp / "in.parquet").read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = os.urandom(4096)
    (tmp / "in.parquet").write_bytes(bytes(data))
    return ["measure", str(tmp / "in.parquet"), "-o", str(tmp / "out.jsonl")]


def _train_row_number(tmp: Path) -> list[str]:
    rows = _pairs(4)
    rows[2]["chosen"] = ""
    pq.write_table(pa.Table.from_pylist(rows), tmp / "pairs.parquet")
    return ["train", str(tmp / "pairs.parquet"), "-o", str(tmp / "model")]


def _mixed_types(tmp: Path) -> list[str]:
    rows = [{**r, "extra": i} for i, r in enumerate(scored_rows(6))]
    rows[4]["extra"] = "five"
    return ["measure", str(write_jsonl(tmp / "in.jsonl", rows)), "-o", str(tmp / "out.jsonl")]


MISLEADING = {
    "missing local model folder": Case(lambda t: ["generate", str(write_jsonl(t / "in.jsonl", PROMPTS)), "-o",
                                                  str(t / "o.jsonl"), "--model", str(t / "models" / "nope")],
                                       ["no such folder", "models/nope"]),
    "missing reward model folder": Case(lambda t: ["reward", _scored(t), "-o", str(t / "o.jsonl"), "--reward",
                                                   f"hf:{t}/rm/none"], ["reward", "no such folder"]),
    "missing judge folder": Case(lambda t: ["eval", "--policy", "smollm2", "--prompts",
                                            str(write_jsonl(t / "p.jsonl", PROMPTS)), "-o", str(t / "ev"),
                                            "--judge", f"hf:{t}/judge/none"], ["no such folder"]),
    "corrupt parquet pages": Case(_corrupt_parquet, ["in.parquet", "Parquet"]),
    "train counts rows from 1": Case(_train_row_number, ["pairs.parquet: row 3", "field 'chosen'"]),
    "mixed-type column at its line": Case(_mixed_types, ["in.jsonl:5", "field 'extra'"]),
}


# -- 5. late validation and leftovers ----------------------------------------------------------------

def _run_cfg(tmp: Path, body: str) -> list[str]:
    (tmp / "cfg.yaml").write_text(textwrap.dedent(body))
    return ["run", str(tmp / "cfg.yaml"), "-o", str(tmp / "run")]


LATE = {
    "generate: bad row leaves no shards": Case(
        lambda t: ["generate", str(write_jsonl(t / "in.jsonl", [*PROMPTS, {"prompt": 3}])), "-o",
                   str(t / "out.jsonl"), "--backend", "fake", "--shard-size", "2"], ["in.jsonl:7", "prompt"]),
    "reward: bad row leaves no shards": Case(
        lambda t: ["reward", str(write_jsonl(t / "in.jsonl", [*scored_rows(5), {"prompt_id": "z", "prompt": "x"}])),
                   "-o", str(t / "out.jsonl"), "--reward", "fake", "--shard-size", "2"], ["in.jsonl:6", "responses"]),
    "eval: bad judge before any answer": Case(
        lambda t: ["eval", "--policy", "smollm2", "--prompts", str(write_jsonl(t / "p.jsonl", PROMPTS)), "-o",
                   str(t / "ev"), "--judge", "no_such_module_x:score"], ["no_such_module_x"]),
    "run: unknown trl_args key": Case(lambda t: _run_cfg(t, """
        prompts: {source: sharegpt, pool: 8, eval: 8}
        train: {trl_args: {not_a_trl_field: 1}}
        """), ["trl_args.not_a_trl_field", "no such field"]),
    "run: arm score column missing": Case(lambda t: _run_cfg(t, """
        arms:
          - {name: top-x, select: top, by: no_such_score}
        """), ["arms.top-x.by", "no_such_score"]),
    "run: missing prompts file": Case(lambda t: _run_cfg(t, f"""
        prompts: {{source: {t}/missing.jsonl}}
        """), ["missing.jsonl", "no such file"]),
    "reward: gold without task specs": Case(
        lambda t: ["reward", _scored(t), "-o", str(t / "o.jsonl"), "--reward", "gold"],
        ["in.jsonl:1", "field 'reference'"]),
    "run: pool lacks the reward's references": Case(lambda t: _run_cfg(t, f"""
        prompts: {{source: {write_jsonl(t / "p.jsonl", [{"prompt": "hi"}])}}}
        scoring: {{reward: minilm-ref}}
        """), ["p.jsonl:1", "field 'reference'"]),
    "score: bad reward before sampling": Case(lambda t: ["score", "-o", str(t / "sc"), "--reward", "nope"],
                                              ["unknown spec 'nope'"]),
    "run: reward module missing": Case(lambda t: _run_cfg(t, """
        scoring: {reward: "no_such_module_y:score"}
        """), ["no_such_module_y"]),
}

CLASSES = {"traceback": TRACEBACKS, "hang": HANGS, "data loss": DATA_LOSS, "misleading": MISLEADING,
           "late": LATE}
ALL = [(cls, name) for cls, cases in CLASSES.items() for name in cases]


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def assert_one_clean_line(tmp_path: Path, cli: Callable, case: Case) -> None:
    """``case`` fails with exit 2 and one error line holding every expected piece, and leaves
    ``tmp_path`` as its inputs left it."""
    argv = case.make(tmp_path)
    before = _snapshot(tmp_path)
    code, _out, err = cli(*argv)
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("error: ") and "Traceback" not in err
    for needle in case.expect:
        assert needle in err, (needle, err)
    assert _snapshot(tmp_path) == before, "left behind: " + ", ".join(sorted(_snapshot(tmp_path) - before))


@pytest.mark.parametrize(("cls", "name"), ALL, ids=[f"{c}: {n}" for c, n in ALL])
def test_bad_input_is_one_clean_line(tmp_path, cli, cls, name, monkeypatch):
    monkeypatch.setenv("PVAR_CACHE", os.environ.get("PVAR_CACHE", str(Path.home() / ".cache" / "pvar")))
    assert_one_clean_line(tmp_path, cli, CLASSES[cls][name])


def test_case_counts_per_class():
    """The table covers every class at least three times (the closing note cites these counts)."""
    assert all(len(cases) >= 3 for cases in CLASSES.values()), {k: len(v) for k, v in CLASSES.items()}


# -- the same errors through the Python API ----------------------------------------------------------

def test_api_same_errors_and_nothing_written(tmp_path):
    from pvar.errors import InputError
    from pvar.pipeline import measure, select

    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"prompt_id": "a", "prompt": "\xff"}\n')
    with pytest.raises(InputError, match=r"in\.jsonl:1: not UTF-8"):
        measure.run(src, tmp_path / "sub" / "out.jsonl", measure.MeasureConfig.make())
    good = write_jsonl(tmp_path / "good.jsonl", scored_rows(4))
    with pytest.raises(InputError, match="is the input"):
        select.run(good, good, select.SelectConfig.make(mode="top", fraction=0.5, by="reward_std"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.jsonl", "in.jsonl"]


def test_api_pairs_identical_refused(tmp_path):
    from pvar.errors import InputError
    from pvar.training.data import load_pairs

    rows = _pairs(2)
    rows[1]["rejected"] = rows[1]["chosen"]
    with pytest.raises(InputError, match=r"pairs\.jsonl:2: field 'rejected': identical"):
        load_pairs(write_jsonl(tmp_path / "pairs.jsonl", rows))


def test_large_finite_rewards_stay_finite(tmp_path, cli):
    """1e39 is a valid float64 reward: PVar and its interval are computed from the gaps, never inf."""
    rows = [{"prompt_id": "a", "prompt": "x", "responses": ["a", "b", "c"], "rewards": [1e39, 2e39, 3e39]},
            {"prompt_id": "b", "prompt": "y", "responses": ["a", "b", "c"], "rewards": [0.0, 1.0, 2.0]}]
    out = tmp_path / "m.jsonl"
    assert cli("measure", write_jsonl(tmp_path / "in.jsonl", rows), "-o", out)[0] == 0
    from pvar.core.stats import preference_variance

    got = [json.loads(line) for line in out.read_text().splitlines()]
    expected = preference_variance([[1e39, 2e39, 3e39]], 1.0)[0]  # the float64 estimator
    assert got[0]["pvar"] == pytest.approx(expected)
    assert got[0]["reward_std"] == pytest.approx(np.std([1e39, 2e39, 3e39]))
    assert got[0]["pvar_low"] <= got[0]["pvar"] <= got[0]["pvar_high"]
    assert got[1]["pvar"] > 0


def test_bom_is_accepted(tmp_path, cli):
    """A UTF-8 byte order mark (Windows editors write one) is stripped, not an error."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in scored_rows(3)).encode() + b"\n")
    assert cli("measure", src, "-o", tmp_path / "o.jsonl")[0] == 0


# -- 6. temp files -------------------------------------------------------------------------------------

def test_full_disk_leaves_no_temp_file(tmp_path, monkeypatch):
    """A write that fails (ENOSPC), also again while closing, removes its temp file and names the output."""
    import errno

    from pvar.io import writers

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "out.jsonl"
    no_space = r"out\.jsonl: cannot write \(No space left on device\)"
    with pytest.raises(writers.OutputError, match=no_space), writers.atomic_rows(target) as w:
        w.write(pa.RecordBatch.from_pylist([{"a": 1}]))
        monkeypatch.setattr(os, "fsync", full)  # the final flush fails, as on a full disk
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(writers.OutputError, match=r"state\.json"):
        writers.atomic_write_text(tmp_path / "state.json", "{}")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_on_tmpfs_then_resume(small_tmpfs, tmp_path, cli):
    """A real full disk: one line naming the file, no temp file; with space again the rerun succeeds."""
    big = [{"prompt_id": f"p{i}", "prompt": f"Q{i} " + "x" * 3000} for i in range(120)]
    src = write_jsonl(tmp_path / "in.jsonl", big)
    out = small_tmpfs / "gen.jsonl"
    code, _, err = cli("generate", src, "-o", out, "--backend", "fake", "--n", "2", "--shard-size", "40")
    assert code == 2 and err.count("\n") == 1 and "No space left" in err and str(small_tmpfs) in err, err
    assert not [p for p in small_tmpfs.rglob("*") if ".tmp-" in p.name]
    assert not out.exists()
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_tmpfs)], check=True)
    assert cli("generate", src, "-o", out, "--backend", "fake", "--n", "2", "--shard-size", "40")[0] == 0
    assert sum(1 for _ in out.open()) == 120
    assert not [p for p in small_tmpfs.rglob("*") if ".tmp-" in p.name]


def test_resume_removes_stale_temp_files(tmp_path, cli):
    """A kill during assembly or a shard write leaves ``.NAME.tmp-PID``; the next run deletes them."""
    src = write_jsonl(tmp_path / "in.jsonl", PROMPTS)
    out = tmp_path / "gen.jsonl"
    assert cli("generate", src, "-o", out, "--backend", "fake", "--shard-size", "2")[0] == 0
    stale = [tmp_path / ".gen.jsonl.tmp-999999", tmp_path / ".gen.jsonl.shards" / ".shard-00001.parquet.tmp-999999"]
    for p in stale:
        p.write_text("half")
    assert cli("generate", src, "-o", out, "--backend", "fake", "--shard-size", "2")[0] == 0
    assert not any(p.exists() for p in stale)


def test_run_removes_stale_temp_files(tmp_path, cli):
    """`pvar run` on a folder a killed run left: its temp files go, the run resumes."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("prompts: {pool: 4, eval: 4, task: format}\nscoring: {n: 2, reward: gold, max_new_tokens: 4}\n"
                   "backend: fake\nuntil: pairs\narms:\n  - {name: top, select: top, fraction: 0.5}\n")
    argv = ["run", str(cfg), "-o", str(tmp_path / "run")]
    assert cli(*argv)[0] == 0
    stale = tmp_path / "run" / ".state.json.tmp-999999"
    stale.write_text("{")
    assert cli(*argv)[0] == 0
    assert not stale.exists() and not (tmp_path / ".run.lock").exists()


# -- 7. concurrency ------------------------------------------------------------------------------------

def test_two_concurrent_runs_compute_each_shard_once(tmp_path):
    """Two identical `pvar reward` processes on one output: the second waits and reuses the shards."""
    log = tmp_path / "calls.log"
    spec = _reward_module(tmp_path, f"""
        import time
        def score(prompts, responses, references):
            with open({str(log)!r}, "a") as fh:
                fh.write(prompts[0] + "\\n")
            time.sleep(0.3)
            return [[float(len(x)) for x in r] for r in responses]
        """)
    src = write_jsonl(tmp_path / "in.jsonl", scored_rows(12))
    argv = [sys.executable, "-m", "pvar.cli", "reward", str(src), "-o", str(tmp_path / "out.jsonl"),
            "--reward", spec, "--shard-size", "2", "--batch-size", "2"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    calls = log.read_text().splitlines()
    firsts = [r["prompt"] for r in scored_rows(12)][::2]  # one call per shard of 2, named by its first prompt
    assert sorted(calls) == sorted(firsts), calls  # each shard scored once, by one of the two processes
    assert sum(1 for _ in (tmp_path / "out.jsonl").open()) == 12
    assert not (tmp_path / ".out.jsonl.lock").exists()


# -- 8. stderr noise -----------------------------------------------------------------------------------

def test_error_is_the_last_and_only_line_in_a_real_process(tmp_path):
    """Warnings raised before a failure are not printed; after a success they are."""
    src = write_jsonl(tmp_path / "in.jsonl", scored_rows(3))
    fail = _reward_module(tmp_path, """
        import warnings
        def score(prompts, responses, references):
            warnings.warn("something looks odd", UserWarning)
            raise ValueError("cannot score")
        """)
    run = [sys.executable, "-m", "pvar.cli", "reward", str(src), "-o", str(tmp_path / "o.jsonl"), "--reward"]
    r = subprocess.run([*run, fail], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot score" in r.stderr, r.stderr
    (tmp_path / "ok.py").write_text(textwrap.dedent("""
        import warnings
        def score(prompts, responses, references):
            warnings.warn("something looks odd", UserWarning)
            return [[1.0] * len(r) for r in responses]
        """))
    r = subprocess.run([*run, f"{tmp_path / 'ok.py'}:score"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "something looks odd" in r.stderr, r.stderr


def test_debug_shows_the_traceback(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", scored_rows(3))
    spec = _reward_module(tmp_path, """
        def score(prompts, responses, references):
            raise ValueError("cannot score")
        """)
    r = subprocess.run([sys.executable, "-m", "pvar.cli", "--debug", "reward", str(src), "-o",
                        str(tmp_path / "o.jsonl"), "--reward", spec], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" in r.stderr and "cannot score" in r.stderr


def test_usage_errors_are_one_line(cli):
    code, _, err = cli("generate", "x.jsonl", "-o", "y.jsonl", "--n", "abc")
    assert code == 2 and err.count("\n") == 1 and "--n" in err and "pvar generate --help" in err
    code, _, err = cli("measure", "--no-such-flag")
    assert code == 2 and err.count("\n") == 1 and "--no-such-flag" in err
