"""Training under `accelerate launch`: two CPU processes (gloo) train, the main one alone writes.

accelerate's ``--cpu`` launcher starts one process unless MPI is set up
(accelerate/commands/launch.py: ``--cpu`` always takes ``simple_launcher``), so the CPU stand-in
for a multi-GPU node is ``--multi_gpu --num_processes 2`` with ``ACCELERATE_USE_CPU=1``, which
``AcceleratorState`` reads and then picks ``MULTI_CPU`` with the gloo backend (accelerate/state.py).
On GPUs the same command runs DDP; the shipped configs add FSDP or ZeRO-3.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("accelerate")
yaml = pytest.importorskip("yaml")

from pvar.training import launch  # noqa: E402
from tests.test_train import TOPICS, make_rows, write_pairs  # noqa: E402

CPU_PAIR = ("--multi_gpu", "--num_processes", "2", "--main_process_port", "0")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pvar.testing import tiny_causal_lm

    texts = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in make_rows(len(TOPICS))]
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny"), texts)


def cpu_env() -> dict[str, str]:
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def test_two_processes_train_and_write_one_reference_cache(tmp_path: Path, tiny: Path) -> None:
    from pvar.pipeline.train import TrainConfig, train

    pairs = write_pairs(tmp_path / "pairs.jsonl", make_rows(16))
    cfg = TrainConfig.make(model=str(tiny), max_steps=4, batch_size=2, lr=1e-3)
    job = tmp_path / "job.json"
    launch.write_job(job, pairs, tmp_path / "out", cfg, tmp_path / "ref")
    cmd = launch.launch_command(job, config=None, num_processes=None, extra=CPU_PAIR)
    done = subprocess.run(cmd, env=cpu_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(launch.result_path(job).read_text())
    assert result["num_processes"] == 2 and result["steps"] == 4
    assert result["final_loss"] < result["first_loss"]  # it learned
    assert result["ref_computed"] == 16
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log if "loss" in row] == [1, 2, 3, 4]  # one writer: no line twice
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "out" / "training_args.bin").exists()
    assert "find_unused_parameters=True" not in done.stderr
    assert len(list((tmp_path / "ref").rglob("*.parquet"))) == 1  # one reference cache, written once
    # The cache the two processes wrote is the one a later one-process run reuses.
    again = train(pairs, tmp_path / "again", cfg, ref_cache=tmp_path / "ref")
    assert again.ref_reused == 16 and again.ref_computed == 0


def test_launch_command_and_shipped_configs(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    cmd = launch.launch_command(job, config="zero3", num_processes=8)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "8"
    assert cmd[-3:] == ["-m", "pvar.pipeline.train", str(job)]
    kinds = {}
    for name in launch.CONFIGS:
        data = yaml.safe_load(launch.accelerate_config(name).read_text())
        kinds[name] = data["distributed_type"]
        assert data["mixed_precision"] == "bf16" and data["use_cpu"] is False
    assert kinds == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero3": "DEEPSPEED"}
    assert yaml.safe_load(launch.accelerate_config("zero3").read_text())["deepspeed_config"]["zero_stage"] == 3
    from pvar.errors import ConfigError

    with pytest.raises(ConfigError, match="no such file"):
        launch.accelerate_config(str(tmp_path / "missing.yaml"))


def test_run_trains_its_arms_under_accelerate_launch(tmp_path: Path, tiny: Path, cli, monkeypatch) -> None:
    for key, value in cpu_env().items():
        monkeypatch.setenv(key, value)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
policy: {tiny}
backend: fake
until: train
budget: 0.5
prompts: {{pool: 8, eval: 4}}
scoring: {{n: 4, reward: fake, max_new_tokens: 6}}
theory: {{prompts: 0}}
train: {{max_steps: 2, batch_size: 2, max_length: 64, lr: 0.01, launcher: accelerate,
         accelerate_args: [--multi_gpu, --num_processes, "2", --main_process_port, "0"]}}
arms:
  - {{name: top, select: top, by: pvar}}
""")
    code, _, err = cli("run", cfg, "-o", tmp_path / "run")
    assert code == 0, err[-3000:]
    state = json.loads((tmp_path / "run" / "state.json").read_text())["steps"]
    assert state["train:top"]["num_processes"] == 2 and state["train:top"]["steps"] == 2
    assert (tmp_path / "run" / "arms" / "top" / "model" / "adapter_config.json").is_file()


def test_a_launched_process_shuts_its_process_group_down(tmp_path: Path, monkeypatch) -> None:
    """``python -m pvar.pipeline.train`` destroys the process group before it exits, after a failure too:
    a process that exits with it alive can abort in its threads' teardown."""
    from accelerate import PartialState

    from pvar.pipeline import train as train_module

    job = tmp_path / "job.json"
    job.write_text(json.dumps({"pairs": "p", "out": "o", "config": {}, "ref_cache": None}))
    calls = []
    monkeypatch.setattr(PartialState, "destroy_process_group", lambda self, group=None: calls.append(group))

    def boom(*args, **kwargs):
        raise RuntimeError("training failed")

    monkeypatch.setattr(train_module, "train", boom)
    with pytest.raises(RuntimeError, match="training failed"):
        train_module.main([str(job)])
    assert calls == [None]
