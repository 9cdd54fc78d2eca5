"""Reference-similarity reward (minilm-ref) over 512 responses: per-response loop vs pvar's batched scorer.

    python bench/reward.py [--prompts 128] [--loop-prompts 32] [--batch-size 32] [--repeat 2] [--threads N]

Responses are built from ShareGPT pool prompts: per prompt, the reference itself, the reference cut at
1/3 and 2/3 of its sentences, and its sentences shuffled (4 per prompt). Times (a) the loop a user would
write, `model.encode([response, reference])` then a cosine per response, on the first --loop-prompts
prompts (the loop runs at ~1-2 responses/s on a 2-core CPU, so all 512 would take minutes; its rate does
not depend on the count), and (b) `EmbeddingReward.score` on all responses in one call, with the same
loaded model in this process, its embedding cache emptied before every timed call (each run is cold:
the cache would otherwise answer a repeat in no time). Prints both rates, the ratio, and the largest
score difference between the two on the shared prompts. Target on a 2-core CPU: ratio >= 3x.

These texts are long (~150 tokens on average, 21 % cut at MiniLM's 256), so a CPU encode is compute
bound: per text, a batch is barely faster than a pair, and the gain comes from encoding each distinct
text once (the loop encodes every reference 4 times, and response 1 is the reference itself). Batches
of 16-32 beat 256 on CPU by ~1.5x, hence the --batch-size default here.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import time

import numpy as np

from pvar.backends.embed_reward import _CACHE, clear_cache
from pvar.backends.spec import parse_reward_spec
from pvar.io.sharegpt import sharegpt_prompts


def make_batch(count: int, seed: int = 0) -> tuple[list[str], list[list[str]], list[str]]:
    """Prompts, 4 reference-derived responses per prompt, and references."""
    rng = random.Random(seed)
    prompts, responses, refs = [], [], []
    for row in sharegpt_prompts(count, "pool"):
        ref = row["reference"]
        sents = [s for s in re.split(r"(?<=[.!?])\s+", ref) if s] or [ref]
        shuffled = sents[:]
        rng.shuffle(shuffled)
        prompts.append(row["prompt"])
        responses.append([ref, _head(sents, 1 / 3), _head(sents, 2 / 3), " ".join(shuffled)])
        refs.append(ref)
    return prompts, responses, refs


def _head(sents: list[str], frac: float) -> str:
    return " ".join(sents[: max(1, round(len(sents) * frac))])


def per_response_loop(model, responses: list[list[str]], refs: list[str]) -> list[list[float]]:
    """What a user would write: encode each (response, reference) pair, then a cosine."""
    out = []
    for resps, ref in zip(responses, refs, strict=True):
        row = []
        for r in resps:
            a, b = model.encode([r, ref], show_progress_bar=False)
            row.append(float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))))
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--loop-prompts", type=int, default=32, help="prompts timed with the per-response loop")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved runs of each; the fastest counts")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    prompts, responses, refs = make_batch(args.prompts)
    n = sum(len(r) for r in responses)
    scorer = parse_reward_spec("minilm-ref", batch_size=args.batch_size)
    t = time.perf_counter()
    scorer.setup()
    distinct = len({*(r for rs in responses for r in rs), *refs})
    print(f"minilm load: {time.perf_counter() - t:.2f} s; {n} responses, {len(prompts)} prompts, {distinct} distinct "
          f"texts; torch threads: {torch.get_num_threads()}, batch size {args.batch_size}")
    model = scorer._model
    model.encode(["warm up", "the model"], show_progress_bar=False)

    k = min(args.loop_prompts, len(prompts))
    n_loop = sum(len(r) for r in responses[:k])
    loop_s, batch_s = [], []
    for _ in range(args.repeat):  # interleaved, best of: a shared CPU's other load hits both alike
        t = time.perf_counter()
        looped = per_response_loop(model, responses[:k], refs[:k])
        loop_s.append(time.perf_counter() - t)
        clear_cache(models=False)  # cold: the process-wide embedding cache would otherwise answer run 2
        t = time.perf_counter()
        batched = scorer.score(prompts, responses, refs).rewards
        batch_s.append(time.perf_counter() - t)
        assert len(_CACHE) == distinct  # every distinct text was encoded in the timed call

    diff = float(np.max(np.abs(np.concatenate(looped) - np.concatenate(batched[:k]))))
    loop_rate, batch_rate = n_loop / min(loop_s), n / min(batch_s)
    print(f"(a) per-response loop : {n_loop:4d} responses in {min(loop_s):7.2f} s  {loop_rate:7.1f} responses/s"
          f"  (runs: {', '.join(f'{x:.1f}' for x in loop_s)} s)")
    print(f"(b) EmbeddingReward   : {n:4d} responses in {min(batch_s):7.2f} s  {batch_rate:7.1f} responses/s"
          f"  (runs: {', '.join(f'{x:.1f}' for x in batch_s)} s)")
    print(f"ratio (b)/(a): {batch_rate / loop_rate:.1f}x (target >= 3x); max |score difference|: {diff:.2e}")

if __name__ == "__main__":
    main()
