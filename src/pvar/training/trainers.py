"""Build the TRL trainer for a ``TrainConfig``: model, LoRA, TRL config, data, and pvar's DPO subclass.

``PvarDPOTrainer`` lives in :mod:`pvar.training.dpo_trainer`.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvar.errors import ConfigError, resolved
from pvar.fingerprint import model_fingerprint
from pvar.training.data import in_sampling_context, load_pairs, row_keys
from pvar.training.dpo_trainer import KEY_COLUMN, WEIGHT_COLUMN, pvar_dpo_trainer_class
from pvar.training.refcache import RefLogpCache

LOG_FILE = "train_log.jsonl"  # one JSON object per logging step, in the checkpoint folder

LOSS_TYPES = {"dpo": "sigmoid", "ipo": "ipo"}


@dataclass
class Built:
    trainer: Any
    tokenizer: Any
    n_pairs: int
    manifest: dict[str, Any]
    log_rows: list[dict[str, Any]] = field(default_factory=list)
    model_id: str | None = None  # the base model's fingerprint: the key of states shared between trainers


def build_trainer(pairs_path: str | Path, out: Path, cfg: Any, *, ref_cache: str | Path | None = None) -> Built:
    """Everything ``train`` needs, short of calling ``trainer.train()``; tests use it to inspect losses."""
    import torch

    from pvar.backends.assets import resolve_policy

    data = load_pairs(pairs_path, cfg.weight_by)
    n_pairs = len(data)
    cuda = torch.cuda.is_available()
    args = trl_config(cfg, out, cuda=cuda, ref_cache=ref_cache is not None and cfg.algo in LOSS_TYPES)
    folder = resolve_policy(cfg.model)
    if Path(folder).is_dir() and resolved(out) == resolved(folder):
        raise ConfigError(f"out_dir: {out} is the model's own folder; write the checkpoint elsewhere")
    tokenizer, model = load_model(folder, cfg.model, getattr(cfg, "dtype", "float32"))
    data = in_sampling_context(data, tokenizer)  # a chat policy trains under the template it sampled with
    peft_config = lora_config(cfg, model) if cfg.lora else None
    log_rows: list[dict[str, Any]] = []
    callbacks = [jsonl_log_callback(out / LOG_FILE, log_rows)]
    common = {"model": model, "args": args, "processing_class": tokenizer, "peft_config": peft_config,
              "callbacks": callbacks}

    store = None
    model_id = model_fingerprint(folder)
    if ref_cache is not None and cfg.algo not in LOSS_TYPES:
        warnings.warn(f"ref_cache is used by dpo and ipo only; algo {cfg.algo!r} ignores it", stacklevel=3)
    if cfg.algo in LOSS_TYPES:
        if cfg.weight_by is not None:
            from datasets import Value

            if cfg.weight_by != WEIGHT_COLUMN:
                data = data.rename_column(cfg.weight_by, WEIGHT_COLUMN)
            data = data.cast_column(WEIGHT_COLUMN, Value("float64"))
        if ref_cache is not None:
            settings = {"max_length": args.max_length, "truncation_mode": args.truncation_mode,
                        "ld_alpha": args.ld_alpha}
            data = data.add_column(KEY_COLUMN, row_keys(data, settings))
            store = RefLogpCache(ref_cache, model_id, str(folder))
        from pvar.training.frozen_blocks import frozen_blocks_for, sharing

        shared = sharing()  # the reference pass in the frozen blocks, the LM head at completions only
        trainer = pvar_dpo_trainer_class()(
            train_dataset=data, ref_store=store, frozen=(lambda t: frozen_blocks_for(t, cfg, model_id)) if shared
            else None, compact=shared and bool(getattr(cfg, "skip_unused", True)), **common)
    elif cfg.algo == "kto":
        from trl import KTOTrainer
        from trl.data_utils import unpair_preference_dataset

        unpaired = unpair_preference_dataset(data.select_columns(["prompt", "chosen", "rejected"]))
        trainer = KTOTrainer(train_dataset=unpaired.shuffle(seed=cfg.seed).flatten_indices(), **common)
    elif cfg.algo == "simpo":
        from trl.experimental.cpo import CPOTrainer

        trainer = CPOTrainer(train_dataset=data, **common)
    else:
        from trl.experimental.orpo import ORPOTrainer

        trainer = ORPOTrainer(train_dataset=data, **common)

    manifest = {
        "config": cfg.model_dump(mode="json"),
        "fingerprint": cfg.fingerprint(),
        "pairs": str(resolved(pairs_path)),
        "n_pairs": n_pairs,
        "model_folder": str(folder),
        "trainer": f"{type(trainer).__module__}.{type(trainer).__qualname__}",
        "trl_config": type(args).__name__,
        "ref_cache": None if store is None else str(store.dir),
        "precompute_ref_log_probs": getattr(args, "precompute_ref_log_probs", None),
        "device": "cuda" if cuda else "cpu",
        "versions": _versions(),
    }
    return Built(trainer=trainer, tokenizer=tokenizer, n_pairs=n_pairs, manifest=manifest, log_rows=log_rows,
                 model_id=model_id)


def trl_config(cfg: Any, out: Path, *, cuda: bool, ref_cache: bool) -> Any:
    """The TRL config of ``cfg.algo``: our fields, CPU-friendly defaults, then ``cfg.trl_args``."""
    if cfg.algo in LOSS_TYPES:
        from trl import DPOConfig as config_cls
    elif cfg.algo == "kto":
        from trl import KTOConfig as config_cls
    elif cfg.algo == "simpo":
        from trl.experimental.cpo import CPOConfig as config_cls
    else:
        from trl.experimental.orpo import ORPOConfig as config_cls

    values: dict[str, Any] = {
        "output_dir": str(out), "learning_rate": cfg.lr, "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps, "per_device_train_batch_size": cfg.batch_size, "beta": cfg.beta,
        "max_length": cfg.max_length, "seed": cfg.seed,
        "logging_steps": 1, "save_strategy": "no", "report_to": [], "bf16": bool(getattr(cfg, "bf16", False)),
        "fp16": False, "use_cpu": not cuda, "dataloader_pin_memory": cuda,
        # Every trainable weight (LoRA or full) is used in each forward: DDP need not search for unused
        # ones (its default here warns so at every step under `accelerate launch`).
        "ddp_find_unused_parameters": False,
    }
    known = {f.name for f in dataclasses.fields(config_cls)}
    # TRL turns gradient checkpointing on by default; transformers 5 renamed it activation_checkpointing.
    ckpt = "activation_checkpointing" if "activation_checkpointing" in known else "gradient_checkpointing"
    values[ckpt] = bool(getattr(cfg, "gradient_checkpointing", False))
    if cfg.algo in LOSS_TYPES:
        # Precompute: TRL keeps no reference model and runs none per step (None ref_cache: TRL's own cache).
        values.update(loss_type=[LOSS_TYPES[cfg.algo]], precompute_ref_log_probs=True)
        if getattr(cfg, "sft_weight", 0.0) > 0:  # RPO: the preference loss plus the chosen responses' NLL
            values.update(loss_type=[LOSS_TYPES[cfg.algo], "sft"], loss_weights=[1.0, cfg.sft_weight])
    elif cfg.algo == "simpo":
        values.update(loss_type="simpo", cpo_alpha=0.0)
    if cfg.algo in ("simpo", "orpo"):
        values["remove_unused_columns"] = False  # their collator needs the text columns (TRL forces it anyway)
    for key in cfg.trl_args:
        if key not in known:
            raise ConfigError(f"trl_args.{key}: {config_cls.__name__} has no such field")
    extra = dict(cfg.trl_args)
    if "gradient_checkpointing" in extra and ckpt != "gradient_checkpointing":
        extra.setdefault(ckpt, extra.pop("gradient_checkpointing"))
    values.update(extra)
    if ref_cache and cfg.algo in LOSS_TYPES and not values.get("precompute_ref_log_probs"):
        raise ConfigError("trl_args.precompute_ref_log_probs: must stay true when a ref_cache is given")
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"trl_args: {config_cls.__name__} refused the settings: {_one_line(exc)}") from None


def load_model(folder: str, name: str, dtype: str = "float32") -> tuple[Any, Any]:
    """Tokenizer and causal LM (float32 unless told) from a local folder (the pad token falls back to EOS)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model: cannot load {name!r} ({folder}): {_one_line(exc)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    from pvar.backends import onednn

    onednn.enable(model)  # frozen float32 layers (LoRA's base, the reference pass) through oneDNN on the CPU
    return tokenizer, model


def lora_config(cfg: Any, model: Any = None) -> Any:
    """LoRA on every linear layer but the LM head (peft's "all-linear"), no dropout; with ``cfg.lora_layers``
    only in the top K transformer blocks, so the backward pass stops at the lowest adapted block."""
    from peft import LoraConfig

    targets: Any = "all-linear"
    layers = None
    if cfg.lora_layers is not None:
        depth = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        if not depth:
            raise ConfigError("lora_layers: the model's config gives no num_hidden_layers")
        layers = list(range(max(0, depth - cfg.lora_layers), depth))
        targets = _linear_names(model)  # peft takes layers_to_transform only with explicit module names
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=targets, lora_dropout=0.0,
                      task_type="CAUSAL_LM", layers_to_transform=layers, fan_in_fan_out=_conv1d_only(model))


