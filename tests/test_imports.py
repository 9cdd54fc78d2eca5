"""Layering: importing pvar and its numpy core must not pull in heavy libraries."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "trl", "ray", "vllm", "datasets", "sentence_transformers", "matplotlib")


@pytest.mark.parametrize("module", ["pvar", "pvar.core.stats", "pvar.io.rows", "pvar.pipeline.measure",
                                    "pvar.pipeline.select", "pvar.pipeline.pairs", "pvar.cli",
                                    "pvar.backends.assets"])
def test_import_stays_light(module):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imported {out.stdout.strip()}"


def test_core_imports_only_numpy():
    code = ("import sys; import pvar.core.stats, pvar.core.select, pvar.core.pairs, pvar.core.summary;"
            "print(','.join(sorted(m for m in ('pyarrow', 'pydantic', 'rich', 'typer') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # importing pvar.core runs pvar/__init__, which pulls the light errors module only
    assert out.stdout.strip() == ""
