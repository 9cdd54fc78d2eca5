"""Build the TRL trainer for a ``TrainConfig``: model, LoRA, TRL config, data, and pvar's DPO subclass.

``PvarDPOTrainer`` (made by :func:`pvar_dpo_trainer_class`) adds two things to TRL's ``DPOTrainer``:

- Cached reference log-probs. TRL's ``__init__`` always calls ``_precompute_ref_logps`` when
  ``precompute_ref_log_probs=True``; the override returns the dataset unchanged when it already holds
  ``ref_chosen_logps`` and ``ref_rejected_logps``, and with a :class:`RefLogpCache` it looks each pair
  up by key, runs TRL's own ``compute_ref_log_probs`` (same collator, same model or disabled adapter)
  on the missing pairs only, stores them, and attaches both columns. Both columns are in TRL's
  ``_signature_columns``, so they reach the collator, which batches them (B rows each).
- Per-pair weights. A collator wrapper carries the ``pvar_weight`` column as a (B,) tensor; the
  ``compute_loss`` override splits the batch (the DPO layout is [chosen_1..B, rejected_1..B] along dim
  0 for input_ids/attention_mask/completion_mask, B rows for ref_*_logps), calls TRL's loss once per
  pair, and returns sum_i w_i * loss_i / B. With every weight 1 this is TRL's mean of per-pair losses.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvar.errors import ConfigError, resolved
from pvar.fingerprint import model_fingerprint
from pvar.training.data import in_sampling_context, load_pairs, row_keys
from pvar.training.refcache import RefLogpCache

LOG_FILE = "train_log.jsonl"  # one JSON object per logging step, in the checkpoint folder

WEIGHT_COLUMN = "pvar_weight"
KEY_COLUMN = "pvar_ref_key"
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
LOSS_TYPES = {"dpo": "sigmoid", "ipo": "ipo"}


@dataclass
class Built:
    trainer: Any
    tokenizer: Any
    n_pairs: int
    manifest: dict[str, Any]
    log_rows: list[dict[str, Any]] = field(default_factory=list)


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
            store = RefLogpCache(ref_cache, model_fingerprint(folder), str(folder))
        trainer = pvar_dpo_trainer_class()(train_dataset=data, ref_store=store, **common)
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
    return Built(trainer=trainer, tokenizer=tokenizer, n_pairs=n_pairs, manifest=manifest, log_rows=log_rows)


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


class WeightCollator:
    """Wraps TRL's preference collator and adds each example's weight as a float32 (B,) tensor."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        out = self.base(examples)
        weights = [float(ex[WEIGHT_COLUMN]) for ex in examples]
        out[WEIGHT_COLUMN] = torch.tensor(weights, dtype=torch.float32)  # cpu-only: collated; the loss moves it
        return out


def one_pair(inputs: dict[str, Any], i: int, batch: int) -> dict[str, Any]:
    """Pair ``i`` of a DPO batch: rows i and B+i of the (2B, L) tensors, row i of the (B,) ones; padding trimmed."""
    import torch

    seq_len = inputs["input_ids"].size(1)
    out = {}
    for key, value in inputs.items():
        if torch.is_tensor(value) and value.dim() >= 1 and value.size(0) == 2 * batch:
            out[key] = value[[i, batch + i]]
        elif torch.is_tensor(value) and value.dim() >= 1 and value.size(0) == batch:
            out[key] = value[i : i + 1]
        else:
            out[key] = value
    # The collator pads on the right, so the pair's tokens are the first `keep` positions.
    keep = int(out["attention_mask"].sum(dim=1).max())
    for key, value in out.items():
        if torch.is_tensor(value) and value.dim() == 2 and value.size(0) == 2 and value.size(1) == seq_len:
            out[key] = value[:, :keep]
    return out


