"""Kill -9 mid-run and resume; Ray engine vs local engine: both must equal an uninterrupted local run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pvar.io.rows import read_rows
from tests.conftest import write_jsonl

pytest.importorskip("transformers")


def rows_of(path):
    return [r for b in read_rows(path) for r in b.data.to_pylist()]


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    from pvar.testing import tiny_causal_lm

    tmp = tmp_path_factory.mktemp("tiny")
    prompts = [{"prompt_id": f"k{i:03d}", "prompt": f"tell me about the {w} number {i}"}
               for i, w in zip(range(30), ["river", "stone", "cloud", "tree", "song"] * 6, strict=True)]
    texts = [p["prompt"] for p in prompts] + ["a b c d e f g h i j k l m n o p"]
    model = tiny_causal_lm(tmp / "model", texts)
    return write_jsonl(tmp / "prompts.jsonl", prompts), model


def gen_cmd(src, out, model):
    return [sys.executable, "-m", "pvar.cli", "generate", str(src), "-o", str(out), "--model", str(model),
            "--n", "2", "--max-new-tokens", "16", "--shard-size", "3", "--batch-size", "4"]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny_setup):
    src, model = tiny_setup
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ref = tmp_path / "ref"
    subprocess.run(gen_cmd(src, ref, model), check=True, capture_output=True, env=env)

    out = tmp_path / "out"
    proc = subprocess.Popen(gen_cmd(src, out, model), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    manifest = out / "_manifest.json"
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists():
            done = len(json.loads(manifest.read_text())["shards"])
            if done >= 2:
                break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads(manifest.read_text())
    assert not state["complete"], "the run finished before it could be killed; make it longer"
    assert 2 <= len(state["shards"]) < 10

    subprocess.run(gen_cmd(src, out, model), check=True, capture_output=True, env=env)
    got, want = rows_of(out), rows_of(ref)
    assert [r["prompt_id"] for r in got] == [r["prompt_id"] for r in want]
    assert len({r["prompt_id"] for r in got}) == 30
    assert got == want
    assert not list(out.glob(".*tmp*"))


def test_ray_engine_equals_local(tmp_path, tiny_setup):
    pytest.importorskip("ray")
    from pvar.engines import run_stage
    from pvar.pipeline.generate import GenerateConfig, GenerateStage

    src, model = tiny_setup
    cfg = GenerateConfig.make(model=str(model), n=2, max_new_tokens=16, batch_size=4)
    local = run_stage(GenerateStage(cfg), src, tmp_path / "local.parquet", shard_size=16)
    ray_run = run_stage(GenerateStage(cfg), src, tmp_path / "ray.parquet", shard_size=16, engine="ray",
                        num_workers=2)
    assert ray_run.shards_run == local.shards_run == 2
    assert rows_of(tmp_path / "ray.parquet") == rows_of(tmp_path / "local.parquet")
    again = run_stage(GenerateStage(cfg), src, tmp_path / "ray.parquet", shard_size=16, engine="ray")
    assert again.shards_run == 0


@pytest.fixture(scope="module")
def generated(tmp_path_factory, tiny_setup):
    """The tiny prompts with two responses each, and a tiny hf reward model to score them."""
    from pvar.engines import run_stage
    from pvar.pipeline.generate import GenerateConfig, GenerateStage
    from pvar.testing import tiny_reward_model

    src, model = tiny_setup
    tmp = tmp_path_factory.mktemp("gen")
    cfg = GenerateConfig.make(model=str(model), n=2, max_new_tokens=8, batch_size=8)
    run_stage(GenerateStage(cfg), src, tmp / "gen.parquet", shard_size=16)
    texts = [r["prompt"] for r in rows_of(src)] + [t for r in rows_of(tmp / "gen.parquet") for t in r["responses"]]
    return tmp / "gen.parquet", tiny_reward_model(tmp / "rm", texts)


def test_ray_reward_stage_equals_local_and_resumes(tmp_path, generated, monkeypatch):
    """The reward stage on Ray: the same rows as the local engine, actors asking for the configured
    resources, and a second run that redoes nothing."""
    ray = pytest.importorskip("ray")
    from pvar.engines import run_stage
    from pvar.pipeline.reward import RewardConfig, RewardStage

    src, rm = generated
    cfg = RewardConfig.make(reward=f"hf:{rm}", batch_size=4)
    local = run_stage(RewardStage(cfg), src, tmp_path / "local.parquet", shard_size=8)
    asked = []
    original = ray.data.Dataset.map_batches

    def spy(self, fn, *args, **kwargs):
        asked.append({k: kwargs.get(k) for k in ("num_gpus", "num_cpus")})
        return original(self, fn, *args, **kwargs)

    monkeypatch.setattr(ray.data.Dataset, "map_batches", spy)
    on_ray = run_stage(RewardStage(cfg), src, tmp_path / "ray.parquet", shard_size=8, engine="ray", num_workers=2,
                       cpus_per_worker=0.5)
    assert asked == [{"num_gpus": 0.0, "num_cpus": 0.5}]  # a CPU reward model asks for no GPU
    assert on_ray.shards_run == local.shards_run == 4
    assert rows_of(tmp_path / "ray.parquet") == rows_of(tmp_path / "local.parquet")
    again = run_stage(RewardStage(cfg), src, tmp_path / "ray.parquet", shard_size=8, engine="ray")
    assert again.shards_run == 0 and len(asked) == 1  # nothing pending: no actor pool at all


def test_actor_resources_follow_the_stage():
    """GPU stages must ask Ray for GPUs: an actor that asks for none sees CUDA_VISIBLE_DEVICES=''."""
    from pvar.engines.ray import actor_resources
    from pvar.pipeline.generate import GenerateConfig, GenerateStage
    from pvar.pipeline.reward import RewardConfig, RewardStage

    def stage(**kw):
        return GenerateStage(GenerateConfig.make(backend="fake", **kw))

    assert actor_resources(stage(), None, 1) == {"num_gpus": 0.0, "num_cpus": 1.0}
    assert actor_resources(stage(device="cuda:1"), None, 2) == {"num_gpus": 1.0, "num_cpus": 2.0}
    vllm = GenerateStage.__new__(GenerateStage)
    vllm.config = GenerateConfig.make(backend="vllm", tensor_parallel_size=4)
    assert actor_resources(vllm, None, 1)["num_gpus"] == 4.0  # one engine per actor, over its TP GPUs
    assert actor_resources(vllm, 8, 1)["num_gpus"] == 8.0  # an explicit request wins
    reward = RewardStage(RewardConfig.make(reward="fake", device="cuda"))
    assert actor_resources(reward, None, 1)["num_gpus"] == 1.0


def test_resource_options_are_range_checked(tmp_path, tiny_setup):
    from pvar.engines import run_stage
    from pvar.errors import ConfigError
    from pvar.pipeline.generate import GenerateConfig, GenerateStage

    src, _ = tiny_setup
    stage = GenerateStage(GenerateConfig.make(backend="fake"))
    for bad in ({"gpus_per_worker": -1}, {"cpus_per_worker": float("nan")}, {"gpus_per_worker": True}):
        with pytest.raises(ConfigError, match="per-worker"):
            run_stage(stage, src, tmp_path / "x.parquet", engine="ray", **bad)
    assert not (tmp_path / "x.parquet").exists()
