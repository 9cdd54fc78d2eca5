"""Every kind of bad input: one line on stderr naming file, line/row and field; exit 2; no output."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import scored_rows, write_jsonl


def _bad(tmp_path, rows):
    return write_jsonl(tmp_path / "in.jsonl", rows)


def _row(**overrides):
    row = scored_rows(1)[0]
    row.update(overrides)
    return {k: v for k, v in row.items() if v is not None}


CASES = {
    "malformed json": (lambda: ['{"prompt_id": "a", "prompt": "x"', ], ":1:", "malformed JSON", None),
    "missing prompt": (lambda: [_row(), _row(prompt_id="b", prompt=None)], ":2:", "missing", "prompt"),
    "missing responses": (lambda: [_row(responses=None)], ":1:", "missing", "responses"),
    "count mismatch": (lambda: [_row(), _row(prompt_id="q", rewards=[1, 2, 3])], ":2:",
                       "3 rewards for 4 responses", "rewards"),
    "non-numeric reward": (lambda: [_row(rewards=[1, "abc", 2, 3])], ":1:", "not a number", "rewards"),
    "infinite reward": (lambda: ['{"prompt_id": "a", "prompt": "x", "responses": ["a", "b"], '
                                 '"rewards": [1.0, Infinity]}'], ":1:", "not finite", "rewards"),
    "nan reward": (lambda: ['{"prompt_id": "a", "prompt": "x", "responses": ["a", "b"], '
                            '"rewards": [NaN, 1.0]}'], ":1:", "not finite", "rewards"),
    "duplicate id": (lambda: [_row(), _row(), ], ":2:", "duplicate id 'p000' (first at line 1)", "prompt_id"),
    "mistyped prompt": (lambda: [_row(prompt=42)], ":1:", "expected text", "prompt"),
}


@pytest.mark.parametrize("verb", ["measure", "pairs"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_jsonl_rows(tmp_path, cli, verb, case):
    make, where, message, field = CASES[case]
    src = _bad(tmp_path, make())
    out = tmp_path / "out.jsonl"
    code, _stdout, stderr = cli(verb, src, "-o", out)
    assert code == 2
    assert stderr.count("\n") == 1, stderr
    assert f"{src}{where}" in stderr and message in stderr
    if field:
        assert f"field '{field}'" in stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [src]  # no temp file left behind either


def test_empty_file(tmp_path, cli):
    src = write_jsonl(tmp_path / "in.jsonl", [])
    code, _, err = cli("measure", src, "-o", tmp_path / "o.parquet")
    assert code == 2 and "empty file" in err and str(src) in err
    assert not (tmp_path / "o.parquet").exists()


def test_missing_file(tmp_path, cli):
    code, _, err = cli("measure", tmp_path / "nope.jsonl", "-o", tmp_path / "o.jsonl")
    assert code == 2 and "no such file" in err


def test_unknown_format(tmp_path, cli):
    src = write_jsonl(tmp_path / "in.jsonl", scored_rows(3))
    code, _, err = cli("measure", src, "-o", tmp_path / "o.jsonl", "--format", "csvish")
    assert code == 2 and "format" in err and "csvish" in err and err.count("\n") == 1


@pytest.mark.parametrize("flag,value", [("--top", "0"), ("--top", "1.5"), ("--bottom", "-0.2"),
                                        ("--random", "2")])
def test_fraction_outside_unit_interval(tmp_path, cli, flag, value):
    src = tmp_path / "m.jsonl"
    assert cli("measure", write_jsonl(tmp_path / "in.jsonl", scored_rows(5)), "-o", src)[0] == 0
    code, _, err = cli("select", src, "-o", tmp_path / "s.jsonl", flag, value)
    assert code == 2 and "(0, 1]" in err and flag in err and err.count("\n") == 1
    assert not (tmp_path / "s.jsonl").exists()


def test_select_needs_exactly_one_mode_and_a_score_column(tmp_path, cli):
    src = write_jsonl(tmp_path / "in.jsonl", scored_rows(5))
    code, _, err = cli("select", src, "-o", tmp_path / "s.jsonl", "--top", "0.5", "--bottom", "0.5")
    assert code == 2 and "exactly one" in err
    code, _, err = cli("select", src, "-o", tmp_path / "s.jsonl", "--top", "0.5")
    assert code == 2 and "field 'pvar'" in err and "pvar measure" in err


def test_parquet_errors_name_the_row(tmp_path, cli):
    rows = scored_rows(6)
    rows[4]["rewards"] = [1.0, float("inf"), 0.0, 0.0]
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    code, _, err = cli("measure", src, "-o", tmp_path / "o.parquet")
    assert code == 2 and f"{src}: row 5: field 'rewards'" in err and "not finite" in err
    rows[4]["rewards"] = [1.0, 2.0]
    pq.write_table(pa.Table.from_pylist(rows), src)
    code, _, err = cli("measure", src, "-o", tmp_path / "o.parquet")
    assert code == 2 and "row 5" in err and "2 rewards for 4 responses" in err


def test_mistyped_parquet_column(tmp_path, cli):
    rows = scored_rows(3)
    for r in rows:
        r["rewards"] = [str(x) for x in r["rewards"]]
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    code, _, err = cli("measure", src, "-o", tmp_path / "o.jsonl")
    assert code == 2 and "field 'rewards'" in err and "expected list<item: double>" in err


def test_error_in_a_later_batch_leaves_no_partial_output(tmp_path, cli):
    rows = scored_rows(9000)
    rows[8500]["rewards"] = [1, 2]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "o.parquet"
    code, _, err = cli("measure", src, "-o", out)
    assert code == 2 and ":8501:" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_debug_shows_traceback(tmp_path, cli):
    src = write_jsonl(tmp_path / "in.jsonl", ['{"bad json'])
    with pytest.raises(Exception, match="malformed JSON"):
        cli("--debug", "measure", src, "-o", tmp_path / "o.jsonl")


def test_null_reward_means_not_scored(tmp_path, cli):
    row = _row(rewards=[1.0, None, 2.0, None])
    src = write_jsonl(tmp_path / "in.jsonl", [row, _row(prompt_id="z", rewards=[None, 1.0, None, None])])
    out = tmp_path / "o.jsonl"
    assert cli("measure", src, "-o", out)[0] == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert got[0]["n_valid"] == 2 and got[0]["pvar"] > 0
    assert got[1]["n_valid"] == 1 and got[1]["pvar"] is None
