"""Score the LM head at completion positions only, on the CPU too.

TRL's fused LM head (``add_fused_lm_head`` in trl/trainer/utils.py, which DPO, KTO and the others call
with ``fused_lm_head=True``) projects only the positions whose label is not -100 when its Triton
kernels run (CUDA, XPU), and every position elsewhere, so that a compiled kernel on accelerators such
as Neuron keeps one tile shape. On a CPU in eager mode there is nothing to recompile, and the prompt
(with the chat template's system prompt) is most of each sequence: the 49k-wide projection, forward
and backward, then runs mostly on positions whose log-probs are thrown away. `completion_positions_only`
makes TRL take its compact path on the CPU while a trainer runs; the per-token log-probs are the
same, since each position's log-softmax depends on that position alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def completion_positions_only() -> Iterator[bool]:
    """While inside, TRL's fused LM head scores only completion positions on CPU devices as well.
    Yields whether TRL had the switch (a TRL without it keeps its own behaviour)."""
    try:
        from trl.trainer import utils
    except ImportError:
        yield False
        return
    original = getattr(utils, "_use_triton", None)
    if original is None:
        yield False
        return

    def compact(device: Any) -> bool:
        return getattr(device, "type", str(device)) == "cpu" or original(device)

    utils._use_triton = compact
    try:
        yield True
    finally:
        utils._use_triton = original