def _conv1d_only(model: Any) -> bool:
    """GPT-2-style blocks store weights as (fan_in, fan_out) in ``Conv1D``: LoRA must be told so (peft
    otherwise corrects it with a warning per layer). False for ``nn.Linear`` models and mixed ones."""
    if model is None:
        return False
    import torch

    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        return False
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not head]
    return bool(layers) and all(isinstance(m, Conv1D) for m in layers)


def _linear_names(model: Any) -> list[str]:
    """Leaf names of the linear layers inside the transformer blocks (what "all-linear" adapts)."""
    import torch

    kinds: tuple[type, ...] = (torch.nn.Linear,)
    try:
        from transformers.pytorch_utils import Conv1D

        kinds += (Conv1D,)
    except ImportError:
        pass
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, kinds) and module is not head})


def quiet_progress(trainer: Any, progress: Any) -> None:
    """Replace the trainer's own console output (tqdm bar, printed log dicts) with ``progress(step, total, logs)``."""
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)

    class Report(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero:
                progress(state.global_step, state.max_steps, dict(logs or {}))

    trainer.add_callback(Report())


def jsonl_log_callback(path: Path, rows: list[dict[str, Any]]) -> Any:
    """A TrainerCallback appending each ``on_log`` event (step + TRL's metrics) to ``path`` and ``rows``."""
    import json

    from transformers import TrainerCallback

    from pvar.io.jsonable import jsonable

    class JsonlLog(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero:
                return
            row = {"step": state.global_step, **{k: jsonable(v) for k, v in (logs or {}).items()}}
            rows.append(row)
            with open(path, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    return JsonlLog()


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "transformers", "trl", "peft", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
