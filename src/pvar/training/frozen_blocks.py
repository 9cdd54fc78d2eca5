"""Train LoRA on the top K blocks without running the frozen blocks below them at every step.

With LoRA only in the top K of L transformer blocks (``lora_layers``), blocks 0..L-K-1 hold no
trainable weight and their input is the token embedding, which is frozen too: the hidden state a
sequence carries into block L-K never changes during training. `FrozenBlocks` computes it once per
sequence, the first time the sequence is seen, keeps it, and from then on feeds it to the model as
``inputs_embeds`` while the lower blocks are swapped for a pass-through. The trainer (TRL) is
unchanged: it calls the model as before, and the gradients are the same.

A sequence is keyed by its token ids under its attention mask, so any batching finds it. Rows must
come right-padded with the model computing its own position ids (TRL's collators do); other batches
run the lower blocks as usual. The first batch checks the shortcut against the plain forward, so an
architecture that transforms ``inputs_embeds`` (Gemma scales them, GPT-2 adds position embeddings)
falls back to the plain path with a warning. The kept states cost ``hidden_size`` floats per token;
past ``budget_bytes``, new sequences run the lower blocks each time, as without this class.

The reference pass sees the same lower blocks: LoRA lives in the top blocks only, so with the
adapter off they compute what they compute with it on. ``PvarDPOTrainer`` runs its reference
log-probs inside the same `FrozenBlocks`, so a pair's lower blocks run once for both. On the CPU
the kept states live in a `StateStore` shared by every trainer of the same base model, blocks and
dtype in the process: the arms of a run train on overlapping pairs of one pool. ``PVAR_SHARED_STATES=0``
in the environment turns both off (each trainer keeps its own states, the reference pass runs every
block), as a switch for comparisons (bench/arms.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

TOLERANCE = 1e-4  # relative: the shortcut's top hidden states against the plain forward's


def sharing() -> bool:
    """Whether kept states are shared with the reference pass and between trainers (``PVAR_SHARED_STATES``)."""
    return os.environ.get("PVAR_SHARED_STATES", "1") != "0"


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the frozen blocks' output is captured."""


def decoder_of(model: Any) -> Any:
    """The transformer body (the module holding ``layers``) of a causal LM, PEFT-wrapped or not; None if
    the model has no such list (GPT-2 keeps its blocks in ``h``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    return decoder if decoder is not None and hasattr(decoder, "layers") else None


class StateStore:
    """Inputs of block ``first`` kept per sequence (keyed by its token ids), within a byte budget."""

    def __init__(self, budget_bytes: int = 2 * 2**30) -> None:
        self.budget = budget_bytes
        self.kept: dict[tuple[int, ...], torch.Tensor] = {}
        self.used = 0

    def add(self, key: tuple[int, ...], states: torch.Tensor) -> None:
        """Keep a copy of ``states`` under ``key`` unless it is there or would pass the budget."""
        if key not in self.kept and self.used + states.nbytes <= self.budget:
            self.kept[key] = states.clone()
            self.used += states.nbytes


_SHARED: dict[tuple[Any, ...], StateStore] = {}


def shared_store(key: tuple[Any, ...]) -> StateStore:
    """The process's store for ``key`` (base model id, first trained block, dtype; CPU models only).
    Asking for another key drops the previous store, so one model's states at most are held."""
    if key not in _SHARED:
        _SHARED.clear()
        _SHARED[key] = StateStore()
    return _SHARED[key]


