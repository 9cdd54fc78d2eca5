import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pvar.core.stats import preference_variance
from pvar.io.rows import read_rows
from tests.conftest import scored_rows, write_jsonl


def read_all(path):
    return [r for b in read_rows(path, require=("prompt_id",), unique_ids=False) for r in b.data.to_pylist()]


@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
def test_measure_select_pairs_round_trip(tmp_path, cli, ext):
    src = write_jsonl(tmp_path / "in.jsonl", scored_rows(20))
    measured, selected, pairs = (tmp_path / f"{n}.{ext}" for n in ("m", "s", "p"))
    code, out, _ = cli("measure", src, "-o", measured, "--scale", "2")
    assert code == 0 and "Spearman" in out
    rows = read_all(measured)
    want = preference_variance([r["rewards"] for r in scored_rows(20)], 2.0)
    np.testing.assert_allclose([r["pvar"] for r in rows], want)
    assert all(r["pvar_low"] <= r["pvar_high"] for r in rows if r["pvar"] > 0)
    assert {"reward_mean", "reward_std", "reward_range", "n_valid"} <= set(rows[0])

    assert cli("select", measured, "-o", selected, "--top", "0.25")[0] == 0
    kept = read_all(selected)
    assert len(kept) == 5
    cutoff = sorted((r["pvar"] for r in rows), reverse=True)[4]
    assert all(r["pvar"] >= cutoff for r in kept)
    assert [r["prompt_id"] for r in kept] == sorted(r["prompt_id"] for r in kept)  # input order

    assert cli("pairs", selected, "-o", pairs)[0] == 0
    got = read_all(pairs)
    assert len(got) == 5
    for p in got:
        assert p["chosen_reward"] > p["rejected_reward"]
        assert set(p) == {"prompt", "chosen", "rejected", "prompt_id", "pvar", "chosen_reward",
                          "rejected_reward"}


def test_select_modes_and_count(tmp_path, cli):
    measured = tmp_path / "m.parquet"
    cli("measure", write_jsonl(tmp_path / "in.jsonl", scored_rows(40)), "-o", measured)
    pv = {r["prompt_id"]: r["pvar"] for r in read_all(measured)}

    def ids(*args):
        out = tmp_path / "s.jsonl"
        assert cli("select", measured, "-o", out, *args)[0] == 0
        return [r["prompt_id"] for r in read_all(out)]

    assert len(ids("--top", "1", "--count", "7")) == 7
    bottom = ids("--bottom", "0.1")
    assert max(pv[i] for i in bottom) <= sorted(pv.values())[3]
    r1, r2 = ids("--random", "0.5", "--seed", "3"), ids("--random", "0.5", "--seed", "3")
    assert r1 == r2 and len(r1) == 20 and r1 != ids("--random", "0.5", "--seed", "4")
    assert all(pv[i] >= 0.1 for i in ids("--min", "0.1"))
    by_std = ids("--by", "reward_std", "--top", "0.25")
    assert len(by_std) == 10


def test_select_excludes_prompts_lacking_pvar_and_reports_them(tmp_path, cli):
    rows = scored_rows(6)
    rows[0]["rewards"] = [1.0, None, None, None]
    measured = tmp_path / "m.jsonl"
    cli("measure", write_jsonl(tmp_path / "in.jsonl", rows), "-o", measured)
    code, out, _ = cli("select", measured, "-o", tmp_path / "s.jsonl", "--random", "1")
    assert code == 0 and "with a finite pvar" in out
    kept = [r["prompt_id"] for r in read_all(tmp_path / "s.jsonl")]
    assert len(kept) == 5 and "p000" not in kept


def test_pair_rules(tmp_path, cli):
    src = write_jsonl(tmp_path / "in.jsonl", scored_rows(8))
    for rule, expect in [("best-worst", 6), ("best-random", 6), ("all", 6 * 6)]:
        out = tmp_path / f"{rule}.jsonl"
        assert cli("pairs", src, "-o", out, "--rule", rule)[0] == 0
        assert len(read_all(out)) == expect  # prompts 0 and 4 have zero spread: skipped


