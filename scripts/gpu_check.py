"""The GPU check behind scripts/gpu-check.sh: one line per check, exit 1 if any fails.

Needs pvar installed with its dev extras (torch with CUDA, transformers, TRL, accelerate, Ray) and
the offline SmolLM2 asset; no hub and no vLLM. On one modern GPU it takes a few minutes.

    python scripts/gpu_check.py [--device cuda] [--quick]

``--device cpu --quick`` runs the same code paths on the CPU with the tiny models only (the test
suite does this, so the script cannot rot where no GPU is at hand). Tolerances, stated up front:

- seeded sampling, CUDA fp32 vs CPU fp32: >= 90 % of the samples token-identical for the tiny
  model; >= 80 % mean common-prefix share for SmolLM2 (kernels differ in the last bits, which can
  flip a sampled token where two perturbed scores nearly tie; the prefix before a flip is equal);
- bf16 sampling: runs, and >= 90 % of its responses are non-empty (bf16 samples differ from fp32
  ones by design; the share of common prefix is printed, not judged);
- hf: reward in bf16 vs fp32 (a SmolLM2-based classifier with a seeded head): Spearman >= 0.98
  and max |difference| <= 5 % of the fp32 scores' range;
- Ray: an actor asking for num_gpus=1 sees one GPU, one asking for none sees none, and the
  generate stage on Ray (actors asking for a GPU) writes the rows the local engine writes;
- training: 4 DPO steps (LoRA, bf16 mixed precision on GPUs) under ``accelerate launch``, with a
  finite loss and the reference cache written.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

PROMPTS = ["What is the capital of France?", "Write a haiku about rain.", "Explain gravity to a child.",
           "List three uses of salt.", "Why is the sky blue?", "Give me a tip for sleeping well.",
           "What is 17 times 3?", "Name a famous painting."]
TEXTS = [*PROMPTS, "the cat sat on the mat", "a quick brown fox jumps over the lazy dog", "rain falls on the sea"]


def prefix_share(a: list[int], b: list[int]) -> float:
    """Share of the longer sequence that both sequences have in common from the start."""
    if not a and not b:
        return 1.0
    same = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        same += 1
    return same / max(len(a), len(b))


def sample_ids(model: str, device: str, dtype: str, n: int, tokens: int) -> list[list[list[int]]]:
    """Seeded samples (token ids) of PROMPTS from HFPolicy."""
    from pvar.backends.hf_policy import HFPolicy

    policy = HFPolicy(model, max_new_tokens=tokens, device=device, dtype=dtype, batch_size=64)
    policy.setup()
    gen = policy.generate(PROMPTS, n, list(range(len(PROMPTS))))
    tok = policy.tokenizer
    return [[tok(t, add_special_tokens=False)["input_ids"] for t in row] for row in gen.responses]


def check_policy(model: str, device: str, dtype: str, *, n: int, tokens: int, need: float,
                 exact: bool) -> tuple[bool, str]:
    ref = sample_ids(model, "cpu", "float32", n, tokens)
    got = sample_ids(model, device, dtype, n, tokens)
    pairs = [(a, b) for ra, rb in zip(ref, got, strict=True) for a, b in zip(ra, rb, strict=True)]
    identical = sum(a == b for a, b in pairs) / len(pairs)
    share = sum(prefix_share(a, b) for a, b in pairs) / len(pairs)
    nonempty = sum(bool(b) for _, b in pairs) / len(pairs)
    if dtype == "bfloat16":
        return nonempty >= need, f"non-empty {nonempty:.0%} (need >= {need:.0%}); vs cpu fp32: identical " \
                                 f"{identical:.0%}, common prefix {share:.0%}"
    value = identical if exact else share
    what = "identical samples" if exact else "common prefix"
    return value >= need, f"{what} vs cpu fp32 {value:.0%} (need >= {need:.0%}); identical {identical:.0%}"


def check_reward(folder: Path, device: str) -> tuple[bool, str]:
    import numpy as np
    from scipy.stats import spearmanr

    from pvar.backends.hf_reward import HFReward

    prompts = PROMPTS * 2
    responses = [[f"Answer {i}: {t}", f"I am not sure about {t.lower()}"] for i, t in enumerate(TEXTS * 2)][:16]
    scores = {}
    for dtype in ("float32", "bfloat16"):
        rm = HFReward(str(folder), device=device, dtype=dtype, batch_size=8)
        scores[dtype] = np.array(rm.score(prompts, responses, [None] * 16).rewards, dtype=float).ravel()
    a, b = scores["float32"], scores["bfloat16"]
    rho = float(spearmanr(a, b).statistic)
    worst = float(np.max(np.abs(a - b)) / max(np.ptp(a), 1e-12))
    return rho >= 0.98 and worst <= 0.05, f"Spearman {rho:.3f} (need >= 0.98), max |bf16 - fp32| = " \
                                          f"{worst:.1%} of the range (need <= 5 %)"


def check_ray(device: str, tiny: Path, tmp: Path) -> tuple[bool, str]:
    import ray

    from pvar.engines import run_stage
    from pvar.pipeline.generate import GenerateConfig, GenerateStage

    gpu = device.startswith("cuda")
    ray.init(num_cpus=4, num_gpus=1 if gpu else 0, include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote
        def seen() -> tuple[int, str]:
            import torch

            return torch.cuda.device_count(), os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")

        with_gpu = ray.get(seen.options(num_gpus=1).remote()) if gpu else (0, "n/a")
        without = ray.get(seen.options(num_gpus=0).remote())
        src = tmp / "ray-prompts.jsonl"
        src.write_text("".join(json.dumps({"prompt_id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
        cfg = GenerateConfig.make(model=str(tiny), n=2, max_new_tokens=8, device=device)
        run_stage(GenerateStage(cfg), src, tmp / "local.parquet", shard_size=4)
        run_stage(GenerateStage(cfg), src, tmp / "ray.parquet", shard_size=4, engine="ray", num_workers=1)
        import pyarrow.parquet as pq

        same = pq.read_table(tmp / "ray.parquet").to_pylist() == pq.read_table(tmp / "local.parquet").to_pylist()
    finally:
        ray.shutdown()
    ok = same and without[0] == 0 and (not gpu or with_gpu[0] == 1)
    return ok, f"num_gpus=1 actor sees {with_gpu[0]} GPU (CUDA_VISIBLE_DEVICES={with_gpu[1]}), num_gpus=0 " \
               f"actor sees {without[0]} (CUDA_VISIBLE_DEVICES={without[1]!r}); Ray generate == local: {same}"


def check_training(model: str, device: str, tmp: Path) -> tuple[bool, str]:
    from pvar.pipeline.train import TrainConfig
    from pvar.training import launch

    pairs = tmp / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt_id": f"p{i}", "prompt": p, "chosen": f"A clear answer: {p}",
                                         "rejected": "No."}) + "\n" for i, p in enumerate(PROMPTS)))
    gpu = device.startswith("cuda")
    cfg = TrainConfig.make(model=model, max_steps=4, batch_size=2, lr=1e-4, max_length=128, bf16=gpu)
    job = tmp / "job.json"
    launch.write_job(job, pairs, tmp / "trained", cfg, tmp / "ref")
    env = {**os.environ, **({} if gpu else {"ACCELERATE_USE_CPU": "1"})}
    extra = ("--num_machines", "1", "--mixed_precision", "bf16" if gpu else "no", "--dynamo_backend", "no")
    cmd = launch.launch_command(job, config=None, num_processes=1, extra=extra)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return False, f"accelerate launch exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"
    res = json.loads(launch.result_path(job).read_text())
    manifest = json.loads((tmp / "trained" / "train_config.json").read_text())
    loss = res["final_loss"]
    ok = res["steps"] == 4 and loss is not None and loss == loss and any((tmp / "ref").rglob("*.parquet"))
    return ok, f"{res['steps']} steps on {manifest['device']}, loss {res['first_loss']:.4f} -> {loss:.4f}, " \
               f"{res['train_seconds']:.1f} s, reference cache written"


def reward_folder(base: str, tmp: Path) -> Path:
    """A sequence classifier on SmolLM2's body with a seeded one-label head (no hub needed)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    folder = tmp / "reward"
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(base).save_pretrained(str(folder))
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny models only (no SmolLM2)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch

    from pvar.testing import tiny_causal_lm, tiny_reward_model

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("FAIL  cuda: torch sees no CUDA device")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="pvar-gpu-check-"))
    tiny = tiny_causal_lm(tmp / "tiny", TEXTS)
    checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
        (f"hf policy tiny fp32 {device} vs cpu", lambda: check_policy(str(tiny), device, "float32", n=4, tokens=16,
                                                                      need=0.9, exact=True)),
    ]
    if not args.quick:
        from pvar.backends.assets import resolve_policy

        smol = resolve_policy("smollm2")
        checks += [
            (f"hf policy smollm2 fp32 {device} vs cpu", lambda: check_policy(smol, device, "float32", n=2, tokens=32,
                                                                             need=0.8, exact=False)),
            (f"hf policy smollm2 bf16 {device}", lambda: check_policy(smol, device, "bfloat16", n=2, tokens=32,
                                                                      need=0.9, exact=False)),
            (f"hf reward bf16 vs fp32 {device}", lambda: check_reward(reward_folder(smol, tmp), device)),
        ]
    else:
        checks.append((f"hf reward bf16 vs fp32 {device}",
                       lambda: check_reward(tiny_reward_model(tmp / "tiny-rm", TEXTS), device)))
    checks += [
        (f"ray actors and generate on ray ({device})", lambda: check_ray(device, tiny, tmp)),
        (f"dpo 4 steps under accelerate launch ({device})",
         lambda: check_training(str(tiny) if args.quick else "smollm2", device, tmp)),
    ]
    failed = 0
    for name, run in checks:
        start = time.perf_counter()
        try:
            ok, detail = run()
        except Exception as exc:  # a check that crashes is a failed check, and the others still run
            ok, detail = False, f"{type(exc).__name__}: {exc}".splitlines()[0]
            if os.environ.get("PVAR_DEBUG"):
                traceback.print_exc()
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'}  {name}: {detail}  [{time.perf_counter() - start:.0f} s]", flush=True)
    print(f"{len(checks) - failed}/{len(checks)} checks passed on {device} "
          f"({torch.cuda.get_device_name(0) if device.startswith('cuda') else 'cpu'}, torch {torch.__version__})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
