"""The README's layout section names every part of the package, and only parts that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "pvar"


def _layout() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def test_named_paths_exist() -> None:
    named = re.findall(r"(src/pvar/[\w./]*|bench/|scripts/|tests/)", _layout())
    assert len(named) > 10
    for path in named:
        assert (ROOT / path).exists(), f"README layout names {path}, which does not exist"
    for line in _layout().splitlines():  # "src/pvar/cli.py, render.py" names siblings
        m = re.match(r"(src/pvar/)(\w+\.py)((?:, \w+\.py)+)", line)
        if m:
            for sibling in m.group(3).split(", ")[1:]:
                assert (PKG / sibling).exists(), sibling


def test_every_part_of_the_package_is_named() -> None:
    layout = _layout()
    parts = [p.name for p in PKG.iterdir() if not p.name.startswith(("_", ".")) and p.name != "data"
             and (p.suffix == ".py" or p.is_dir())]
    missing = [p for p in parts if not re.search(rf"\b{re.escape(p.removesuffix('.py'))}\b", layout)]
    assert not missing, f"README layout does not mention: {', '.join(sorted(missing))}"


def test_every_verb_module_is_named() -> None:
    layout = _layout()
    block = layout.split("src/pvar/pipeline/", 1)[1].split("src/pvar/plots", 1)[0]
    verbs = [p.stem for p in (PKG / "pipeline").glob("*.py") if not p.stem.startswith("_")]
    missing = [v for v in verbs if not re.search(rf"\b{v}\b", block)]
    assert not missing, f"README layout's pipeline line lacks: {', '.join(sorted(missing))}"


def test_every_flag_the_docs_name_exists() -> None:
    """A `pvar COMMAND --flag` written in the README or docs/ is an option of that command."""
    import typer.main

    from pvar.cli import app

    group = typer.main.get_command(app)
    text = (ROOT / "README.md").read_text(encoding="utf-8") + "".join(
        p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))
    checked, missing = 0, []
    for m in re.finditer(r"`pvar (\w+)([^`]*)`", text):
        command = group.commands.get(m.group(1))
        if command is None:
            continue
        flags = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        for flag in re.findall(r"(--[a-z][a-z0-9-]*)", m.group(2)):
            checked += 1
            if flag not in flags:
                missing.append(f"pvar {m.group(1)} {flag}")
    assert checked > 30 and not missing, missing
