"""The notebook API: Dataset / pyarrow.Table in, the same type out; same rows, same errors as files."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pytest

import pvar
from pvar.errors import InputError
from pvar.io.rows import read_rows
from tests.conftest import scored_rows, write_jsonl

datasets = pytest.importorskip("datasets")


def file_rows(path) -> list[dict]:
    return [r for b in read_rows(path, require=(), unique_ids=False) for r in b.data.to_pylist()]


@pytest.fixture
def scored(tmp_path):
    rows = scored_rows(16)
    rows[3]["rewards"] = [1.0, 1.0, 1.0, 1.0]  # a tie: PVar 0, no pair
    return rows, write_jsonl(tmp_path / "scored.jsonl", rows)


def test_dataset_in_and_out_equals_the_files_path(tmp_path, scored, cli):
    rows, path = scored
    assert cli("measure", path, "-o", tmp_path / "m.parquet", "--scale", "2")[0] == 0
    assert cli("select", tmp_path / "m.parquet", "-o", tmp_path / "s.parquet", "--top", "0.5")[0] == 0
    assert cli("pairs", tmp_path / "s.parquet", "-o", tmp_path / "p.parquet", "--scale", "2")[0] == 0

    ds = datasets.Dataset.from_list(rows)
    measured = pvar.measure(ds, scale=2.0)
    top = pvar.select(measured, by="pvar", top=0.5)
    pairs = pvar.pairs(top, scale=2.0)
    for got, want in ((measured, "m.parquet"), (top, "s.parquet"), (pairs, "p.parquet")):
        assert isinstance(got, datasets.Dataset)
        assert got.to_list() == file_rows(tmp_path / want)
    assert {"prompt", "chosen", "rejected", "pvar"} <= set(pairs.column_names)

    table = pvar.measure(pa.Table.from_pylist(rows), scale=2.0)
    assert isinstance(table, pa.Table) and table.to_pylist() == file_rows(tmp_path / "m.parquet")
    assert pvar.select(table, by="pvar", rip=True).num_rows > 0


def test_in_memory_rows_get_the_same_checks_and_one_line_errors(scored):
    rows, _ = scored
    bad = [dict(r) for r in rows]
    bad[5]["rewards"] = bad[5]["rewards"][:2]  # 4 responses, 2 rewards
    with pytest.raises(InputError) as err:
        pvar.measure(datasets.Dataset.from_list(bad))
    assert str(err.value).startswith("<Dataset>: row 6: field 'rewards'")
    dup = [*rows, rows[0]]
    with pytest.raises(InputError, match=r"<pyarrow.Table>: row 17: field 'prompt_id'"):
        pvar.measure(pa.Table.from_pylist(dup))
    with pytest.raises(InputError, match="no score column 'pvar'"):
        pvar.select(pa.Table.from_pylist(rows), by="pvar", top=0.5)
    with pytest.raises(pvar.ConfigError, match="exactly one"):
        pvar.select(pa.Table.from_pylist(rows), top=0.5, bottom=0.5)


def test_saved_pairs_carry_a_dataset_card(tmp_path, scored):
    rows, _ = scored
    measured = pvar.measure(datasets.Dataset.from_list(rows), scale=2.0)
    pairs = pvar.pairs(pvar.select(measured, top=0.5))
    folder = pvar.save_pairs(pairs, tmp_path / "ds", pool=measured, reward="hf:Skywork/RM", scale=2.0,
                             selection="top 50 % by pvar", config={"budget": 0.5})
    card = (folder / "README.md").read_text()
    for needle in ("# Preference pairs selected by preference variance", f"| pairs | {pairs.num_rows:,} |",
                   "| pool | 16 prompts |", "`hf:Skywork/RM`", "| reward scale | 2.0 |", "top 50 % by pvar",
                   "PVar of the pairs' prompts | mean", "PVar over the pool | mean", '"budget": 0.5', "datasets ",
                   "path: train.parquet"):
        assert needle in card, needle
    loaded = datasets.load_dataset(str(folder), split="train")  # the card's config finds the data file
    assert loaded.to_list() == pairs.to_list()


def test_pairs_push_to_hub_goes_as_far_as_the_upload(tmp_path, scored, cli, monkeypatch):
    import huggingface_hub

    _, path = scored
    assert cli("measure", path, "-o", tmp_path / "m.parquet")[0] == 0
    calls = []
    monkeypatch.setattr(datasets.Dataset, "push_to_hub",
                        lambda self, repo, **kw: calls.append(("rows", repo, self.num_rows, kw.get("private"))))
    monkeypatch.setattr(huggingface_hub.DatasetCard, "push_to_hub",
                        lambda self, repo, **kw: calls.append(("card", repo, "selected by preference variance"
                                                               in self.content)))
    code, out, err = cli("pairs", tmp_path / "m.parquet", "-o", tmp_path / "p.jsonl", "--push-to-hub", "me/pairs",
                         "--reward", "minilm-ref", "--pool", tmp_path / "m.parquet")
    assert code == 0, err
    n = len((tmp_path / "p.jsonl").read_text().splitlines())
    assert calls == [("rows", "me/pairs", n, False), ("card", "me/pairs", True)]
    assert "published" in out


def test_notebook_names_load_lazily_and_stay_torch_free():
    code = ("import sys, pvar; f = pvar.measure; "
            "print(callable(f), [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.replace("True", "true").replace("'", '"').split(" ", 1)[1]) == []
    assert out.startswith("True")
