"""TRL's ``DPOTrainer`` with a shared reference log-prob cache and per-pair weights.

``PvarDPOTrainer`` (made by :func:`pvar_dpo_trainer_class`) adds two things to TRL's ``DPOTrainer``:

- Cached reference log-probs. TRL's ``__init__`` always calls ``_precompute_ref_logps`` when
  ``precompute_ref_log_probs=True``; the override returns the dataset unchanged when it already holds
  ``ref_chosen_logps`` and ``ref_rejected_logps``, and with a :class:`RefLogpCache` it looks each pair
  up by key, runs TRL's own ``compute_ref_log_probs`` (same collator, same model or disabled adapter)
  on the missing pairs only, stores them, and attaches both columns. Both columns are in TRL's
  ``_signature_columns``, so they reach the collator, which batches them (B rows each).
- One pass of the frozen blocks. With LoRA in the top blocks only, the reference pass runs inside
  the trainer's `FrozenBlocks` (``frozen``, made on first use and kept as ``pvar_frozen`` for
  training), and with ``compact`` it scores the LM head at completion positions only, as training does.
- Per-pair weights. A collator wrapper carries the ``pvar_weight`` column as a (B,) tensor; the
  ``compute_loss`` override splits the batch (the DPO layout is [chosen_1..B, rejected_1..B] along dim
  0 for input_ids/attention_mask/completion_mask, B rows for ref_*_logps), calls TRL's loss once per
  pair, and returns sum_i w_i * loss_i / B. With every weight 1 this is TRL's mean of per-pair losses.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from pvar.errors import ConfigError
from pvar.training.refcache import RefLogpCache

WEIGHT_COLUMN = "pvar_weight"
KEY_COLUMN = "pvar_ref_key"
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


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
        def __init__(self, *args: Any, ref_store: RefLogpCache | None = None,
                     frozen: Callable[[Any], Any] | None = None, compact: bool = False, **kwargs: Any) -> None:
            # Set before DPOTrainer.__init__, which calls _prepare_dataset and _precompute_ref_logps.
            self.pvar_ref_store = ref_store
            self.pvar_frozen_factory = frozen
            self.pvar_frozen: Any = None
            self.pvar_compact = compact
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
                    from pvar import status

                    status.log(f"train: {self.pvar_truncated} of {len(longest)} pairs exceed max_length "
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
            if self.pvar_frozen is None and self.pvar_frozen_factory is not None:
                self.pvar_frozen = self.pvar_frozen_factory(self)
            with self.pvar_frozen or contextlib.nullcontext(), self._pvar_head():
                return self._pvar_ref_logps(dataset, name, batch_size)

        def _pvar_head(self) -> Any:
            from pvar.training.lm_head import completion_positions_only

            return completion_positions_only() if self.pvar_compact else contextlib.nullcontext()

        def _pvar_ref_logps(self, dataset, name, batch_size):
            columns = dataset.column_names or []
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
