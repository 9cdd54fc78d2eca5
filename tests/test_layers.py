"""The layering, read from the imports (lazy ones inside functions included).

Data flows one way: core <- io <- backends <- engines <- pipeline <- experiment <- cli. A module
may import from its own layer or the ones below it, never above, and no two modules import each
other, directly or round a longer circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "pvar"

LAYERS = {  # top-level name under pvar -> layer (higher may import lower)
    "errors": 0, "config": 0, "status": 0, "fingerprint": 0, "core": 0, "tasks": 0, "version": 0,
    "testing": 0,  # tiny models for tests and benchmarks: numpy and the libraries, no pvar module
    "io": 1,
    "backends": 2, "training": 2,
    "engines": 3,
    "pipeline": 4, "plots": 4,
    "experiment": 5, "notebook": 5,
    "render": 6, "cli": 6, "cli_fields": 6, "cli_shell": 6,
    "__main__": 7,
    "": 8,  # the package itself: the public facade, which loads the notebook verbs on first use
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    name = ".".join(("pvar", *parts))
    return name.removesuffix(".__init__")


def layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return LAYERS[top]


def imports() -> dict[str, set[str]]:
    """Module -> the pvar modules it imports (resolved to existing modules)."""
    known = {module_name(p) for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        mod = module_name(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pvar":
                names = [f"{node.module}.{a.name}" for a in node.names]
                if any(name not in known for name in names):  # a name defined in the module, not a submodule
                    names.append(node.module)
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "pvar"]
            for name in names:
                while name not in known and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in known and name != mod:
                    found.add(name)
        graph[mod] = found
    return graph


def test_every_module_has_a_layer() -> None:
    for mod in imports():
        parts = mod.split(".")
        assert (parts[1] if len(parts) > 1 else "") in LAYERS, f"{mod}: no layer"


def test_no_module_imports_upward() -> None:
    upward = []
    for mod, deps in imports().items():
        mine = layer(mod)
        for dep in deps:
            theirs = layer(dep)
            if theirs > mine:
                upward.append(f"{mod} (layer {mine}) imports {dep} (layer {theirs})")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    graph = imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_rules_have_teeth() -> None:
    """The graph holds lazy imports (inside functions) too, which is where upward ones would hide."""
    graph = imports()
    assert "pvar.training.launch" in graph["pvar.pipeline.train"]  # imported inside main() only
    assert "pvar.experiment.runner" in graph["pvar.cli"]  # lazily, inside `pvar run`
    assert layer("pvar.cli") > layer("pvar.experiment.runner") > layer("pvar.pipeline.train") > layer("pvar.io.rows")


def test_every_verb_has_a_uniform_run() -> None:
    """Each verb under pipeline/ that reads rows and writes an output is ``run(source, output, cfg, ...)``."""
    import importlib
    import inspect

    verbs = ("prompts", "generate", "reward", "measure", "select", "pairs", "potential", "train", "evaluate",
             "theory")
    for verb in verbs:
        run = importlib.import_module(f"pvar.pipeline.{verb}").run
        assert list(inspect.signature(run).parameters)[:3] == ["source", "output", "cfg"], verb
