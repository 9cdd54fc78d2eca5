"""float32 linear layers on the CPU through oneDNN instead of the BLAS torch links (MKL).

On the CPU, ``torch.nn.functional.linear`` in float32 runs MKL's sgemm, which does not use AVX-512
on AMD processors: on a 2-core AMD EPYC with AVX-512 it reached 213-228 GFLOP/s on 2048^2 products
and ~150-190 on SmolLM2's decode shapes, while oneDNN (`torch.ops.mkldnn._linear_pointwise`, also
in every x86 torch build) reached 465 and ~390 on the same ones. Both are IEEE float32 products
(oneDNN's float32 math mode stays strict unless ``torch.backends.mkldnn`` is told otherwise); they
sum in other orders, so their results differ by rounding, as two machines' do.

`enable` switches a model's ``nn.Linear`` modules to `OneDNNLinear` (a subclass: deepcopy, peft,
state dicts and ``isinstance`` checks see a Linear) whose forward takes oneDNN for float32 CPU
inputs whose weight is frozen or not being differentiated, and ``F.linear`` otherwise (other
devices and dtypes, CPU autocast, a weight that trains). A frozen layer inside a graph that trains (LoRA's base
layers) gets its input's gradient from oneDNN as well (`_FrozenLinear`). `disable` switches back;
``PVAR_ONEDNN=0`` keeps every layer on BLAS, as do CPUs other than x86-64 (not measured). pvar
switches the models it loads on the CPU for sampling, evaluation, reward scoring and training.
"""

from __future__ import annotations

import functools
import os
import platform
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PROBE_TOLERANCE = 1e-4  # relative: a product that differs by more is not float32 rounding


@functools.cache
def available() -> bool:
    """Whether to use oneDNN's linear: on x86-64 (where it was measured; other CPUs keep their BLAS),
    when this torch has it and it computes ``F.linear`` (checked once, on a probe). ``PVAR_ONEDNN=0``
    in the environment says no (BLAS everywhere, as transformers runs)."""
    import torch

    if os.environ.get("PVAR_ONEDNN", "1").strip() == "0" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    op = _op()
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    gen = torch.Generator().manual_seed(0)
    shapes = ((5, 3, 40), (24, 40), (24,))
    x, w, b = (torch.randn(*shape, generator=gen) for shape in shapes)  # cpu-only: the CPU kernel's probe
    try:
        got = op(x, w, b, "none", [], "")
    except RuntimeError:  # a build or CPU the kernel does not support
        return False
    want = torch.nn.functional.linear(x, w, b)
    return got.shape == want.shape and bool(((got - want).abs().max() <= PROBE_TOLERANCE * want.abs().max()).item())


@functools.cache
def _op() -> Any:
    """oneDNN's linear, or None (looked up once: every linear layer's call asks)."""
    import torch

    return getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN where `OneDNNLinear`'s rule allows it."""
    import torch

    if (x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or (bias is not None and bias.dtype != torch.float32) or not x.shape[-1]
            or torch.is_autocast_enabled("cpu") or not available()):  # autocast casts F.linear, not oneDNN
        return torch.nn.functional.linear(x, weight, bias)
    if not torch.is_grad_enabled():
        return _op()(x, weight, bias, "none", [], "")
    if weight.requires_grad or (bias is not None and bias.requires_grad):  # a layer that trains: autograd's own
        return torch.nn.functional.linear(x, weight, bias)
    if x.requires_grad:
        return _frozen_linear().apply(x, weight, bias)
    return _op()(x, weight, bias, "none", [], "")


@functools.cache
def _frozen_linear() -> Any:
    """An autograd function for a frozen layer: oneDNN forward, and the input's gradient
    ``grad @ weight`` as oneDNN's linear of ``grad`` with ``weight.T`` (the op has no backward)."""
    import torch

    class _FrozenLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            ctx.save_for_backward(weight)
            return _op()(x, weight, bias, "none", [], "")

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
            (weight,) = ctx.saved_tensors
            return _op()(grad.contiguous(), weight.t(), None, "none", [], ""), None, None

    return _FrozenLinear


@functools.cache
def _linear_class() -> type:
    import torch

    class OneDNNLinear(torch.nn.Linear):
        """An ``nn.Linear`` whose float32 CPU products run through oneDNN (`pvar.backends.onednn`)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return linear(x, self.weight, self.bias)

    OneDNNLinear.__module__, OneDNNLinear.__qualname__ = __name__, "OneDNNLinear"  # pickled by name
    return OneDNNLinear


def __getattr__(name: str) -> Any:
    """``pvar.backends.onednn.OneDNNLinear``, built on first use (torch stays unimported until then)."""
    if name == "OneDNNLinear":
        return _linear_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def enable(model: Any) -> int:
    """Switch ``model``'s plain ``nn.Linear`` modules to `OneDNNLinear` where oneDNN is available and
    the model is on the CPU; returns how many. Subclasses of Linear (quantised or adapter layers) are
    left alone, as is a model already on another device."""
    import torch

    first = next(model.parameters(), None)
    if not available() or (first is not None and first.device.type != "cpu"):
        return 0
    cls = _linear_class()
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = cls
            count += 1
    return count


def disable(model: Any) -> int:
    """Undo `enable`: `OneDNNLinear` modules become plain ``nn.Linear`` again; returns how many."""
    import torch

    if not available():
        return 0
    count, cls = 0, _linear_class()
    for module in model.modules():
        if type(module) is cls:
            module.__class__ = torch.nn.Linear
            count += 1
    return count
