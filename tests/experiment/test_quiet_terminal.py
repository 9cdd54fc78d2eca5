"""`pvar run` in a terminal: pvar's own lines and bars only, no library progress bars or chatter."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest

pytest.importorskip("trl")

LIBRARY_NOISE = ("Loading weights", "Writing model shards", "Tokenizing train dataset", "Dropping fully truncated",
                 "Extracting prompt", "Applying chat template", "Flattening the indices", "examples/s]", "it/s]",
                 "Map:", "Generating train split")


def run_in_pty(cmd: list[str], env: dict[str, str], timeout: float = 600) -> str:
    """Run ``cmd`` with a pseudo-terminal as stdout and stderr (so rich and tqdm both think they draw)."""
    leader, follower = pty.openpty()
    # A fresh pty is 0 x 0: tqdm would then draw bars of width 0 and this test could not see them.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(cmd, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=timeout)
    os.close(leader)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    from pvar.testing import tiny_causal_lm

    tmp = tmp_path_factory.mktemp("quiet")
    return tiny_causal_lm(tmp / "model", [f"Tell me about topic {i}. yes no maybe" for i in range(12)])


def test_run_shows_no_library_progress_bars(tmp_path, tiny_policy):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
policy: {tiny_policy}
backend: hf
until: train
budget: 0.5
prompts: {{pool: 8, eval: 4}}
scoring: {{n: 4, reward: fake, max_new_tokens: 6, batch_size: 8}}
theory: {{prompts: 0}}
train: {{max_steps: 2, batch_size: 2, max_length: 64, lr: 0.01}}
arms:
  - {{name: top, select: top, by: pvar}}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "DATASETS_"))}
    env.update(HF_HUB_OFFLINE="1", COLUMNS="120", TERM="xterm")
    text = run_in_pty([sys.executable, "-m", "pvar", "run", str(cfg), "-o", str(tmp_path / "run")], env)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "train:top" in plain and "report" in plain  # pvar's own lines are there
    noise = [n for n in LIBRARY_NOISE if n in plain]
    assert not noise, f"library output in the terminal: {noise}\n{plain[-2000:]}"
    verbose = run_in_pty([sys.executable, "-m", "pvar", "--verbose", "run", str(cfg), "-o", str(tmp_path / "v")],
                         env)
    assert any(n in verbose for n in LIBRARY_NOISE), "--verbose should bring the libraries' output back"
