"""Eval-answer throughput (greedy, one answer per prompt): what `pvar eval` and `pvar run` pay per arm.

    python bench/eval_generate.py [--prompts 32] [--tokens 48] [--batch-size 64]

Measures in one process, on SmolLM2 and the same held-out ShareGPT prompts: (a) one greedy
``model.generate`` per prompt in float32, as a plain script does it (transformers' own layers);
(b) ``HFPolicy`` greedy, length-bucketed batches, float32 (oneDNN linears on the CPU); (c) the same
in bfloat16 (what ``pvar run`` uses on CPUs with native bf16 dot products). Tokens count each
answer up to and including its EOS. Also reports how many answers (b) and (c) agree on word for
word (bf16 rounding changes some greedy paths).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from pvar.backends import onednn
from pvar.backends.hf_policy import HFPolicy
from pvar.io.sharegpt import sharegpt_prompts


def load_note() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def plain_loop(policy: HFPolicy, prompts: list[str], tokens: int) -> tuple[float, int]:
    model, tok = policy.model, policy.tokenizer
    eos = policy._eos_ids
    total, start = 0, time.perf_counter()
    for prompt in prompts:
        inputs = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=tokens, pad_token_id=tok.pad_token_id)
        row = out[0, inputs["input_ids"].shape[1]:].tolist()
        hit = next((k for k, t in enumerate(row) if t in eos), None)
        total += len(row) if hit is None else hit + 1
    return time.perf_counter() - start, total


def batched(dtype: str, prompts: list[str], tokens: int, batch_size: int) -> tuple[float, int, list[str]]:
    policy = HFPolicy("smollm2", max_new_tokens=tokens, batch_size=batch_size, dtype=dtype, greedy=True)
    policy.setup()
    policy.generate(prompts[:2], 1, [0, 1])  # warm-up
    start = time.perf_counter()
    gen = policy.generate(prompts, 1, list(range(len(prompts))))
    return time.perf_counter() - start, gen.new_tokens, [r[0] for r in gen.responses]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    prompts = [r["prompt"] for r in sharegpt_prompts(args.prompts, "eval")]
    print(f"SmolLM2 greedy answers: {args.prompts} eval prompts x {args.tokens} tokens, torch threads "
          f"{torch.get_num_threads()}  [{load_note()}]")

    fp32 = HFPolicy("smollm2", max_new_tokens=args.tokens, greedy=True)
    fp32.setup()
    onednn.disable(fp32.model)  # a plain script runs transformers' own layers (torch's BLAS)
    plain_loop(fp32, prompts[:1], 4)  # warm-up
    seconds, tokens = plain_loop(fp32, prompts, args.tokens)
    base = tokens / seconds
    print(f"(a) plain loop, fp32:          {tokens:6d} tokens in {seconds:6.1f} s = {base:6.1f} tok/s  [{load_note()}]")
    del fp32

    texts = {}
    for label, dtype in (("(b) HFPolicy batched, fp32:  ", "float32"), ("(c) HFPolicy batched, bf16:  ", "bfloat16")):
        seconds, tokens, texts[dtype] = batched(dtype, prompts, args.tokens, args.batch_size)
        rate = tokens / seconds
        print(f"{label}  {tokens:6d} tokens in {seconds:6.1f} s = {rate:6.1f} tok/s  -> {rate / base:4.1f}x (a)  "
              f"[{load_note()}]")
    same = sum(a == b for a, b in zip(texts["float32"], texts["bfloat16"], strict=True))
    print(f"bf16 and fp32 answers identical on {same}/{len(prompts)} prompts")


if __name__ == "__main__":
    main()
