"""A run's arms trained one after another in one process, as ``pvar run`` trains them: the lower blocks'
states shared with the reference pass and between trainers, against each trainer on its own.

    python bench/arms.py [--pairs 48] [--subset 24] [--randoms 3] [--steps 24] [--batch 4] [--max-length 320]
                         [--repeat 1]

Pairs: the first --pairs ShareGPT pool prompts as chat pairs (bench/train.py's). Arms, in order, on SmolLM2
with LoRA in its top 8 blocks (the testbed's training): "top" trains on every pair, then --randoms arms on
random subsets of --subset pairs (seeds 0, 1, ...), all with one reference log-prob cache that starts
empty, as in a fresh run folder. Each mode runs in its own child process:

- alone:  ``PVAR_SHARED_STATES=0``: the reference pass runs all 30 blocks and scores the LM head at every
          position; each trainer computes its sequences' lower-block states again (the path before).
- shared: the default: the reference pass keeps the states training uses, and later arms reuse those of
          the pairs they share with earlier ones.

Prints each arm's whole ``train()`` call time (load, reference log-probs, training, save) in both modes,
the largest relative difference of their logged losses, and as its last line ``arms speedup: N.NNx``
(alone / shared, total call time of all arms; medians over --repeat alternations).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args: argparse.Namespace) -> None:
    """Every arm, in this process; prints one JSON line per arm."""
    from pvar.pipeline.train import TrainConfig, train

    work = Path(args.work)
    cache = work / f"ref-{args.mode}"
    for name in args.names.split(","):
        cfg = TrainConfig.make(model="smollm2", algo="dpo", lora=True, lora_layers=8, lr=5e-4, seed=0,
                               max_steps=args.steps, batch_size=args.batch, max_length=args.max_length)
        out = work / f"{args.mode}-{name}"
        start = time.perf_counter()
        result = train(work / f"{name}.jsonl", out, cfg, ref_cache=cache)
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        print("RESULT " + json.dumps({"arm": name, "call_s": time.perf_counter() - start,
                                      "train_s": result.train_seconds, "ref_computed": result.ref_computed,
                                      "losses": [row["loss"] for row in log if "loss" in row]}), flush=True)


def run_mode(mode: str, names: list[str], args: argparse.Namespace, work: Path) -> dict[str, dict]:
    """One child process over every arm; ``alone`` sets PVAR_SHARED_STATES=0."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    env["PVAR_SHARED_STATES"] = "0" if mode == "alone" else "1"
    for old in [*work.glob(f"{mode}-*"), work / f"ref-{mode}"]:  # a repeat starts from an empty cache, too
        shutil.rmtree(old, ignore_errors=True)
    cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--work", str(work), "--names", ",".join(names),
           "--steps", str(args.steps), "--batch", str(args.batch), "--max-length", str(args.max_length)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"mode {mode} failed (exit {proc.returncode})")
    rows = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    print(f"  {mode:<6} done: {sum(r['call_s'] for r in rows):6.1f} s (load avg {os.getloadavg()[0]:.1f})",
          flush=True)
    return {r["arm"]: r for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--subset", type=int, default=24)
    ap.add_argument("--randoms", type=int, default=3)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=320)
    ap.add_argument("--repeat", type=int, default=1, help="alternations of the two modes (medians are printed)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="", help=argparse.SUPPRESS)
    ap.add_argument("--work", default="", help=argparse.SUPPRESS)
    ap.add_argument("--names", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from pvar.backends.assets import resolve_policy
    from train import make_pairs  # bench/train.py's pairs

    resolve_policy("smollm2")  # convert once, outside the timed modes
    with tempfile.TemporaryDirectory(prefix="pvar-bench-arms-") as tmp:
        work = Path(tmp)
        rows = make_pairs(work / "pool.jsonl", args.pairs).read_text().splitlines(keepends=True)
        (work / "top.jsonl").write_text("".join(rows))
        names = ["top"]
        for seed in range(args.randoms):
            pick = sorted(random.Random(seed).sample(range(len(rows)), args.subset))
            (work / f"random-s{seed}.jsonl").write_text("".join(rows[i] for i in pick))
            names.append(f"random-s{seed}")
        print(f"SmolLM2-135M DPO, LoRA in the top 8 blocks: arm top on {args.pairs} chat pairs, {args.randoms} "
              f"random arms on {args.subset} of them; {args.steps} steps x batch {args.batch}, max_length "
              f"{args.max_length}; cpu count {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}")
        runs: dict[str, list[dict[str, dict]]] = {"alone": [], "shared": []}
        for _ in range(args.repeat):
            for mode in ("alone", "shared"):
                runs[mode].append(run_mode(mode, names, args, work))

    def med(mode: str, arm: str) -> float:
        return statistics.median(r[arm]["call_s"] for r in runs[mode])

    print(f"\n{'arm':<10} {'alone s':>8} {'shared s':>9} {'ratio':>6} {'ref pairs':>10}")
    for arm in names:
        ref = runs["shared"][0][arm]["ref_computed"]
        print(f"{arm:<10} {med('alone', arm):8.1f} {med('shared', arm):9.1f} "
              f"{med('alone', arm) / med('shared', arm):6.2f} {ref:>10}")
    gap = max(abs(a - b) / max(abs(a), 1e-12) for arm in names
              for a, b in zip(runs["alone"][0][arm]["losses"], runs["shared"][0][arm]["losses"], strict=True))
    alone = statistics.median(sum(r[arm]["call_s"] for arm in names) for r in runs["alone"])
    shared = statistics.median(sum(r[arm]["call_s"] for arm in names) for r in runs["shared"])
    print(f"all arms: alone {alone:.1f} s, shared {shared:.1f} s; largest relative loss difference {gap:.1e}")
    print(f"arms speedup: {alone / shared:.2f}x")


if __name__ == "__main__":
    main()
