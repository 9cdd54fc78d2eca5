"""PVar + baselines over 1,000,000 prompts x 8 rewards (float32), against a plain Python loop.

    python bench/core.py [--prompts 1000000] [--n 8] [--loop-prompts 20000]

Prints seconds for the vectorized core on the full pool, the same for a per-prompt Python loop
on a subset (both measured in this process), and the per-prompt speed ratio.
Targets on a 2-core CPU: <= 1.0 s for the 1M pool, ratio >= 50x.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from pvar.core.stats import pvar_interval, reward_stats


def plain_loop(rewards: np.ndarray) -> list[tuple[float, float, float, float]]:
    """What a user would write: per prompt, ordered pairs with math.exp, then mean/std/range."""
    out = []
    for row in rewards.tolist():
        n = len(row)
        total = 0.0
        for i in range(n):
            for j in range(n):
                if i != j:
                    total += (1.0 / (1.0 + math.exp(-(row[i] - row[j]))) - 0.5) ** 2
        mean = sum(row) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in row) / n)
        out.append((total / (n * (n - 1)), mean, std, max(row) - min(row)))
    return out


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=1_000_000)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--loop-prompts", type=int, default=20_000)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    rewards = rng.normal(0, 2, size=(args.prompts, args.n)).astype(np.float32)
    subset = rewards[: args.loop_prompts]

    # correctness first: both paths agree on the subset
    ref = np.array(plain_loop(subset[:500]))
    got = reward_stats(subset[:500])
    np.testing.assert_allclose(got.pvar, ref[:, 0], rtol=1e-4)
    np.testing.assert_allclose(got.reward_std, ref[:, 2], rtol=1e-4)

    t_core = best_of(lambda: reward_stats(rewards))
    t_core_sub = best_of(lambda: reward_stats(subset))
    t_loop = best_of(lambda: plain_loop(subset), repeat=1)
    t_interval = best_of(lambda: pvar_interval(rewards), repeat=1)

    per_core = t_core / args.prompts
    per_loop = t_loop / args.loop_prompts
    print(f"pool: {args.prompts:,} prompts x {args.n} rewards (float32)")
    print(f"pvar + baselines, vectorized, full pool : {t_core:8.3f} s  (target <= 1.0 s)")
    print(f"pvar + baselines, vectorized, {args.loop_prompts:,} prompts: {t_core_sub:8.3f} s")
    print(f"plain per-prompt Python loop, {args.loop_prompts:,} prompts: {t_loop:8.3f} s")
    print(f"speed ratio per prompt (loop / vectorized, full pool): {per_loop / per_core:8.1f}x  (target >= 50x)")
    print(f"speed ratio on the same {args.loop_prompts:,} prompts: {t_loop / t_core_sub:8.1f}x")
    print(f"bootstrap 95% interval (200 resamples), full pool: {t_interval:8.3f} s")


if __name__ == "__main__":
    main()