class FrozenBlocks:
    """Keeps each sequence's input to block ``first`` and skips the blocks below it (see the module).
    It may be entered several times (the reference pass, then training); ``store`` can be shared."""

    def __init__(self, decoder: Any, first: int, *, budget_bytes: int = 2 * 2**30,
                 store: StateStore | None = None) -> None:
        self.decoder = decoder
        self.first = first
        self.blocks = list(decoder.layers[:first])
        self.store = store if store is not None else StateStore(budget_bytes)
        self.stats = {"computed": 0, "reused": 0, "passed": 0}
        self.active = True
        self._busy = False
        self._checked = False
        self._handle: Any = None

    @property
    def kept(self) -> dict[tuple[int, ...], torch.Tensor]:
        return self.store.kept

    def __enter__(self) -> FrozenBlocks:
        if any(p.requires_grad for block in self.blocks for p in block.parameters()):
            raise ValueError(f"blocks below {self.first} hold trainable weights: they cannot be skipped")
        self._handle = self.decoder.register_forward_pre_hook(self._feed, with_kwargs=True)
        self._skip(self.active)  # a shortcut that failed its check keeps the real blocks when entered again
        return self

    def __exit__(self, *exc: object) -> None:
        self._skip(False)
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _skip(self, on: bool) -> None:
        for i, block in enumerate(self.blocks):
            self.decoder.layers[i] = _pass_through() if on else block

    def _feed(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]] | None:
        """Forward pre-hook of the decoder: input ids -> the kept states of the frozen blocks."""
        import torch

        if self._busy or not self.active:
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or kwargs.get("inputs_embeds") is not None:
            return None
        mask = kwargs.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        lengths = mask.sum(-1)
        right_padded = mask.dim() == 2 and bool(
            (mask.bool() == (torch.arange(ids.shape[1], device=ids.device) < lengths[:, None])).all())
        if (not right_padded or kwargs.get("position_ids") is not None or kwargs.get("cache") is not None
                or kwargs.get("past_key_values") is not None):
            self.stats["passed"] += 1
            return self._with_states(kwargs, self._compute(ids, mask, kwargs))
        if not self._checked and not self._check(ids[:1], mask[:1]):
            return None
        keys = [tuple(row[:n].tolist()) for row, n in zip(ids, lengths.tolist(), strict=True)]
        todo = [r for r, key in enumerate(keys) if key not in self.kept]
        fresh = self._compute(ids[todo], mask[todo]) if todo else None
        states = None
        for j, r in enumerate(todo):
            self.store.add(keys[r], fresh[j, :len(keys[r])])
        for r, key in enumerate(keys):
            row = self.kept.get(key)
            if row is None:
                row = fresh[todo.index(r), :len(key)]
            if states is None:
                states = row.new_zeros(*ids.shape, row.shape[-1])
            states[r, :len(key)] = row
        self.stats["computed"] += len(todo)
        self.stats["reused"] += len(keys) - len(todo)
        return self._with_states(kwargs, states)

    @staticmethod
    def _with_states(kwargs: dict[str, Any], states: torch.Tensor) -> tuple[tuple, dict[str, Any]]:
        return (), {**kwargs, "input_ids": None, "inputs_embeds": states}

    def _compute(self, ids: torch.Tensor, mask: torch.Tensor, extra: dict[str, Any] | None = None) -> torch.Tensor:
        """Input of block ``first`` for these rows: the real lower blocks, stopped right there, no grad."""
        import torch

        captured: list[torch.Tensor] = []

        def grab(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise _Stop

        passed = {k: v for k, v in (extra or {}).items() if k == "position_ids"}
        self._skip(False)
        handle = self.decoder.layers[self.first].register_forward_pre_hook(grab, with_kwargs=True)
        self._busy = True
        try:
            with torch.no_grad():
                self.decoder(input_ids=ids, attention_mask=mask, use_cache=False, **passed)
        except _Stop:
            pass
        finally:
            self._busy = False
            handle.remove()
            self._skip(True)
        return captured[0].detach()

    def _check(self, ids: torch.Tensor, mask: torch.Tensor) -> bool:
        """The shortcut's top hidden states equal the plain forward's on one row; if not, switch it off."""
        import torch

        states = self._compute(ids, mask)
        self._busy = True
        try:
            with torch.no_grad():
                fast = self.decoder(inputs_embeds=states, attention_mask=mask, use_cache=False).last_hidden_state
                self._skip(False)
                plain = self.decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        finally:
            self._busy = False
        gap = float((fast - plain).abs().max()) / max(float(plain.abs().max()), 1e-12)
        self._checked = True
        if gap <= TOLERANCE:
            self._skip(True)
            return True
        self.active = False  # the blocks stay real from here on
        warnings.warn(f"lora_layers: {type(self.decoder).__name__} does not take its inputs_embeds as the first "
                      f"block's input (relative gap {gap:.1e}); the frozen blocks run at every step", stacklevel=2)
        return False


@functools.cache
def _pass_through_class() -> type:
    import torch

    class PassThrough(torch.nn.Module):
        """A frozen block already applied: its input is the kept output."""

        def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return hidden_states

    return PassThrough


def _pass_through() -> Any:
    return _pass_through_class()()


def frozen_blocks_for(trainer: Any, cfg: Any, model_id: str | None = None) -> Any:
    """`FrozenBlocks` for a trainer whose config trains LoRA in the top ``lora_layers`` blocks only (and
    keeps ``skip_unused``); a do-nothing context otherwise (full fine-tunes, LoRA in every block,
    activation checkpointing, models without a ``layers`` list). The trainer's own, if it made one
    for its reference pass. With ``model_id`` (the base model's fingerprint) and a CPU model, the
    kept states go to the process's shared store."""
    own = getattr(trainer, "pvar_frozen", None)
    if own is not None:
        return own
    if not (cfg.lora and cfg.lora_layers and getattr(cfg, "skip_unused", True)) or cfg.gradient_checkpointing:
        return contextlib.nullcontext()
    decoder = decoder_of(trainer.model)
    if decoder is None or cfg.lora_layers >= len(decoder.layers):
        return contextlib.nullcontext()
    first = len(decoder.layers) - cfg.lora_layers
    weight = next(decoder.parameters())
    store = None
    if model_id is not None and weight.device.type == "cpu" and sharing():  # GPU memory is not held
        store = shared_store((model_id, first, str(weight.dtype)))
    return FrozenBlocks(decoder, first, store=store)
