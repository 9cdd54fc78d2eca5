import json
import os
import sys
from pathlib import Path

import pytest

from pvar.cli import main

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # an accidental hub call fails at once
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run ``pvar ARGS`` in process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["pvar", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models run fastest on one thread, and 2 OpenMP threads stall badly on a busy 2-core
    machine (a 2-layer forward measured 0.2 s instead of 2 ms); restores the setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_jsonl(path: Path, rows: list) -> Path:
    with open(path, "w") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def scored_rows(n: int = 12, k: int = 4) -> list[dict]:
    rows = []
    for i in range(n):
        spread = (i % 4) * 0.7
        rows.append({
            "prompt_id": f"p{i:03d}",
            "prompt": f"Question number {i}?",
            "responses": [f"answer {i}.{j}" for j in range(k)],
            "rewards": [round(spread * (j - k / 2) + 0.1 * i, 3) for j in range(k)],
        })
    return rows