@functools.cache
def pvar_dpo_trainer_class() -> type:
    """TRL's DPOTrainer plus the reference log-prob cache and per-pair weights (see the module docstring)."""
    from torch.utils.data import DataLoader
    from trl import DPOTrainer

    class PvarDPOTrainer(DPOTrainer):
        def __init__(self, *args: Any, ref_store: RefLogpCache | None = None, **kwargs: Any) -> None:
            # Set before DPOTrainer.__init__, which calls _prepare_dataset and _precompute_ref_logps.
            self.pvar_ref_store = ref_store
            self.pvar_ref_computed: int | None = None
            self.pvar_ref_reused: int | None = None
            self.pvar_truncated: int | None = None
            super().__init__(*args, **kwargs)
            if WEIGHT_COLUMN in (self.train_dataset.column_names or []):
                self.data_collator = WeightCollator(self.data_collator)

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if WEIGHT_COLUMN not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, WEIGHT_COLUMN]

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if dataset_name == "train" and args.max_length is not None and "prompt_ids" in dataset.column_names:
                # The collator cuts what exceeds max_length: count the pairs it will cut, and say so.
                longest = [len(p) + max(len(c), len(r)) for p, c, r in
                           zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)]
                self.pvar_truncated = sum(n > args.max_length for n in longest)
                if self.pvar_truncated:
                    from pvar import reporting

                    reporting.log(f"train: {self.pvar_truncated} of {len(longest)} pairs exceed max_length "
                                  f"{args.max_length} with their prompt and are cut ({args.truncation_mode})")
            if dataset_name == "train" and len(dataset) == 0:
                raise ConfigError(f"max_length {args.max_length}: the prompt alone fills it for every pair (prompts "
                                  "are counted with the chat template); raise max_length")
            if dataset_name == "train" and WEIGHT_COLUMN in (dataset.column_names or []):
                # Normalise over the pairs TRL kept (it drops those whose prompt alone fills max_length).
                weights = dataset[WEIGHT_COLUMN]
                mean = sum(weights) / len(weights) if weights else 0.0
                if mean <= 0:
                    raise ConfigError("weight_by: every kept pair has weight 0; nothing would be trained")
                dataset = dataset.remove_columns(WEIGHT_COLUMN).add_column(WEIGHT_COLUMN, [w / mean for w in weights])
            return dataset

        def _precompute_ref_logps(self, dataset, name, batch_size):
            columns = dataset.column_names or []
            if all(c in columns for c in REF_COLUMNS):
                return dataset  # already attached: nothing to run
            if self.pvar_ref_store is None or KEY_COLUMN not in columns or self.is_deepspeed_enabled:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            keys = dataset[KEY_COLUMN]
            found = self.pvar_ref_store.lookup(keys)
            self.pvar_ref_reused = sum(k in found for k in keys)
            todo: dict[str, int] = {}
            for i, key in enumerate(keys):
                if key not in found and key not in todo:
                    todo[key] = i
            chosen: list[float] = []
            rejected: list[float] = []
            if todo:
                loader = DataLoader(dataset.select(list(todo.values())), batch_size=batch_size,
                                    collate_fn=self.data_collator, shuffle=False,
                                    num_workers=self.args.dataloader_num_workers)
                model = self.ref_model or self.model
                for batch in self.accelerator.prepare(loader):
                    c, r = self.compute_ref_log_probs(model, batch)
                    c, r = self.accelerator.gather_for_metrics((c, r))
                    chosen += c.float().cpu().tolist()
                    rejected += r.float().cpu().tolist()
                if self.accelerator.is_main_process:  # every process gathered all; one writes
                    self.pvar_ref_store.add(list(todo), chosen, rejected)
                self.accelerator.wait_for_everyone()
                found.update(zip(todo, zip(chosen, rejected, strict=True), strict=True))
            self.pvar_ref_computed = len(todo)
            dataset = dataset.add_column(REF_COLUMNS[0], [found[k][0] for k in keys])
            return dataset.add_column(REF_COLUMNS[1], [found[k][1] for k in keys])

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            weights = inputs.pop(WEIGHT_COLUMN, None)
            if weights is None or return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            batch = weights.size(0)
            total = None
            for i in range(batch):
                loss = super().compute_loss(model, one_pair(inputs, i, batch))
                term = weights[i].to(device=loss.device, dtype=loss.dtype) * loss
                total = term if total is None else total + term
            return total / batch

    return PvarDPOTrainer


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
