"""Continuous batching for a transformers causal LM: finished rows leave, waiting rows take their slot.

``model.generate`` keeps every row of a batch until the longest one ends, and its `DynamicCache`
concatenates every layer's keys and values at every step (a copy of the whole cache per token).
`decode` instead runs a fixed number of *slots* over preallocated key/value buffers
(`make_slot_cache`): each step writes one column in place, a row that emits EOS frees its slot at once,
and the next waiting rows are prefilled (once per distinct prompt) and copied into the free slots.

Layout: every slot writes the same column ``cursor`` each step; a row inserted at ``cursor`` holds
its prompt in the columns just before it, and a boolean ``valid`` mask says which columns belong to
which slot. Attention masks out the other columns, and each row gets its own position ids, so a
row computes what it would compute alone (up to floating-point rounding of the batched kernels).
Rows are taken longest prompt first, so a later prompt always fits before ``cursor``. Columns no
live row uses any more are dropped from the left now and then, and slots are compacted once the
queue is empty, so neither the attention span nor the batch carries dead weight.

HFPolicy runs it when ``HFPolicy.continuous`` is set (off by default: on a 2-core CPU, where the
step is matmul-bound and most rows run to ``max_new_tokens``, it measured 0.91-1.12x
``model.generate`` in length-sorted batches; bench/generate.py times both). It pays where rows'
lengths vary widely and generations are long.

Sampling stays in `GumbelSampler`: a row's noise is a function of its seed and its own step count,
so its tokens depend on (seed, step) only, whichever slot it lands in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# (logits [S, V], noise seeds [S], steps [S]) -> token ids [S]
Chooser = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def supports_slots(model: Any) -> bool:
    """Whether every decoder layer is plain full attention (sliding-window, linear-attention and
    hybrid caches keep ``model.generate``)."""
    try:
        from transformers.cache_utils import get_layer_types_and_kwargs
    except ImportError:
        return False
    try:
        types, _ = get_layer_types_and_kwargs(model.config.get_text_config(decoder=True))
    except Exception:  # an architecture the helper does not know
        return False
    return bool(types) and all(t == "full_attention" for t in types)


def make_slot_cache(n_layers: int) -> Any:
    """A transformers `Cache` whose layers hold preallocated ``[slots, heads, width, dim]`` buffers.

    ``update`` writes the new keys/values at column ``cursor`` in place and returns the buffers up
    to it, so the model's attention calls it like any cache; the decode loop owns cursor and buffers.
    """
    from transformers.cache_utils import Cache, DynamicLayer

    class _SlotLayer(DynamicLayer):
        def __init__(self) -> None:
            super().__init__()
            self.cursor = 0

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            raise RuntimeError("slot buffers must be allocated by the decode loop before the first step")

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            at, q = self.cursor, key_states.shape[-2]
            self.keys[:, :, at:at + q] = key_states
            self.values[:, :, at:at + q] = value_states
            return self.keys[:, :, :at + q], self.values[:, :, :at + q]

        def get_seq_length(self) -> int:
            return self.cursor

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.cursor + query_length, 0

    cache = Cache(layers=[_SlotLayer() for _ in range(n_layers)])
    for layer in cache.layers:
        layer.is_initialized = True
    return cache


@dataclass
class _Row:
    key: int  # index into the caller's rows
    prompt: int  # index into the caller's prompt ids
    seed: int
    tokens: list[int] = field(default_factory=list)


@dataclass
class Decoded:
    """Per row: generated ids up to (excluding) EOS, whether EOS came, and tokens counted with EOS."""

    ids: list[list[int]]
    stopped: list[bool]
    counts: list[int]
    stats: dict[str, int] = field(default_factory=dict)  # steps, prefills, column/slot drops, grows


def decode(model: Any, prompt_ids: list[list[int]], rows: list[tuple[int, int]], *, slots: int,
           max_new_tokens: int, eos: set[int], pad: int, choose: Chooser, device: str = "cpu",
           share_prompt: bool = True, cache_kwarg: str = "cache", logits_to_keep: bool = True) -> Decoded:
    """Generate every row ``(prompt index, noise seed)`` with at most ``slots`` rows in flight.

    ``choose(logits, seeds, steps)`` picks the next token of each live slot (the sampler; a row's step
    is the count of tokens it has generated); rows are
    returned in input order. ``share_prompt`` prefills each distinct prompt once for all its rows.
    """
    import torch

    n_rows = len(rows)
    out_ids: list[list[int]] = [[] for _ in range(n_rows)]
    stopped = [False] * n_rows
    counts = [0] * n_rows
    stats = {"steps": 0, "prefills": 0, "column_drops": 0, "slot_drops": 0, "grows": 0}
    if not n_rows:
        return Decoded(out_ids, stopped, counts, stats)
    if any(not ids for ids in prompt_ids):
        raise ValueError("a prompt has no tokens")
    # Longest prompts first: every later prompt then fits in the columns before the cursor.
    queue = sorted(range(n_rows), key=lambda r: (-len(prompt_ids[rows[r][0]]), rows[r][0], r))
    queue.reverse()  # pop() from the end takes the next row
    slots = max(1, min(slots, n_rows))
    dtype = next(model.parameters()).dtype
    cache = make_slot_cache(model.config.get_text_config(decoder=True).num_hidden_layers)
    width = len(prompt_ids[rows[queue[-1]][0]]) + max_new_tokens + 16
    live: list[_Row | None] = [None] * slots
    tokens = torch.full((slots,), pad, dtype=torch.long)  # cpu-only: slot bookkeeping, sent with .to(device)
    positions = torch.zeros(slots, dtype=torch.long)  # cpu-only: slot bookkeeping
    valid = torch.zeros(slots, width, dtype=torch.bool)  # cpu-only: slot bookkeeping
    cursor = 0

    def allocate(shape_from: torch.Tensor, n_slots: int, n_cols: int) -> None:
        heads, dim = shape_from.shape[1], shape_from.shape[3]
        for layer in cache.layers:
            layer.keys = torch.zeros(n_slots, heads, n_cols, dim, dtype=shape_from.dtype, device=device)
            layer.values = torch.zeros_like(layer.keys)

    def fill() -> None:
        """Prefill waiting rows into the free slots (each distinct prompt once) and copy their cache."""
        nonlocal cursor, valid
        free = [s for s in range(len(live)) if live[s] is None]
        take = []
        while queue and len(take) < len(free):
            take.append(queue.pop())
        if not take:
            return
        groups: dict[Any, list[int]] = {}
        for r in take:
            groups.setdefault(rows[r][0] if share_prompt else ("row", r), []).append(r)
        heads = [(key, members) for key, members in groups.items()]
        body = [prompt_ids[rows[members[0]][0]][:-1] for _, members in heads]  # the last token is fed by decode
        span = max(len(b) for b in body)
        kv = _prefill(model, body, span, pad, device, cache_kwarg, logits_to_keep) if span else None
        stats["prefills"] += kv is not None
        if cache.layers[0].keys is None:
            ref = kv[0][0] if kv is not None else _prefill(model, [[pad]], 1, pad, device, cache_kwarg, False)[0][0]
            allocate(ref, len(live), width)
            cursor = max(cursor, span)
        if cursor < span:  # cannot happen with longest-first order; kept as a guard
            raise RuntimeError(f"a prompt of {span} tokens does not fit before column {cursor}")
        for (_, members), ids, g in zip(heads, body, range(len(heads)), strict=True):
            for r in members:
                s = free.pop(0)
                p, seed = rows[r]
                live[s] = _Row(r, p, seed)
                valid[s] = False
                if ids:
                    lo = cursor - len(ids)
                    for layer, (k, v) in zip(cache.layers, kv, strict=True):
                        layer.keys[s, :, lo:cursor] = k[g, :, span - len(ids):]
                        layer.values[s, :, lo:cursor] = v[g, :, span - len(ids):]
                    valid[s, lo:cursor] = True
                tokens[s] = prompt_ids[p][-1]
                positions[s] = len(prompt_ids[p]) - 1

    def drop_columns() -> None:
        """Drop the leading columns no live row uses; grow the buffers when all are in use."""
        nonlocal cursor, valid
        used = valid[:, :cursor].any(0)
        first = int(used.int().argmax()) if bool(used.any()) else cursor
        if first > 0:
            for layer in cache.layers:
                layer.keys[:, :, :cursor - first] = layer.keys[:, :, first:cursor].clone()
                layer.values[:, :, :cursor - first] = layer.values[:, :, first:cursor].clone()
            valid[:, :cursor - first] = valid[:, first:cursor].clone()
            valid[:, cursor - first:] = False
            cursor -= first
            stats["column_drops"] += 1
        if cursor >= valid.shape[1]:  # every column still in use: grow
            extra = valid.shape[1]
            for layer in cache.layers:
                layer.keys = torch.cat([layer.keys, torch.zeros_like(layer.keys[:, :, :extra])], dim=2)
                layer.values = torch.cat([layer.values, torch.zeros_like(layer.values[:, :, :extra])], dim=2)
            valid = torch.cat([valid, torch.zeros_like(valid[:, :extra])], dim=1)
            stats["grows"] += 1

    def drop_slots() -> None:
        """Once nothing waits, keep only the live slots (a smaller batch per step)."""
        nonlocal live, tokens, positions, valid
        keep = [s for s, row in enumerate(live) if row is not None]
        index = torch.tensor(keep, dtype=torch.long)  # cpu-only: moved to each buffer's device
        for layer in cache.layers:
            layer.keys = layer.keys.index_select(0, index.to(layer.keys.device))
            layer.values = layer.values.index_select(0, index.to(layer.values.device))
        live = [live[s] for s in keep]
        tokens, positions, valid = tokens[index], positions[index], valid[index]
        stats["slot_drops"] += 1

    minimum = torch.finfo(dtype).min
    with torch.inference_mode():
        while queue or any(row is not None for row in live):
            if queue and any(row is None for row in live):
                fill()
            if cursor >= valid.shape[1] or (cursor >= 64 and not bool(valid[:, :cursor // 4].any())):
                drop_columns()
            running = torch.tensor([row is not None for row in live])  # cpu-only: slot bookkeeping
            valid[:, cursor] = running
            for layer in cache.layers:
                layer.cursor = cursor
            mask = torch.zeros(len(live), 1, 1, cursor + 1, dtype=dtype)  # cpu-only: moved with .to(device)
            mask.masked_fill_(~valid[:, None, None, :cursor + 1], minimum)
            logits = model(input_ids=tokens[:, None].to(device), position_ids=positions[:, None].to(device),
                           attention_mask=mask.to(device), use_cache=True, **{cache_kwarg: cache}).logits[:, -1]
            cursor += 1
            stats["steps"] += 1
            idx = [s for s, row in enumerate(live) if row is not None]
            seeds = torch.tensor([live[s].seed for s in idx], dtype=torch.int64, device=logits.device)
            steps = torch.tensor([len(live[s].tokens) for s in idx], dtype=torch.int64, device=logits.device)
            picked = choose(logits[torch.tensor(idx, device=logits.device)] if len(idx) < len(live) else logits,
                            seeds, steps).cpu().tolist()
            for s, t in zip(idx, picked, strict=True):
                row = live[s]
                done = t in eos
                if not done:
                    row.tokens.append(t)
                if done or len(row.tokens) >= max_new_tokens:
                    out_ids[row.key], stopped[row.key] = row.tokens, done
                    counts[row.key] = len(row.tokens) + done
                    live[s] = None
                    valid[s] = False
                tokens[s] = t
            positions += 1
            n_live = sum(row is not None for row in live)
            if not queue and 0 < n_live <= len(live) * 3 // 4:
                drop_slots()
    return Decoded(out_ids, stopped, counts, stats)


def _prefill(model: Any, body: list[list[int]], span: int, pad: int, device: str, cache_kwarg: str,
             logits_to_keep: bool) -> list[tuple[Any, Any]]:
    """Keys and values of left-padded prompts ``body`` (all but their last token), per layer."""
    import torch

    from pvar.backends.kv_cache import prompt_cache

    ids = torch.full((len(body), span), pad, dtype=torch.long)  # cpu-only: moved with .to(device)
    mask = torch.zeros((len(body), span), dtype=torch.long)  # cpu-only: moved with .to(device)
    for k, b in enumerate(body):
        if b:
            ids[k, span - len(b):] = torch.tensor(b, dtype=torch.long)  # cpu-only: filled into a CPU tensor
            mask[k, span - len(b):] = 1
    cache = prompt_cache(model, ids.to(device), mask.to(device), cache_kwarg=cache_kwarg,
                         logits_to_keep=logits_to_keep)
    return [(layer.keys, layer.values) for layer in cache.layers]
