"""DPO full fine-tune of SmolLM2: pvar train with cached reference log-probs vs TRL's default.

    python bench/train.py [--pairs 40] [--steps 32] [--batch 8] [--max-length 256] [--arms lora8-plain,...]
                          [--threads N] [--workdir DIR]

Pairs: the first --pairs ShareGPT pool prompts as chat messages; chosen = the reference answer cut to
~60 words, rejected = a short unhelpful answer. Each arm runs `pvar.pipeline.train.train` in its own subprocess
(so peak RSS is measured per arm), on the same pairs, for the same number of steps, same seed:

- trl:       TRL's default DPOTrainer path: the reference model is kept in memory and run on every
             batch (trl_args precompute_ref_log_probs=False).
- pvar-cold: ref_cache given but empty: the reference log-probs of every pair in the file are computed
             once (one no-grad forward per pair), stored, then training runs without a reference model.
- pvar-warm: the same run again on the now filled cache: the situation of every later run on this
             pool (another selection, another seed, another algo among dpo/ipo, LoRA or full).
- lora-warm: (information) the LoRA variant on the same cache: LoRA's reference is the base model.
- lora8-warm: LoRA in the top 8 of SmolLM2's 30 blocks only (train.lora_layers 8, what the testbed
             presets use): each sequence runs through the 22 frozen blocks below once, and later steps
             start at block 22 (training/frozen_blocks.py). Ratio against lora-warm printed.
- lora8-plain: the same with train.skip_unused false: the frozen blocks run at every step and the LM
             head scores every position (the path before these shortcuts).
- ARM-blas:  any arm with ``PVAR_ONEDNN=0``: linear layers on torch's BLAS (MKL) instead of oneDNN
             (backends/onednn.py); the ratio ARM-blas / ARM is printed.

The last line is `speedup: N.Nx`: the train time of the path before these shortcuts and kernels
(lora8-plain-blas; lora8-plain when that arm is not run, as the line before it says) over lora8-warm's.

Prints wall time (whole call and trainer.train), s/step, CPU time and peak RSS of the child process
(os.wait4), and first/final loss of each arm,
the ratios trl / pvar, and the largest difference between the logged losses of trl and pvar-warm
(they must agree: same reference, same data order). Target: pvar-warm faster and smaller than trl.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNHELPFUL = ["I don't know.", "Sorry, I can't help with that.", "Maybe. It depends.", "Look it up yourself.",
             "That is not something I can answer.", "No."]


def make_pairs(path: Path, count: int) -> Path:
    from pvar.io.sharegpt import sharegpt_prompts

    with open(path, "w") as fh:
        for i, row in enumerate(sharegpt_prompts(count, "pool")):
            words = row["reference"].split()
            chosen = " ".join(words[:60]) + ("..." if len(words) > 60 else "")
            fh.write(json.dumps({
                "prompt_id": row["prompt_id"],
                "prompt": [{"role": "user", "content": row["prompt"]}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": UNHELPFUL[i % len(UNHELPFUL)]}],
                "pvar": 0.1, "chosen_reward": 1.0, "rejected_reward": 0.0,
            }) + "\n")
    return path


def worker(args: argparse.Namespace) -> None:
    """One arm, in this process; prints one JSON line."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from pvar.pipeline.train import TrainConfig, train

    args.arm = args.arm.removesuffix("-blas")  # the environment says which kernels
    settings = {"model": "smollm2", "algo": "dpo", "lora": args.arm.startswith("lora"),
                "lr": 5e-5 if args.arm.startswith("lora") else 5e-6, "max_steps": args.steps,
                "batch_size": args.batch, "max_length": args.max_length, "seed": 0}
    if args.arm == "trl":
        settings["trl_args"] = {"precompute_ref_log_probs": False}
    if args.arm.startswith("lora8"):
        settings["lora_layers"] = 8
    if args.arm == "lora8-plain":
        settings["skip_unused"] = False
    cache = None if args.arm == "trl" else args.cache
    result = train(args.pairs_file, args.out, TrainConfig.make(**settings), ref_cache=cache)
    log = [json.loads(line) for line in (Path(args.out) / "train_log.jsonl").read_text().splitlines()]
    print("RESULT " + json.dumps({"arm": args.arm, **result.to_dict(),
                                  "losses": [row["loss"] for row in log if "loss" in row]}), flush=True)