def test_empty_responses_are_never_a_side_of_a_pair(tmp_path, cli):
    """A policy that answers with EOS at once leaves an empty text: the worst *real* answer is rejected."""
    from pvar.training.data import load_pairs

    rows = [{"prompt_id": "a", "prompt": "q1", "responses": ["good", "", "ok", "  "], "rewards": [3.0, 0.0, 2.0, -1]},
            {"prompt_id": "b", "prompt": "q2", "responses": ["", "x"], "rewards": [1.0, 0.5]},
            {"prompt_id": "c", "prompt": "q3", "responses": ["hi", "yo"], "rewards": [1.0, 0.0]}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    for rule in ("best-worst", "best-random", "sweet-spot", "all"):
        out = tmp_path / f"{rule}.jsonl"
        assert cli("pairs", src, "-o", out, "--rule", rule, "--scale", "1")[0] == 0
        got = read_all(out)
        assert got and all(r["chosen"].strip() and r["rejected"].strip() for r in got), (rule, got)
        assert "b" not in {r["prompt_id"] for r in got}  # one real answer: no pair
        assert load_pairs(out).num_rows == len(got)  # training accepts every pair
    worst = {r["prompt_id"]: r for r in read_all(tmp_path / "best-worst.jsonl")}
    assert (worst["a"]["chosen"], worst["a"]["rejected"], worst["a"]["rejected_reward"]) == ("good", "ok", 2.0)
    pvar_a = worst["a"]["pvar"]  # PVar still measures every scored response, empty ones included
    assert pvar_a == pytest.approx(float(preference_variance(np.array([[3.0, 0.0, 2.0, -1.0]]), 1.0)[0]))


def test_chat_prompts_give_conversational_pairs(tmp_path, cli):
    rows = scored_rows(3)
    for r in rows:
        r["prompt"] = [{"role": "user", "content": r["prompt"]}]
    out = tmp_path / "p.parquet"
    assert cli("pairs", write_jsonl(tmp_path / "in.jsonl", rows), "-o", out)[0] == 0
    got = read_all(out)
    assert got[0]["chosen"][0]["role"] == "assistant"
    assert got[0]["prompt"][0]["role"] == "user"


def test_ultrafeedback_enters_at_measure(tmp_path, cli):
    from pvar.io.bundled import bundled

    out = tmp_path / "m.parquet"
    code, _, _ = cli("measure", bundled("ultrafeedback_sample.jsonl"), "-o", out, "--rating", "aspects")
    assert code == 0
    rows = read_all(out)
    assert len(rows) == 40 and all(r["n_valid"] >= 2 for r in rows)


def test_datasets_folder_input(tmp_path, cli):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    datasets.Dataset.from_list(scored_rows(10)).save_to_disk(str(folder))
    out = tmp_path / "m.jsonl"
    assert cli("measure", folder, "-o", out)[0] == 0
    assert len(read_all(out)) == 10


def test_parquet_is_streamed_in_batches(tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(scored_rows(1000)), src, row_group_size=100)
    batches = list(read_rows(src, batch_size=256))
    assert len(batches) > 1 and sum(b.data.num_rows for b in batches) == 1000
    assert batches[1].first_row == 1 + batches[0].data.num_rows


def test_stats_table_and_plot(tmp_path, cli):
    measured = tmp_path / "m.jsonl"
    cli("measure", write_jsonl(tmp_path / "in.jsonl", scored_rows(30)), "-o", measured)
    png = tmp_path / "fig.png"
    code, out, _ = cli("stats", measured, "--plot", png)
    assert code == 0 and "PVar median" in out and "Spearman" in out and "histogram" in out
    assert png.stat().st_size > 1000
    code, out2, _ = cli("stats", tmp_path / "in.jsonl")  # unmeasured rows: measured on the fly
    assert code == 0 and "PVar median" in out2


def test_run_ultrafeedback_preset_selects_and_pairs_every_arm(tmp_path, cli):
    code, out, _ = cli("run", "--preset", "ultrafeedback", "-o", tmp_path / "uf")
    assert code == 0 and "ultrafeedback: arms" in out
    top = [json.loads(x) for x in (tmp_path / "uf" / "arms" / "top-pvar" / "pairs.jsonl").read_text().splitlines()]
    assert 5 <= len(top) <= 10 and all(p["chosen_reward"] > p["rejected_reward"] for p in top)
    full = (tmp_path / "uf" / "arms" / "full" / "pairs.jsonl").read_text().splitlines()
    assert len(full) > len(top)
    report = json.loads((tmp_path / "uf" / "report" / "report.json").read_text())
    assert report["complete"] and not report["comparisons"] and report["until"] == "pairs"
    md = (tmp_path / "uf" / "report" / "report.md").read_text()
    assert "Training" not in md and "top-pvar" in md
