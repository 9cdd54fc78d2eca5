"""Train a policy on pvar's preference pairs with TRL: DPO, IPO, SimPO, ORPO or KTO.

    from pvar.pipeline.train import TrainConfig, train
    result = train("pairs.jsonl", "runs/dpo", TrainConfig.make(algo="dpo"), ref_cache="runs/ref_logps")

The pairs are the rows ``pvar pairs`` writes (prompt, chosen, rejected, prompt_id, pvar, ...), as
JSONL or Parquet; prompts may be text or chat messages. TRL does the training (no loop of ours):

- dpo   -> ``DPOTrainer``, loss_type "sigmoid"
- ipo   -> ``DPOTrainer``, loss_type "ipo" (TRL normalises by completion length; beta is IPO's tau)
- simpo -> ``trl.experimental.cpo.CPOTrainer`` with loss_type "simpo", cpo_alpha 0 (no reference model)
- orpo  -> ``trl.experimental.orpo.ORPOTrainer`` (no reference model; beta is ORPO's lambda)
- kto   -> ``KTOTrainer`` on the pairs unpaired with TRL's ``unpair_preference_dataset`` (then shuffled
  with the seed, because KTO reads its data in order and unpairing puts all chosen rows first)

Two additions over plain TRL, both for dpo/ipo (see :mod:`pvar.training`):

- ``ref_cache=FOLDER``: reference log-probs are stored per (model, pair, max_length) in Parquet and
  reused, so training one pool under several selections runs the reference model once per pair in
  total; TRL then trains with ``precompute_ref_log_probs=True`` and keeps no reference model.
- ``weight_by=COLUMN``: each pair's loss is scaled by that column (e.g. ``pvar``), normalised to mean 1
  over the training set.

``out_dir`` receives the checkpoint (full fine-tune: model + tokenizer; LoRA: the adapter folder,
``adapter_config.json`` + weights, plus the tokenizer), ``train_log.jsonl`` (one JSON object per
logging step; every step is logged) and ``train_config.json``. Files of an earlier run there are
overwritten.
"""

from __future__ import annotations

import contextlib
import json
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from pvar.config import Seed, StageConfig
from pvar.errors import ConfigError, InputError

ALGOS = ("dpo", "ipo", "simpo", "orpo", "kto")
REQUIRED_COLUMNS = ("prompt", "chosen", "rejected")
CONFIG_FILE = "train_config.json"

# TRL settings that TrainConfig owns: set them through its fields, not through trl_args.
_OWNED = {
    "learning_rate": "lr", "num_train_epochs": "epochs", "max_steps": "max_steps",
    "per_device_train_batch_size": "batch_size", "beta": "beta", "max_length": "max_length", "seed": "seed",
    "output_dir": "out_dir (an argument of train)",
}


