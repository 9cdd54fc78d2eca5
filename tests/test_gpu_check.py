"""scripts/gpu_check.py on the CPU with the tiny models: the GPU check's code paths cannot rot here."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("ray")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
# sampling, noise, shared-prompt attention, reward, gradient signal, Ray, DPO under accelerate,
# greedy eval, held-out pairs, `pvar run`
CHECKS = 10


def test_gpu_check_runs_every_check_on_cpu(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick"], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("ok", "FAIL"))]
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert len(lines) == CHECKS and all(line.startswith("ok") for line in lines), done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith(f"{CHECKS}/{CHECKS} checks passed on cpu")
