"""Keep freed tensor memory in the process on Linux CPUs, so a decoding step does not fault its pages in again.

glibc serves blocks above its mmap threshold (128 KiB at first, adjusted upwards as blocks are freed)
with fresh ``mmap`` pages and returns them on ``free``; it also trims the top of the heap back to the
kernel. A decoding step on the CPU allocates and frees tens of MB each time (the step's logits,
activations, the attention's buffers), so every step pays the kernel to zero those pages again: on
SmolLM2 at 128 rows that was ~10 % of the step. Raising the mmap threshold to glibc's maximum (32 MiB)
and the trim threshold to 1 GiB keeps those blocks in the heap for reuse, as PyTorch's CPU tuning
guides recommend (or an allocator such as jemalloc or tcmalloc). Settings given in the environment
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``) are left as they are.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling on 64-bit systems
TRIM_THRESHOLD = 2**30

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the settings above once per process; True where glibc took them."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
    ok = True
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        ok &= bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        ok &= bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _done = ok
    return ok