def run_arm(arm: str, args: argparse.Namespace, work: Path) -> dict:
    """Run one arm in a child process; adds its wall time, CPU time and peak RSS as the OS saw them."""
    cmd = [sys.executable, __file__, "--worker", arm, "--pairs-file", str(work / "pairs.jsonl"),
           "--out", str(work / arm), "--cache", str(work / "ref_logps"), "--steps", str(args.steps),
           "--batch", str(args.batch), "--max-length", str(args.max_length), "--threads", str(args.threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    if arm.endswith("-blas"):
        env["PVAR_ONEDNN"] = "0"
    t = time.perf_counter()
    with open(work / f"{arm}.stdout", "w") as out, open(work / f"{arm}.stderr", "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    code = os.waitstatus_to_exitcode(status)
    lines = [line for line in (work / f"{arm}.stdout").read_text().splitlines() if line.startswith("RESULT ")]
    if code != 0 or not lines:
        sys.stderr.write((work / f"{arm}.stderr").read_text()[-4000:])
        raise SystemExit(f"arm {arm} failed (exit {code})")
    result = json.loads(lines[-1][len("RESULT "):])
    result.update(process_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, child_rss_mb=usage.ru_maxrss / 1024)
    print(f"  {arm:<10} done in {wall:6.1f} s (load avg {os.getloadavg()[0]:.1f})", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--arms", default="lora8-plain-blas,lora8-plain,lora8-warm",
                    help="arms to run, in order; repeat one to take medians (pvar-warm/lora-warm need the cache "
                    "filled by an earlier pvar-cold, in this run or in the same --workdir)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--workdir", default="", help="keep checkpoints and logs here (default: a temp folder)")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--pairs-file", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    ap.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.arm = args.worker
        worker(args)
        return

    from pvar.backends.assets import resolve_policy

    resolve_policy("smollm2")  # convert once, outside the timed arms
    with tempfile.TemporaryDirectory(prefix="pvar-bench-train-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        make_pairs(work / "pairs.jsonl", args.pairs)
        print(f"SmolLM2-135M DPO, {args.pairs} chat pairs, {args.steps} steps x batch {args.batch}, "
              f"max_length {args.max_length}, cpu count {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}")
        runs = [(arm, run_arm(arm, args, work)) for arm in args.arms.split(",")]

    print(f"\n{'arm':<10} {'call s':>8} {'train s':>8} {'s/step':>7} {'CPU s':>8} {'peak RSS MiB':>13} "
          f"{'ref pairs':>10} {'first loss':>11} {'final loss':>11}")
    for arm, r in runs:
        ref = "-" if r["ref_computed"] is None else f"{r['ref_computed']}+{r['ref_reused']}"
        print(f"{arm:<10} {r['seconds']:8.1f} {r['train_seconds']:8.1f} {r['train_seconds'] / r['steps']:7.2f} "
              f"{r['cpu_s']:8.1f} {r['child_rss_mb']:13.0f} {ref:>10} {r['first_loss']:11.5f} {r['final_loss']:11.5f}")
    print("call s: the whole train() call (load, reference log-probs, train, save); CPU s: the child process's "
          "user+sys time,\nsteadier than wall time on a shared machine; ref pairs: computed + reused from "
          "the cache ('-': TRL runs the reference model every step)")
    by_arm: dict[str, list[dict]] = {}
    for arm, r in runs:
        by_arm.setdefault(arm, []).append(r)

    def med(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in by_arm[arm])

    if "lora-warm" in by_arm and "lora8-warm" in by_arm:
        ratios = ", ".join(f"{label} {med('lora-warm', key) / med('lora8-warm', key):.2f}x" for label, key in
                           (("train time", "train_seconds"), ("CPU time", "cpu_s")))
        print(f"lora-warm / lora8-warm (all blocks vs the top 8; medians over runs): {ratios}")
    for arm in [a for a in by_arm if a.endswith("-blas") and a.removesuffix("-blas") in by_arm]:
        fast = arm.removesuffix("-blas")
        ratios = ", ".join(f"{label} {med(arm, key) / med(fast, key):.2f}x" for label, key in
                           (("train time", "train_seconds"), ("CPU time", "cpu_s")))
        plain, ours = by_arm[arm][0]["losses"], by_arm[fast][0]["losses"]
        gap = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(plain, ours, strict=True))
        print(f"{arm} / {fast} (BLAS vs oneDNN linears; medians): {ratios}; largest relative loss difference "
              f"{gap:.1e}")
    if "lora8-plain" in by_arm and "lora8-warm" in by_arm:
        plain, fast = by_arm["lora8-plain"][0]["losses"], by_arm["lora8-warm"][0]["losses"]
        gap = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(plain, fast, strict=True))
        print(f"largest relative |loss(lora8-plain) - loss(lora8-warm)| over {len(plain)} steps: {gap:.1e}")
        speedup = med("lora8-plain", "train_seconds") / med("lora8-warm", "train_seconds")
        cpu = med("lora8-plain", "cpu_s") / med("lora8-warm", "cpu_s")
        print(f"lora8-plain / lora8-warm (frozen blocks every step vs once; medians): train time {speedup:.2f}x, "
              f"CPU time of the whole call {cpu:.2f}x")
    before = next((arm for arm in ("lora8-plain-blas", "lora8-plain") if arm in by_arm), None)
    if before and "lora8-warm" in by_arm:
        speedup = med(before, "train_seconds") / med("lora8-warm", "train_seconds")
        print(f"{before} / lora8-warm (the path before{' these kernels and' if before != 'lora8-plain' else ''} "
              f"these shortcuts; medians): train time {speedup:.2f}x")
        print(f"speedup: {speedup:.1f}x")
    if "trl" in by_arm:
        for arm in ("pvar-warm", "pvar-cold"):
            if arm in by_arm:
                ratios = ", ".join(f"{label} {med('trl', key) / med(arm, key):.2f}x" for label, key in
                                   (("call time", "seconds"), ("train time", "train_seconds"), ("CPU time", "cpu_s"),
                                    ("peak RSS", "child_rss_mb")))
                print(f"trl / {arm} (medians over runs): {ratios}")
        if "pvar-warm" in by_arm:
            diff = max(abs(a - b) for a, b in zip(by_arm["trl"][0]["losses"], by_arm["pvar-warm"][0]["losses"],
                                                  strict=True))
            print(f"largest |loss(trl) - loss(pvar-warm)| over {args.steps} steps: {diff:.2e}")


if __name__ == "__main__":
    main()