class TrainConfig(StageConfig):
    """Settings of ``pvar train``. Defaults suit a LoRA run on CPU."""

    model: str = Field("smollm2", description="Policy to train: a local transformers folder, or 'smollm2' (built in).")
    algo: Literal["dpo", "ipo", "simpo", "orpo", "kto"] = Field(
        "dpo", description="dpo/ipo: TRL DPOTrainer (loss sigmoid/ipo); simpo: CPOTrainer (loss simpo, cpo_alpha 0); "
        "orpo: ORPOTrainer; kto: KTOTrainer on the unpaired pairs.")
    beta: float = Field(0.1, gt=0, description="The algorithm's beta: DPO's KL weight, IPO's tau, SimPO's reward "
                        "scale (its paper uses ~2), ORPO's lambda, KTO's beta.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (linear decay). 5e-5 suits LoRA (the default); "
                      "use ~5e-6 for a full fine-tune (lora=False).")
    epochs: float = Field(1.0, gt=0, description="Passes over the pairs, when max_steps is -1.")
    max_steps: int = Field(-1, ge=-1, description="Optimizer steps to run; -1 = as many as `epochs` takes.")
    batch_size: int = Field(4, ge=1, le=65_536, description="Pairs per step (KTO: unpaired rows per step, at least 2).")
    lora: bool = Field(True, description="Train a LoRA adapter on all linear layers (lm_head excluded) instead of "
                       "every weight.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = lora_alpha / lora_r).")
    lora_layers: int | None = Field(None, ge=1, description="LoRA in the top K transformer blocks only (None = all). "
                                    "Gradients then stop at the lowest adapted block: with K of L blocks a step "
                                    "costs about (1 + 2K/L) / 3 of a full-depth one.")
    max_length: int = Field(512, ge=8, le=1_048_576,
                            description="Cap on prompt + completion tokens; longer sequences are cut "
                            "at the end, pairs whose prompt alone fills it are dropped (dpo/ipo).")
    seed: Seed = Field(0, description="Seed for data order, LoRA init and dropout.")
    sft_weight: float = Field(0.0, ge=0, description="dpo/ipo: add the chosen responses' mean token NLL to the "
                              "loss with this weight (RPO, arXiv 2404.19733; TRL's loss_type 'sft'), which keeps "
                              "answers from degenerating while the preference margin grows. 0 = the plain loss.")
    weight_by: str | None = Field(None, description="Column of the pairs file (e.g. 'pvar') that scales each pair's "
                                  "loss, normalised to mean 1; dpo and ipo only. None = unweighted.")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Dtype the weights load in. bfloat16 halves the memory of a LoRA run's frozen base "
        "(an 8B model in 16 GB); full fine-tunes keep float32 master weights and train in bf16 via `bf16`.")
    bf16: bool = Field(False, description="bf16 mixed precision (GPUs; TrainingArguments.bf16).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: "
                                         "less memory for ~30 % more compute.")
    skip_unused: bool = Field(True, description="Skip work whose result training does not use (same losses, "
                              "fewer FLOPs): with lora_layers, each sequence runs through the frozen blocks below the "
                              "adapted ones once, not at every step; the LM head scores completion positions only.")
    trl_args: dict[str, Any] = Field(default_factory=dict, description="Extra fields of the TRL config "
                                     "(DPOConfig, CPOConfig, ORPOConfig or KTOConfig), applied last.")

    omit_at_default = ("dtype", "bf16", "gradient_checkpointing", "skip_unused", "sft_weight")

    @field_validator("batch_size")
    @classmethod
    def _kto_batch(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("algo") == "kto" and value < 2:
            raise ValueError("kto estimates its KL term within a batch, so it needs batch_size >= 2")
        return value

    @field_validator("sft_weight")
    @classmethod
    def _sft_algos(cls, value: float, info: ValidationInfo) -> float:
        if value > 0 and info.data.get("algo") not in ("dpo", "ipo"):
            raise ValueError(f"the chosen responses' NLL is added to dpo and ipo only, not {info.data.get('algo')!r} "
                             "(orpo has its own)")
        return value

    @field_validator("weight_by")
    @classmethod
    def _weighted_algos(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            if not value.strip():
                raise ValueError("give a column name, or leave weight_by unset")
            algo = info.data.get("algo")
            if algo not in ("dpo", "ipo"):
                raise ValueError(f"per-pair weights are implemented for algo dpo and ipo, not {algo!r}")
        return value

    @field_validator("trl_args")
    @classmethod
    def _not_owned(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in _OWNED:
                raise ValueError(f"{key!r} is set by {_OWNED[key]}, not through trl_args")
        try:
            json.dumps(value)
        except TypeError as exc:
            raise ValueError(f"values must be JSON-serialisable ({exc})") from None
        return value


@dataclass(frozen=True)
class TrainResult:
    """What a run did. ``peak_rss_mb`` is this process's peak resident memory so far (getrusage)."""

    out_dir: str
    steps: int
    first_loss: float | None
    final_loss: float | None
    seconds: float  # the whole call: loading, reference log-probs, training, saving
    train_seconds: float  # trainer.train() only
    peak_rss_mb: float
    n_pairs: int  # pairs read from the file (kto trains on twice as many unpaired rows)
    ref_computed: int | None = None  # pairs whose reference log-probs this run computed (ref_cache only)
    ref_reused: int | None = None  # pairs whose reference log-probs came from ref_cache
    truncated_pairs: int | None = None  # dpo/ipo: pairs whose prompt + completion exceed max_length (cut)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train(
    pairs_path: str | Path, out_dir: str | Path, cfg: TrainConfig | None = None, *, ref_cache: str | Path | None = None,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on the pairs with the TRL trainer of ``cfg.algo``; write the checkpoint to ``out_dir``.

    ``ref_cache`` (dpo/ipo): a folder of cached reference log-probs shared between runs on the same model;
    only pairs missing from it are run through the reference model. None = TRL's own precompute (its
    cache is keyed by the whole dataset, so a different selection recomputes every pair). For the
    other algorithms it is not used (simpo/orpo have no reference model; kto uses TRL's own path).
    ``progress(step, total_steps, logs)`` replaces the trainer's console output when given.
    Raises ConfigError / InputError (one line) for bad settings or pairs.
    """
    from pvar.training.frozen_blocks import frozen_blocks_for
    from pvar.training.lm_head import completion_positions_only
    from pvar.training.trainers import build_trainer, quiet_progress

    start = time.perf_counter()
    cfg = cfg or TrainConfig()
    out = Path(out_dir)
    from pvar.io.paths import check_output

    check_output(pairs_path, out)
    built = build_trainer(pairs_path, out, cfg, ref_cache=ref_cache)
    trainer = built.trainer
    if progress is not None:
        quiet_progress(trainer, progress)
    # Under `accelerate launch` every process runs this function; only the main one writes files.
    main = trainer.accelerator.is_main_process
    earlier_run = (out / CONFIG_FILE).is_file()
    trainer.accelerator.wait_for_everyone()  # every process has looked before the main one writes
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / CONFIG_FILE, built.manifest)
    log_rows = built.log_rows

    t0 = time.perf_counter()
    fast = cfg.skip_unused
    frozen = frozen_blocks_for(trainer, cfg, built.model_id)
    with frozen, completion_positions_only() if fast else contextlib.nullcontext():
        trainer.train()
    train_seconds = time.perf_counter() - t0
    _save_checkpoint(trainer, built.tokenizer, out, clean=earlier_run)

    losses = [row["loss"] for row in log_rows if isinstance(row.get("loss"), float)]
    return TrainResult(
        out_dir=str(out),
        steps=int(trainer.state.global_step),
        first_loss=losses[0] if losses else None,
        final_loss=losses[-1] if losses else None,
        seconds=time.perf_counter() - start,
        train_seconds=train_seconds,
        peak_rss_mb=peak_rss_mb(),
        n_pairs=built.n_pairs,
        ref_computed=getattr(trainer, "pvar_ref_computed", None),
        truncated_pairs=getattr(trainer, "pvar_truncated", None),
        ref_reused=getattr(trainer, "pvar_ref_reused", None),
    )


def check_trl_args(cfg: TrainConfig, out_dir: str | Path) -> None:
    """Resolve ``cfg.trl_args`` against the trainer's TRL config: an unknown or ill-typed name fails
    before any run starts (ConfigError), not after the pool has been scored."""
    from pvar.training.trainers import trl_config

    trl_config(cfg, Path(out_dir), cuda=False, ref_cache=True)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


# Checkpoint files of the other kind, removed when an earlier pvar train run left them in out_dir.
_FULL_FILES = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
               "model-*.safetensors", "pytorch_model*.bin")
_LORA_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def _save_checkpoint(trainer: Any, tokenizer: Any, out: Path, *, clean: bool) -> None:
    """Full fine-tune: model weights + config; LoRA: the adapter folder. The tokenizer goes beside either.

    With several processes, every process calls ``trainer.save_model``: under FSDP or ZeRO-3 the
    weights are sharded and gathering them is collective; transformers then writes on the main
    process only. One process saves the unwrapped model directly (the same files as always).
    """
    from accelerate.utils import is_peft_model

    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model)
    lora = is_peft_model(model)
    if clean and acc.is_main_process:  # out_dir holds an earlier pvar train output: drop the other kind
        for pattern in _FULL_FILES if lora else _LORA_FILES:
            for stale in out.glob(pattern):
                stale.unlink()
    acc.wait_for_everyone()
    if acc.num_processes > 1:
        trainer.save_model(str(out))
        if acc.is_main_process:  # the same files as a one-process run: no pickled TrainingArguments
            (out / "training_args.bin").unlink(missing_ok=True)
    else:
        model.save_pretrained(str(out))
    if acc.is_main_process:
        tokenizer.save_pretrained(str(out))
    acc.wait_for_everyone()


def _write_json(path: Path, obj: Any) -> None:
    from pvar.io.writers import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


__all__ = ["ALGOS", "ConfigError", "InputError", "TrainConfig", "TrainResult", "peak_rss_mb", "train"]


def main(argv: list[str] | None = None) -> None:
    """``python -m pvar.pipeline.train JOB.json``: one process of an ``accelerate launch`` (training/launch.py)."""
    import sys

    from accelerate import PartialState

    from pvar.io.writers import atomic_write_text
    from pvar.training.launch import result_path

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m pvar.pipeline.train JOB.json")
    job_file = Path(args[0])
    job = json.loads(job_file.read_text(encoding="utf-8"))
    state = PartialState()
    try:
        result = train(job["pairs"], job["out"], TrainConfig.make(**job["config"]), ref_cache=job["ref_cache"])
        if state.is_main_process:
            info = result.to_dict()
            info["num_processes"] = state.num_processes
            atomic_write_text(result_path(job_file), json.dumps(info, indent=2))
    finally:
        # A process that exits with its process group alive can abort in the group's threads' teardown
        # ("terminate called without an active exception", seen once under 2 CPU processes): shut it
        # down first, as accelerate's own `end_training` does.
        state.destroy_process_group()


if __name__ == "__main__":
    main()


def run(source: str | Path, output: str | Path, cfg: TrainConfig, **kwargs: Any) -> TrainResult:
    """The verb's uniform entry (source, output, cfg): :func:`train` on the pairs file ``source``."""
    return train(source, output, cfg, **kwargs)
