"""A key/value cache that writes each step in place: transformers' `DynamicCache` without the copies.

`DynamicLayer.update` concatenates the new keys and values to the old ones, so every decoding step
copies every layer's whole cache (on a 2-core CPU, a fifth of SmolLM2's step at 128 rows).
`preallocated_cache` holds buffers sized for the prompt plus ``max_new_tokens`` and writes each step
into the next columns; attention reads a view of the filled part. The values attention sees are
the same as with `DynamicCache`, so the outputs are too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def preallocated_cache(model: Any, capacity: int) -> Any:
    """A transformers `Cache` of ``capacity`` columns per layer (`prefill` writes a shared prompt into
    it). Buffers grow by doubling if a generation outruns ``capacity``."""
    from transformers.cache_utils import Cache, DynamicLayer

    class _Layer(DynamicLayer):
        def __init__(self) -> None:
            super().__init__()
            self.length = 0

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor, batch: int = 0,
                                columns: int = 0) -> None:
            batch = batch or key_states.shape[0]
            shape = (batch, key_states.shape[1], max(capacity, columns, key_states.shape[-2]))
            # zeros, not empty: columns left of a shorter prompt are masked, but must not hold NaN
            self.keys = key_states.new_zeros(*shape, key_states.shape[-1])
            self.values = value_states.new_zeros(*shape, value_states.shape[-1])
            self.device, self.dtype = key_states.device, key_states.dtype
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            return append(self, key_states, value_states)

        def put(self, rows: torch.Tensor, key_states: torch.Tensor, value_states: torch.Tensor, batch: int) -> None:
            """Write a prefix into ``rows`` of a ``batch``-row buffer, ending at column ``self.length``."""
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states, batch, self.length)
            width = key_states.shape[-2]
            self.keys[rows, :, self.length - width:self.length] = key_states
            self.values[rows, :, self.length - width:self.length] = value_states

        def get_seq_length(self) -> int:
            return self.length

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.length + query_length, 0

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.is_initialized:
                self.keys, self.values = self.keys[indices], self.values[indices]

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.is_initialized:
                self.keys = self.keys.repeat_interleave(repeats, dim=0)
                self.values = self.values.repeat_interleave(repeats, dim=0)

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove < 0:
                self.length = max(0, self.length + tokens_to_remove)

        def reset(self) -> None:
            self.length = 0
            super().reset()

    n_layers = model.config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[_Layer() for _ in range(n_layers)])


def append(layer: Any, key_states: torch.Tensor, value_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Write a step's keys and values into ``layer``'s buffers at column ``layer.length`` (doubling the
    buffers if they are full) and return the filled part, as a cache layer's ``update`` does."""
    end = layer.length + key_states.shape[-2]
    while end > layer.keys.shape[-2]:
        layer.keys, layer.values = _grow(layer.keys), _grow(layer.values)
    layer.keys[:, :, layer.length:end] = key_states
    layer.values[:, :, layer.length:end] = value_states
    layer.length = end
    return layer.keys[:, :, :end], layer.values[:, :, :end]


def _grow(buffer: torch.Tensor) -> torch.Tensor:
    """The buffer with twice the columns (dim 2), the old ones kept."""
    import torch

    return torch.cat([buffer, torch.zeros_like(buffer)], dim=2)


def prefill(model: Any, input_ids: torch.Tensor, mask: torch.Tensor, index: torch.Tensor, capacity: int, *,
            cache_kwarg: str = "cache", logits_to_keep: bool = True, slack: float = 0.125, most: int = 16) -> Any:
    """The preallocated cache of left-padded ``input_ids`` (distinct prompts), row r holding prompt ``index[r]``.

    Prompts are run in chunks of similar length (at most ``most``, the longest at most ``slack``
    longer than the shortest), so a short prompt does not pay for the longest one's padding; each
    chunk's keys and values land right-aligned in the full width, as one padded batch would put them.
    """
    import torch

    width = input_ids.shape[1]
    cache = preallocated_cache(model, capacity)
    for layer in cache.layers:
        layer.length = width
    lengths = mask.sum(-1).tolist()
    slots = index.tolist()
    for chunk in length_chunks(lengths, slack=slack, most=most):
        w = max(lengths[k] for k in chunk)
        members = set(chunk)
        rows = [r for r, k in enumerate(slots) if k in members]
        if not w or not rows:
            continue
        at = {k: j for j, k in enumerate(chunk)}
        pick = torch.tensor(chunk, device=input_ids.device)
        ids, sub_mask = input_ids[pick, width - w:], mask[pick, width - w:]
        source = prompt_cache(model, ids, sub_mask, cache_kwarg=cache_kwarg, logits_to_keep=logits_to_keep)
        local = torch.tensor([at[slots[r]] for r in rows], device=input_ids.device)
        target = torch.tensor(rows, device=input_ids.device)
        for layer, src in zip(cache.layers, source.layers, strict=True):
            layer.put(target, src.keys[local], src.values[local], len(slots))
    return cache


def prompt_cache(model: Any, input_ids: torch.Tensor, mask: torch.Tensor, *, cache_kwarg: str = "cache",
                 logits_to_keep: bool = True) -> Any:
    """A `DynamicCache` holding the keys and values of left-padded ``input_ids`` (one forward, positions
    from the mask as ``generate`` computes them; only the last position's logits when the model allows)."""
    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=model.config)
    except TypeError:  # older transformers
        cache = DynamicCache()
    extra: dict[str, Any] = {cache_kwarg: cache, "use_cache": True}
    if logits_to_keep:
        extra["logits_to_keep"] = 1
    model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), **extra)
    return cache


def length_chunks(lengths: list[int], *, slack: float = 0.125, most: int = 16) -> list[list[int]]:
    """Indices of ``lengths`` grouped shortest first: a group holds at most ``most`` and its longest is
    at most ``slack`` longer (+1 token) than its shortest."""
    chunks: list[list[int]] = []
    for k in sorted(range(len(lengths)), key=lambda k: (lengths[k], k)):
        if chunks and len(chunks[-1]) < most and lengths[k] <= lengths[chunks[-1][0]] * (1 + slack) + 1:
            chunks[-1].append(k)
        else:
            chunks.append([k])
    return chunks
