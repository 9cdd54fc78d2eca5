import json

import pyarrow.parquet as pq
import pytest

from pvar.engines import run_stage
from pvar.errors import InputError, ResumeMismatch
from pvar.io.rows import read_rows
from pvar.pipeline.generate import GenerateConfig, GenerateStage
from tests.conftest import write_jsonl


def prompt_rows(n=23):
    return [{"prompt_id": f"q{i:03d}", "prompt": f"Tell me about topic {i} please"} for i in range(n)]


def rows_of(path):
    return [r for b in read_rows(path) for r in b.data.to_pylist()]


def fake_stage(**kw):
    return GenerateStage(GenerateConfig.make(backend="fake", n=3, batch_size=4, **kw))


class Boom(Exception):
    pass


class FailingAt:
    """Wraps a stage and raises on a given call, like a crash mid-run."""

    def __init__(self, stage, fail_on_call):
        self.stage, self.fail_on, self.calls = stage, fail_on_call, 0
        self.name, self.config, self.chunk_rows = stage.name, stage.config, stage.chunk_rows

    def setup(self):
        self.stage.setup()

    def counters(self):
        return self.stage.counters()

    def __call__(self, table):
        self.calls += 1
        if self.calls == self.fail_on:
            raise Boom
        return self.stage(table)


def test_shard_count_does_not_change_output(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", prompt_rows())
    one = run_stage(fake_stage(), src, tmp_path / "one.parquet", shard_size=100)
    seven = run_stage(fake_stage(), src, tmp_path / "seven.parquet", shard_size=4)
    assert (one.shards, seven.shards) == (1, 6)
    assert pq.read_table(tmp_path / "one.parquet").equals(pq.read_table(tmp_path / "seven.parquet"))


def test_crash_then_resume_equals_uninterrupted(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", prompt_rows())
    ref = run_stage(fake_stage(), src, tmp_path / "ref", shard_size=5)
    with pytest.raises(Boom):
        run_stage(FailingAt(fake_stage(), fail_on_call=4), src, tmp_path / "out", shard_size=5)
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert not manifest["complete"] and 0 < len(manifest["shards"]) < ref.shards
    again = run_stage(fake_stage(), src, tmp_path / "out", shard_size=5)
    assert again.shards_run == ref.shards - len(manifest["shards"])
    got, want = rows_of(tmp_path / "out"), rows_of(tmp_path / "ref")
    assert got == want and len({r["prompt_id"] for r in got}) == len(got) == 23


def test_unlisted_shard_file_is_redone_not_appended(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", prompt_rows(10))
    run_stage(fake_stage(), src, tmp_path / "out", shard_size=5)
    manifest_path = tmp_path / "out" / "_manifest.json"
    m = json.loads(manifest_path.read_text())
    del m["shards"]["00001"]  # as if killed between the shard's rename and its manifest entry
    m["complete"] = False
    manifest_path.write_text(json.dumps(m))
    report = run_stage(fake_stage(), src, tmp_path / "out", shard_size=5)
    assert report.shards_run == 1 and len(rows_of(tmp_path / "out")) == 10


def test_changed_config_or_input_is_refused_unless_forced(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", prompt_rows(6))
    run_stage(fake_stage(), src, tmp_path / "out", shard_size=5)
    with pytest.raises(ResumeMismatch, match="config"):
        run_stage(fake_stage(seed=1), src, tmp_path / "out", shard_size=5)
    with pytest.raises(ResumeMismatch, match="shard_size"):
        run_stage(fake_stage(), src, tmp_path / "out", shard_size=3)
    write_jsonl(src, prompt_rows(7))
    with pytest.raises(ResumeMismatch, match="input"):
        run_stage(fake_stage(), src, tmp_path / "out", shard_size=5)
    report = run_stage(fake_stage(seed=1), src, tmp_path / "out", shard_size=5, force=True)
    assert report.shards_run == 2 and len(rows_of(tmp_path / "out")) == 7


def test_done_run_does_not_load_the_model(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", prompt_rows(6))
    run_stage(fake_stage(), src, tmp_path / "out", shard_size=5)

    class NoSetup(FailingAt):
        def setup(self):
            raise AssertionError("setup called although every shard was done")

    report = run_stage(NoSetup(fake_stage(), 0), src, tmp_path / "out", shard_size=5)
    assert report.shards_run == 0


def test_incomplete_stage_folder_is_not_read_as_input(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", prompt_rows(10))
    with pytest.raises(Boom):
        run_stage(FailingAt(fake_stage(), fail_on_call=2), src, tmp_path / "out", shard_size=5)
    with pytest.raises(InputError, match="incomplete"):
        rows_of(tmp_path / "out")


def test_samples_depend_on_prompt_and_seed_only(tmp_path):
    rows = prompt_rows(8)
    a = run_stage(fake_stage(), write_jsonl(tmp_path / "a.jsonl", rows), tmp_path / "a.parquet", shard_size=3)
    b = run_stage(fake_stage(), write_jsonl(tmp_path / "b.jsonl", rows[::-1]), tmp_path / "b.parquet", shard_size=5)
    assert a.rows == b.rows == 8
    ra = {r["prompt_id"]: r["responses"] for r in rows_of(tmp_path / "a.parquet")}
    rb = {r["prompt_id"]: r["responses"] for r in rows_of(tmp_path / "b.parquet")}
    assert ra == rb
    assert len({tuple(v) for v in ra.values()}) == 8
    assert all(len(r["stopped_at_eos"]) == 3 for r in rows_of(tmp_path / "a.parquet"))
