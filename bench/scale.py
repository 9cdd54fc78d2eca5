"""`pvar measure` then `pvar select --top 0.1` on a 1,000,000-prompt Parquet pool.

    python bench/scale.py [--prompts 1000000] [--n 8] [--workdir DIR]

Builds the pool (8 short responses and rewards per prompt), runs both commands as a user would
(separate processes), and prints prompts/s and peak RSS of each. As a baseline in the same run it
times the plain approach: pandas-free pyarrow `read_table` + per-row Python PVar on a 20,000-row
slice, extrapolated per prompt. Targets on a 2-core CPU: >= 100,000 prompts/s through measure,
peak RSS <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WRAP = (
    "import resource, subprocess, sys, json, time; t = time.perf_counter(); "
    "r = subprocess.run(sys.argv[1:]); "
    "print(json.dumps({'rc': r.returncode, 'seconds': time.perf_counter() - t, "
    "'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"
)
TEMPLATES = [f"Response variant {i}: " + "some words " * (i % 7 + 1) for i in range(64)]


def build_pool(path: Path, n_prompts: int, n: int, chunk: int = 131_072) -> None:
    rng = np.random.default_rng(0)
    templates = pa.array(TEMPLATES)
    writer = None
    for start in range(0, n_prompts, chunk):
        rows = min(chunk, n_prompts - start)
        ids = pa.array([f"p{i:08d}" for i in range(start, start + rows)])
        prompts = pa.array([f"Prompt number {i}: what should I do?" for i in range(start, start + rows)])
        offsets = pa.array(np.arange(0, rows * n + 1, n, dtype=np.int32))
        responses = pa.ListArray.from_arrays(offsets, templates.take(rng.integers(0, 64, rows * n)))
        spread = rng.gamma(2.0, 0.5, rows)[:, None]
        rew = (rng.normal(0, 1, (rows, 1)) + spread * rng.standard_normal((rows, n))).astype(np.float32)
        rewards = pa.ListArray.from_arrays(offsets, pa.array(rew.reshape(-1)))
        table = pa.table({"prompt_id": ids, "prompt": prompts, "responses": responses, "rewards": rewards})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def run_measured(cmd: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", WRAP, *cmd], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def plain_baseline(path: Path, rows: int = 20_000) -> float:
    """Seconds per prompt for read + per-row Python PVar + write, the way a script would do it."""
    t = time.perf_counter()
    table = pq.read_table(path).slice(0, rows)
    out = []
    for r in table.column("rewards").to_pylist():
        n = len(r)
        s = sum((1 / (1 + math.exp(-(r[i] - r[j]))) - 0.5) ** 2 for i in range(n) for j in range(n) if i != j)
        out.append(s / (n * (n - 1)))
    table = table.append_column("pvar", pa.array(out))
    pq.write_table(table, path.with_name("plain.parquet"))
    return (time.perf_counter() - t) / rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=1_000_000)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pvar-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    pool, measured, top = work / "pool.parquet", work / "measured.parquet", work / "top.parquet"
    t = time.perf_counter()
    build_pool(pool, args.prompts, args.n)
    print(f"built {args.prompts:,}-prompt pool ({pool.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s")
    pvar = [sys.executable, "-m", "pvar.cli"]
    m = run_measured([*pvar, "measure", str(pool), "-o", str(measured)])
    s = run_measured([*pvar, "select", str(measured), "-o", str(top), "--top", "0.1"])
    assert m["rc"] == 0 and s["rc"] == 0, (m, s)
    kept = pq.ParquetFile(top).metadata.num_rows
    per_plain = plain_baseline(pool)
    print(f"measure: {m['seconds']:.2f} s, {args.prompts / m['seconds']:,.0f} prompts/s "
          f"(target >= 100,000), peak RSS {m['maxrss_kb'] / 1e6:.2f} GB (target <= 1.5 GB)")
    print(f"select --top 0.1: {s['seconds']:.2f} s, {args.prompts / s['seconds']:,.0f} prompts/s, "
          f"peak RSS {s['maxrss_kb'] / 1e6:.2f} GB, kept {kept:,}")
    print(f"plain read + Python-loop PVar + write: {1 / per_plain:,.0f} prompts/s; "
          f"measure is {per_plain * args.prompts / m['seconds']:.1f}x faster (and adds the interval)")


if __name__ == "__main__":
    main()
