"""Sampling throughput: HFPolicy against the per-prompt loop a user would write, on SmolLM2 (CPU, fp32).

    python bench/generate.py [--quick] [--batch-sizes 64,128] [--prompts 32] [--n 4] [--tokens 64] [--device cuda]
                             [--profile]

Measures in one process, on the same weights: (a) one ``model.generate(do_sample=True,
num_return_sequences=n)`` per prompt, the loop a user would write (transformers' own layers);
(b) ``HFPolicy.generate`` over all prompts at each batch size (fixed length-sorted batches, in-place
key/value buffers, shared-prompt attention, counter-based noise, oneDNN linears on the CPU: the
default path), and at the largest batch size the same without shared-prompt attention (per-row
key/value copies of each prompt) and without oneDNN (the BLAS torch links); (c) the same rows by
continuous batching (backends/decode.py) at the largest batch size. Tokens count each sequence up
to and including its EOS. Also measures the fastest fp32 product the device offers (BLAS matmul
or, on the CPU, oneDNN) to estimate a compute ceiling of GFLOP/s / (2 x params) generated tokens per
second (prefill and attention not counted), and the share of (b)'s wall time spent computing the
sampling noise. A last run with the linear layers timed gives the bound any attention or sampler
work could reach with these kernels at this batch (the ``bound:`` line). The last line is
``ceiling: NN%``, the best default-path (b) rate against that ceiling.
``--quick``: 8 prompts, 32 tokens. ``--join K``: each prompt is K ShareGPT prompts joined (long prompts,
where a per-row cache holds and reads each prompt n times: ``--join 12 --prompts 16 --n 8 --tokens 32``).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from pvar.backends import noise, onednn
from pvar.backends.base import Generation
from pvar.backends.hf_policy import HFPolicy
from pvar.core.seeding import prompt_seed
from pvar.io.sharegpt import sharegpt_prompts

TEMPERATURE, TOP_P = 0.8, 0.95


def load_note() -> str:
    """The 1-minute load average: other processes on a 2-core machine skew every figure."""
    return f"load {os.getloadavg()[0]:.1f}"


DEVICE = "cpu"


def sync() -> None:
    """Wait for the device, so a timer measures the work and not its queueing."""
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(size: int = 2048, repeat: int = 5) -> dict[str, float]:
    """Best fp32 product rates over a few repeats on the bench's device, in GFLOP/s (2 n^3 FLOPs per
    product): torch's matmul (the linked BLAS: MKL on x86) and, on the CPU, oneDNN's linear. The
    ceiling takes the faster, so a path that switches kernels cannot beat its own ceiling."""
    a, b = torch.randn(size, size, device=DEVICE), torch.randn(size, size, device=DEVICE)
    out = torch.empty(size, size, device=DEVICE)
    kernels = {"blas": lambda: torch.matmul(a, b, out=out)}
    if DEVICE == "cpu" and onednn.available():
        kernels["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    rates = {}
    for name, product in kernels.items():
        product()
        best = float("inf")
        for _ in range(repeat):
            sync()
            start = time.perf_counter()
            product()
            sync()
            best = min(best, time.perf_counter() - start)
        rates[name] = 2 * size**3 / best / 1e9
    return rates


def tokens_to_eos(new: torch.Tensor, eos: set[int]) -> int:
    """Generated tokens, each row counted up to and including its first EOS."""
    total = 0
    for row in new.tolist():
        hit = next((k for k, t in enumerate(row) if t in eos), None)
        total += len(row) if hit is None else hit + 1
    return total


def plain_loop(policy: HFPolicy, prompts: list[str], n: int, tokens: int) -> tuple[float, int]:
    """(a): one sampling ``generate`` per prompt, n return sequences, as the HF docs show it."""
    model, tok = policy.model, policy.tokenizer
    eos = policy._eos_ids
    torch.manual_seed(0)
    total, start = 0, time.perf_counter()
    for prompt in prompts:
        inputs = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         return_tensors="pt", return_dict=True).to(DEVICE)
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=True, temperature=TEMPERATURE, top_p=TOP_P,
                                 num_return_sequences=n, max_new_tokens=tokens, pad_token_id=tok.pad_token_id)
        total += tokens_to_eos(out[:, inputs["input_ids"].shape[1]:], eos)
    return time.perf_counter() - start, total


def run_policy(policy: HFPolicy, prompts: list[str], n: int, seeds: list[int],
               batch_size: int, continuous: bool = False) -> tuple[float, Generation]:
    """(b) / (c): all prompts through HFPolicy at one batch size."""
    policy.batch_size, policy.continuous = batch_size, continuous  # (c) opts in: HFPolicy's default is (b)
    sync()
    start = time.perf_counter()
    gen = policy.generate(prompts, n, seeds)
    sync()
    return time.perf_counter() - start, gen


def linear_bound(policy: HFPolicy, prompts: list[str], n: int, seeds: list[int], batch_size: int
                 ) -> tuple[float, float, int]:
    """(b) once more with every linear layer timed by forward hooks: (their seconds, the run's wall
    seconds, tokens). The linear layers are the ceiling's own work (2 x params FLOPs a token), so
    tokens / their seconds bounds what any attention, sampler or decoding loop could reach with
    these kernels at this batch."""
    spent, starts = [0.0], {}

    def before(module, args) -> None:
        sync()
        starts[module] = time.perf_counter()

    def after(module, args, output) -> None:
        sync()
        spent[0] += time.perf_counter() - starts.pop(module)

    linears = [m for m in policy.model.modules() if isinstance(m, torch.nn.Linear)]
    handles = [h for m in linears for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    try:
        seconds, gen = run_policy(policy, prompts, n, seeds, batch_size)
    finally:
        for handle in handles:
            handle.remove()
    return spent[0], seconds, gen.new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 prompts, 32 tokens")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="64,128")
    parser.add_argument("--join", type=int, default=1, help="join K ShareGPT prompts into each prompt (long prompts)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    parser.add_argument("--device", default="cpu", help="torch device (cuda: the ceiling is the device's fp32 rate)")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's top operations of one HFPolicy run at the largest batch")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = args.device
    if args.quick:
        args.prompts, args.tokens = 8, 32
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    rows = sharegpt_prompts(args.prompts * args.join, "pool")
    prompts = [" ".join(r["prompt"] for r in rows[i:i + args.join]) for i in range(0, len(rows), args.join)]
    seeds = [prompt_seed(0, r["prompt_id"]) for r in rows[::args.join]]
    policy = HFPolicy("smollm2", max_new_tokens=args.tokens, temperature=TEMPERATURE, top_p=TOP_P, device=DEVICE)
    policy.setup()
    n_params = sum(p.numel() for p in policy.model.parameters())
    print(f"SmolLM2: {n_params / 1e6:.1f}M params, {args.prompts} prompts x {args.n} samples x {args.tokens} tokens, "
          f"fp32, torch threads {torch.get_num_threads()}")

    kernels = matmul_gflops()
    gflops = max(kernels.values())
    ceiling = gflops * 1e9 / (2 * n_params)
    print(f"fp32 2048^2 products: {', '.join(f'{k} {v:.0f}' for k, v in kernels.items())} GFLOP/s -> ceiling "
          f"{ceiling:.0f} generated tokens/s ({2 * n_params / 1e9:.2f} GFLOP/token, prefill not counted)  "
          f"[{load_note()}]")

    # warm-up: first calls allocate and pick kernels
    plain_loop(policy, prompts[:1], 2, 4)
    policy.max_new_tokens = 4
    run_policy(policy, prompts[:2], 2, seeds[:2], 4)
    policy.max_new_tokens = args.tokens

    blas = onednn.disable(policy.model)  # the loop a user writes runs transformers' own layers
    seconds, tokens = plain_loop(policy, prompts, args.n, args.tokens)
    if blas:
        onednn.enable(policy.model)
    base = tokens / seconds
    print(f"(a) plain loop, 1 generate/prompt:  {tokens:6d} tokens in {seconds:7.1f} s = {base:6.1f} tok/s  "
          f"({base / ceiling:5.1%} of ceiling)  [{load_note()}]")
    results, outputs = {}, {}
    noise_seconds = [0.0]
    real_uniforms = noise.uniforms

    def timed_uniforms(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real_uniforms(*args, **kwargs)
        finally:
            noise_seconds[0] += time.perf_counter() - start

    noise.uniforms = timed_uniforms
    walls = {}
    for bs in batch_sizes:
        noise_seconds[0] = 0.0
        seconds, gen = run_policy(policy, prompts, args.n, seeds, bs)
        tokens, outputs[bs], walls[bs] = gen.new_tokens, gen.responses, (seconds, noise_seconds[0])
        rate = tokens / seconds
        results[bs] = rate
        print(f"(b) HFPolicy batch_size={bs:<4d}:       {tokens:6d} tokens in {seconds:7.1f} s = {rate:6.1f} tok/s  "
              f"({rate / ceiling:5.1%} of ceiling)  ratio {rate / base:4.2f}x  noise {noise_seconds[0]:.3f} s  "
              f"[{load_note()}]")
    noise.uniforms = real_uniforms
    policy.shared_prefix = False
    seconds, gen = run_policy(policy, prompts, args.n, seeds, batch_sizes[-1])
    policy.shared_prefix = True
    outputs["per-row"] = gen.responses
    rate = gen.new_tokens / seconds
    print(f"(b) per-row prompt copies, {batch_sizes[-1]:<4d}:   {gen.new_tokens:6d} tokens in {seconds:7.1f} s = "
          f"{rate:6.1f} tok/s  ({rate / ceiling:5.1%} of ceiling)  shared-prompt attention "
          f"{results[batch_sizes[-1]] / rate:4.2f}x  [{load_note()}]")
    if blas:
        onednn.disable(policy.model)
        seconds, gen = run_policy(policy, prompts, args.n, seeds, batch_sizes[-1])
        onednn.enable(policy.model)
        outputs["blas"] = gen.responses
        rate = gen.new_tokens / seconds
        print(f"(b) BLAS linears (no oneDNN), {batch_sizes[-1]:<4d}: {gen.new_tokens:6d} tokens in {seconds:7.1f} s = "
              f"{rate:6.1f} tok/s  ({rate / ceiling:5.1%} of ceiling)  oneDNN {results[batch_sizes[-1]] / rate:4.2f}x  "
              f"[{load_note()}]")
    seconds, gen = run_policy(policy, prompts, args.n, seeds, batch_sizes[-1], continuous=True)
    slots = gen.new_tokens / seconds
    outputs["continuous"] = gen.responses
    print(f"(c) continuous batching, {batch_sizes[-1]:<4d} slots: {gen.new_tokens:6d} tokens in {seconds:7.1f} s = "
          f"{slots:6.1f} tok/s  ({slots / ceiling:5.1%} of ceiling)  [{load_note()}]")
    after = matmul_gflops()
    rates = [gflops, max(after.values())]
    top = max(rates) * 1e9 / (2 * n_params)
    blas_top = max(kernels["blas"], after["blas"]) * 1e9 / (2 * n_params)
    if top > ceiling * 1.05:
        print(f"note: the matmul rate moved from {rates[0]:.0f} to {rates[1]:.0f} GFLOP/s during the run (a noisy "
              f"machine); the ceiling below is the higher one ({top:.0f} tok/s)")
    first = outputs[batch_sizes[0]]
    for bs in [*batch_sizes[1:], "per-row", *(["blas"] if blas else []), "continuous"]:
        same = sum(a == b for x, y in zip(first, outputs[bs], strict=True) for a, b in zip(x, y, strict=True))
        print(f"samples identical at batch_size={bs} and {batch_sizes[0]}: {same}/{args.prompts * args.n}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.startswith("cuda") else [])
        with profile(activities=activities) as prof:
            run_policy(policy, prompts, args.n, seeds, batch_sizes[-1])
        key = "self_cuda_time_total" if DEVICE.startswith("cuda") else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=15))
    best = max(results, key=results.get)
    wall, noise_wall = walls[best]
    linear, hooked, counted = linear_bound(policy, prompts, args.n, seeds, best)
    print(f"bound: the linear layers took {linear:.1f} s of a {hooked:.1f} s run (prefill included); with attention, "
          f"sampling and the rest free, batch_size={best} would reach {counted / linear:.0f} tok/s = "
          f"{counted / linear / top:.0%} of the ceiling  [{load_note()}]")
    print(f"best batch_size {best}: {results[best]:.1f} tok/s, {results[best] / base:.2f}x the plain loop, "
          f"{results[best] / slots:.2f}x continuous batching; sampling noise {noise_wall / wall:.2%} of the wall time")
    if blas_top < top:
        print(f"against torch's BLAS matmul rate alone (the ceiling these figures used before oneDNN): "
              f"{results[best] / blas_top:.0%}")
    print(f"ceiling: {results[best] / top:.0%}")

if __name__ == "__main__":
    main()
