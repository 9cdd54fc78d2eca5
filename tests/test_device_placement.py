"""Device placement (DESIGN.md §7), checked statically: a CPU-only suite cannot see a tensor built on the
CPU meeting CUDA tensors, so every torch factory that does not inherit a device must say where its tensor
lives.

In src/pvar/backends, src/pvar/pipeline and src/pvar/training, each call of a factory below passes
``device=`` (or ``out=``, which inherits the device of ``out``), or carries a ``# cpu-only: <reason>``
comment on the line the call starts on (or the line it ends on) when the tensor stays on the CPU on
purpose. Factories that inherit a device (``torch.zeros_like``, ``Tensor.new_zeros`` and the like) are
not checked.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "pvar"
CHECKED = ("backends", "pipeline", "training")

# torch functions that build a tensor on the default (CPU) device unless told otherwise
FACTORIES = frozenset({
    "tensor", "as_tensor", "arange", "range", "zeros", "ones", "full", "empty", "empty_strided", "rand",
    "randn", "randint", "randperm", "linspace", "logspace", "eye", "scalar_tensor", "tril_indices",
    "triu_indices",
})
MARKER = re.compile(r"#\s*cpu-only:\s*\S")


def _marked_lines(source: str) -> set[int]:
    """Lines holding a ``# cpu-only: <reason>`` comment (comments only, not strings)."""
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and MARKER.search(tok.string):
            lines.add(tok.start[0])
    return lines


def _torch_names(tree: ast.AST) -> tuple[set[str], dict[str, str]]:
    """Names bound to the torch module, and names bound to torch factories (``from torch import ...``)."""
    modules, functions = {"torch"}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "torch":
                    modules.add(alias.asname or "torch")
        elif isinstance(node, ast.ImportFrom) and node.module == "torch" and node.level == 0:
            for alias in node.names:
                if alias.name in FACTORIES:
                    functions[alias.asname or alias.name] = alias.name
    return modules, functions


def device_offenders(source: str, filename: str = "<string>") -> list[str]:
    """``filename:line: torch.NAME(...)`` for each factory call in ``source`` with neither ``device=``,
    ``out=`` nor a ``# cpu-only: <reason>`` marker."""
    tree = ast.parse(source, filename)
    modules, functions = _torch_names(tree)
    marked = _marked_lines(source)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in modules \
                and f.attr in FACTORIES:
            name = f.attr
        elif isinstance(f, ast.Name) and f.id in functions:
            name = functions[f.id]
        else:
            continue
        if any(k.arg in ("device", "out") for k in node.keywords):
            continue
        if {node.lineno, node.end_lineno} & marked:
            continue
        found.append(f"{filename}:{node.lineno}: torch.{name}(...) has no device= and no '# cpu-only: <reason>'")
    return sorted(found, key=lambda s: int(s.split(":")[1]))


def test_the_checker_flags_the_known_bugs_and_passes_placed_or_marked_tensors():
    nucleus = "todo = (torch.arange(len(probs)) if todo is None else todo)[~done]\n"
    signal = "a = torch.tensor(dpo_coefficients(x), dtype=torch.float64)\n"
    assert [line.split(": ", 1)[0] for line in device_offenders(nucleus + signal, "snippet.py")] == \
        ["snippet.py:1", "snippet.py:2"]
    assert device_offenders("todo = torch.arange(n, device=x.device)\n") == []
    assert device_offenders("ids = torch.tensor(rows, dtype=torch.long)  # cpu-only: moved with .to(device)\n") == []
    assert device_offenders("torch.rand(vocab, generator=g, out=buf[row])\n") == []
    assert device_offenders("a = torch.zeros_like(x)\nb = x.new_zeros(3)\nc = torch.tensor([1]).to(dev)\n") == \
        ["<string>:3: torch.tensor(...) has no device= and no '# cpu-only: <reason>'"]
    # the marker needs a reason, must be a comment, and counts on the call's first or last line
    assert len(device_offenders("a = torch.ones(3)  # cpu-only:\n")) == 1
    assert len(device_offenders("a = torch.ones(3, dtype='# cpu-only: no')\n")) == 1
    assert device_offenders("a = torch.full(\n    (2, 3),\n    0.0,\n)  # cpu-only: bookkeeping\n") == []
    # aliases of torch and factories imported from it
    assert len(device_offenders("import torch as th\nfrom torch import arange as ar\nth.eye(2)\nar(3)\n")) == 2


def test_every_tensor_factory_in_backends_pipeline_training_states_its_device():
    offenders = []
    for part in CHECKED:
        for path in sorted((SRC / part).rglob("*.py")):
            offenders += device_offenders(path.read_text(encoding="utf-8"), str(path.relative_to(SRC.parents[1])))
    assert not offenders, (
        "tensor factories without device= (pass the model tensors' device, or mark a deliberate CPU "
        "tensor with '# cpu-only: <reason>'):\n  " + "\n  ".join(offenders))
