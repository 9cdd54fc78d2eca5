"""LoRA adapter folders: the base they were trained on, their tokenizer, and a merged copy.

A merged copy is what generation backends without adapter support (vLLM, a plain ``generate``)
load; it is made once per adapter and trusted only when its marker names that adapter's files.
"""

from __future__ import annotations

import json
from pathlib import Path

from pvar.fingerprint import json_digest, model_record

MERGED_MARKER = ".pvar-merged-from"


def adapter_base(adapter: Path) -> str:
    """The base model a LoRA adapter folder was trained on (resolved like a policy name)."""
    from pvar.backends.assets import resolve_policy

    return resolve_policy(json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"])


def tokenizer_source(model: str) -> str:
    """Where a model's tokenizer loads from: an adapter's own copy if saved, else its base's."""
    from pvar.backends.assets import resolve_policy

    src = Path(model)
    if not (src / "adapter_config.json").is_file():
        return resolve_policy(model)
    return model if (src / "tokenizer_config.json").is_file() else adapter_base(src)


def merged_model(model: str, folder: Path) -> str:
    """A LoRA adapter folder merged into its base once (cached in ``folder``); anything else as is.

    The base named in ``adapter_config.json`` may be a built-in name ('smollm2'), so it is
    resolved first; the tokenizer comes from the adapter folder when saved there, else the base.
    """
    src = Path(model)
    if not (src / "adapter_config.json").is_file():
        return model
    stamp = json_digest(model_record(model))
    marker = folder / MERGED_MARKER
    if marker.is_file() and marker.read_text() == stamp:
        return str(folder)
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(adapter_base(src), dtype=torch.float32),
                                       str(src)).merge_and_unload()
    from pvar.io.writers import atomic_folder

    with atomic_folder(folder) as tmp:
        merged.save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(tokenizer_source(model)).save_pretrained(str(tmp))
        (tmp / MERGED_MARKER).write_text(stamp)  # last: a folder without it is never trusted
    return str(folder)
