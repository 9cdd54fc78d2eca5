"""select --stratified: exact picks on a hand-made pool, the derived constraints stratum, refusals."""

import numpy as np
import pydantic
import pytest

from pvar.errors import InputError
from pvar.io.rows import read_rows
from pvar.pipeline import select
from pvar.tasks import TaskSpec, spec_json
from pvar.tasks.constraints import Lowercase, NoComma, StartPhrase
from tests.conftest import write_jsonl

# strata of sizes 6, 3, 1 and budget 5: counts 3, 2, 0 (see tests/core/test_select.py)
IDS = ["a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1", "b2", "c0"]
SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.95, 0.3, 0.2, 0.99]
WANT = ["a0", "a1", "a2", "b0", "b1"]  # input order
SPECS = {"a": TaskSpec("format", (NoComma(),)), "b": TaskSpec("format", (Lowercase(),)),
         "c": TaskSpec("ifeval", (StartPhrase(start_phrase="Sure"), NoComma()))}


def _rows(**extra):
    return [{"prompt_id": i, "prompt": f"q {i}", "pvar": s, **{k: v(i) for k, v in extra.items()}}
            for i, s in zip(IDS, SCORES, strict=True)]


def _kept(path):
    return [r["prompt_id"] for b in read_rows(path, require=("prompt_id",)) for r in b.data.to_pylist()]


def _cfg(**kw):
    return select.SelectConfig.make(mode="stratified", count=5, **kw)


@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
def test_stratified_by_a_column(tmp_path, ext):
    src = write_jsonl(tmp_path / "in.jsonl", _rows(family=lambda i: i[0]))
    if ext == "parquet":
        import pyarrow.json as pj
        import pyarrow.parquet as pq

        pq.write_table(pj.read_json(src), tmp_path / "in.parquet")
        src = tmp_path / "in.parquet"
    out = tmp_path / "s.jsonl"
    summary = select.run(src, out, _cfg(stratum="family"))
    assert _kept(out) == WANT and summary.n_kept == 5
    select.run(src, out, select.SelectConfig.make(mode="top", count=5))  # top-k would take c0 over b1
    assert _kept(out) == ["a0", "a1", "a2", "b0", "c0"]


def test_stratified_derives_the_constraints_of_task_specs(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", _rows(reference=lambda i: spec_json(SPECS[i[0]])))
    out = tmp_path / "s.jsonl"
    select.run(src, out, _cfg())  # default stratum: the sorted constraint ids of each spec
    assert _kept(out) == WANT
    *_, strata = select._read_scores(str(src), "pvar", "constraints")
    assert strata.tolist()[-1] == "punctuation:no_comma+startend:start_phrase"


def test_stratified_skips_null_scores_and_treats_null_strata_as_one(tmp_path):
    rows = _rows(family=lambda i: None if i[0] == "b" else i[0])
    rows[0]["pvar"] = None  # a0 has no PVar: never selected; "a" still has 5 for its 3 slots
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    select.run(src, tmp_path / "s.jsonl", _cfg(stratum="family"))
    assert _kept(tmp_path / "s.jsonl") == ["a1", "a2", "a3", "b0", "b1"]


def test_stratified_refusals(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", _rows())
    with pytest.raises(InputError, match="no stratum column 'family'"):
        select.run(src, tmp_path / "s.jsonl", _cfg(stratum="family"))
    with pytest.raises(InputError, match="nor task specs in 'reference'"):
        select.run(src, tmp_path / "s.jsonl", _cfg())
    bad = write_jsonl(tmp_path / "bad.jsonl", _rows(reference=lambda i: "a plain answer"))
    with pytest.raises(InputError, match="not a task spec") as err:
        select.run(bad, tmp_path / "s.jsonl", _cfg())
    assert "reference" in str(err.value) and ":1" in str(err.value)
    with pytest.raises(ValueError, match="one stratum per prompt"):
        select.choose(np.array(SCORES), np.array(IDS), _cfg())


def test_stratified_config():
    with pytest.raises(pydantic.ValidationError, match="stratified mode only"):
        select.SelectConfig(mode="top", fraction=0.5, stratum="family")
    with pytest.raises(pydantic.ValidationError, match="needs a fraction or a count"):
        select.SelectConfig(mode="stratified")
    top = select.SelectConfig(mode="top", fraction=0.5)
    assert "stratum" not in top.model_dump()  # fingerprints of earlier selections do not move
    assert _cfg(stratum="family").model_dump()["stratum"] == "family"


def test_stratified_from_the_command_line_and_a_notebook(tmp_path, cli):
    import pyarrow as pa

    import pvar

    src = write_jsonl(tmp_path / "in.jsonl", _rows(family=lambda i: i[0]))
    code, _, err = cli("select", src, "-o", tmp_path / "s.jsonl", "--stratified", "0.5", "--stratum", "family")
    assert code == 0, err
    assert _kept(tmp_path / "s.jsonl") == WANT
    got = pvar.select(pa.Table.from_pylist(_rows(family=lambda i: i[0])), stratified=0.5, stratum="family")
    assert got.column("prompt_id").to_pylist() == WANT
    code, _, err = cli("select", src, "-o", tmp_path / "t.jsonl", "--top", "0.5", "--stratified", "0.5")
    assert code == 2 and "exactly one of" in err and "--stratified F" in err


def test_a_stratified_arm_selects_by_its_stratum():
    from pvar.errors import ConfigError
    from pvar.experiment.config import ArmConfig, validate
    from pvar.experiment.presets import load_config
    from pvar.experiment.steps.arms import select_args

    cfg = load_config(overrides={"budget": 0.5})
    arm = ArmConfig(name="strat", select="stratified", stratum="family")
    assert select_args(cfg, arm, 0) == {"by": "pvar", "mode": "stratified", "seed": 0, "stratum": "family",
                                        "fraction": 0.5}
    assert "stratum" not in ArmConfig(name="t", select="top").model_dump()  # older run folders keep their config
    with pytest.raises(ConfigError, match="stratum applies to stratified arms only"):
        validate({"arms": [{"name": "t", "select": "top", "stratum": "family"}]})
