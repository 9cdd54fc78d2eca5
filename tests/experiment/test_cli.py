"""`pvar run` / `pvar report` on the command line: early failures are one line, exit 2, no work done."""

from __future__ import annotations

import pytest

from pvar.errors import ConfigError
from pvar.experiment import preflight
from pvar.experiment.context import config_diff
from pvar.experiment.presets import load_config


def test_paper_preset_fails_early_without_a_gpu(tmp_path, cli, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = cli("run", "--preset", "paper", "-o", tmp_path / "paper")
    assert code == 2 and err.count("\n") == 1
    assert "needs a CUDA GPU and none is visible here" in err
    assert not (tmp_path / "paper").exists()  # refused before the run folder is made


def test_paper_preset_needs_the_hub_when_a_gpu_is_there(monkeypatch):
    monkeypatch.setattr(preflight, "_has_gpu", lambda: True)
    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda name: object())  # pretend vLLM is installed
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-cache")
    with pytest.raises(ConfigError, match=r"^policy: 'meta-llama/Llama-3.1-8B-Instruct' is not in the local "
                                                 "hub cache and HF_HUB_OFFLINE is set"):
        preflight.preflight(load_config(preset="paper"))


def test_vllm_backend_override_is_checked(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(preflight, "_has_gpu", lambda: False)
    code, _, err = cli("run", "--preset", "quick", "--backend", "vllm", "-o", tmp_path / "r")
    assert code == 2 and "backend 'vllm' needs a CUDA GPU" in err


def test_engine_override_reaches_the_config():
    assert load_config(preset="quick", overrides={"engine": "ray"}).engine == "ray"


def test_bad_config_is_one_line(tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batchsize: 3\n")
    code, out, err = cli("run", bad, "-o", tmp_path / "r")
    assert code == 2 and out == "" and err == f"error: {bad}: train.batchsize: Extra inputs are not permitted (got 3)\n"
    assert not (tmp_path / "r").exists()


def test_missing_config_file(tmp_path, cli):
    code, _, err = cli("run", tmp_path / "nope.yaml")
    assert code == 2 and err.startswith(f"error: {tmp_path / 'nope.yaml'}: cannot read config")


def test_report_needs_a_run_folder(tmp_path, cli):
    code, _, err = cli("report", tmp_path)
    assert code == 2 and err == f"error: {tmp_path}: not a pvar run folder (no config.yaml)\n"


def test_config_diff_names_nested_keys():
    assert config_diff({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 1, "c": 3}, "e": 1}) == ["a.c", "d", "e"]


def test_show_config_round_trips(tmp_path, cli):
    code, out, _ = cli("run", "--preset", "cpu-full", "--engine", "ray", "--show-config")
    assert code == 0
    saved = tmp_path / "c.yaml"
    saved.write_text(out)
    assert load_config(saved) == load_config(preset="cpu-full", overrides={"engine": "ray"})
    assert not (tmp_path / "runs").exists()
