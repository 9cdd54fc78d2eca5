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
- greedy eval (pvar.pipeline.evaluate, the trained LoRA adapter merged, against its base): the
  answers on the device vs greedy fp32 answers on the CPU, with the sampling check's tolerance;
- gradient signal (pvar.pipeline.diagnostics.gradient_signal on a small measured pool, a rule
  reward): every dot product finite and within the Cauchy-Schwarz bound, some gradient non-zero;
- held-out gold pairs (gold_pairs, then pair_preferences of the trained adapter): pairs written, and
  the DPO loss and mean margin (fp32) on the device within 1e-3 of the CPU's;
- ``pvar run`` end to end on the tiny model with ``device:`` set (gold reward and judge, two trained
  arms, the A/A eval, the theory, signal and held-out steps): exit 0 and a report.

- sampling noise (backends/noise.py): the uniforms of 512 rows x 4,096 tokens at 3 steps are
  bit-identical on the device and on the CPU, and a sampler over a 49,152-token vocabulary at
  top_p 0.95 (top-k candidates, flat rows through the fallback) picks the same tokens on both.

The tiny-model sampling check sets ``GumbelSampler.TOPK`` to 4 (the tiny vocabulary is smaller than
the default top-k), so rows whose nucleus the top-k does not hold take the fallback path on the device.
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
TINY_TOPK = 4  # GumbelSampler.TOPK for the tiny model: below its vocabulary, so the top-k fallback runs
REWARD = '''
def score(prompts, responses, references):
    """A rule reward with spread: more distinct words and longer answers score higher."""
    return [[len(set(r.split())) + 0.1 * len(r) for r in rs] for rs in responses]
'''


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


def check_noise(device: str) -> tuple[bool, str]:
    """Counter-based noise: bit-identical uniforms on the device and the CPU; the same draws from logits
    over a SmolLM2-sized vocabulary, peaked and flat rows alike (the top-k path and its fallback)."""
    import torch

    from pvar.backends import noise
    from pvar.backends.sampler import GumbelSampler, sample_seed

    seeds = torch.tensor([sample_seed(s, j) for s in range(128) for j in range(4)])
    tokens = torch.randint(0, 49152, (512, 4096), generator=torch.Generator().manual_seed(0))
    same = all(torch.equal(noise.uniforms(seeds, t, tokens), noise.uniforms(seeds.to(device), t, tokens.to(device))
                           .cpu()) for t in (0, 1, 777))
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 49152, generator=gen) * 2
    logits[:48, :20] += 9  # peaked rows: the top-64 holds the nucleus; the last 16 are flat
    sampler = GumbelSampler(seeds[:64].tolist(), temperature=0.8, top_p=0.95)
    picks = [sampler.choose(x, seeds[:64].to(x.device), 5).cpu() for x in (logits, logits.to(device))]
    agree = float((picks[0] == picks[1]).float().mean())
    return same and agree >= 0.98, f"uniforms bit-identical to the cpu's: {same}; sampled tokens equal on " \
                                   f"{agree:.0%} of 64 rows (need >= 98 %; a logit an ulp apart can flip a near-tie)"


def check_shared_prefix(model: str, device: str) -> tuple[bool, str]:
    """Shared-prompt attention on the device: the per-row cache's samples, and sdpa's outputs in fp32 and bf16."""
    import math

    import torch

    from pvar.backends import shared_prefix
    from pvar.backends.hf_policy import HFPolicy

    runs = []
    for shared in (False, True):
        policy = HFPolicy(model, max_new_tokens=16, device=device, batch_size=64, temperature=1.3)
        policy.setup()
        policy.shared_prefix = shared
        runs.append(policy.generate(PROMPTS, 4, list(range(len(PROMPTS)))).responses)
    gen = torch.Generator().manual_seed(0)
    worst = {}
    for dtype in (torch.float32, torch.bfloat16):
        q = torch.randn(64, 9, 1, 64, generator=gen)
        k, v = torch.randn(64, 3, 40, 64, generator=gen), torch.randn(64, 3, 40, 64, generator=gen)
        pk, pv = torch.randn(4, 3, 300, 64, generator=gen), torch.randn(4, 3, 300, 64, generator=gen)
        mask = (torch.arange(340)[None, :] >= torch.arange(64)[:, None] * 3)[:, None, None, :]
        full_k = torch.cat([pk.repeat_interleave(16, 0), k], 2).repeat_interleave(3, 1)
        full_v = torch.cat([pv.repeat_interleave(16, 0), v], 2).repeat_interleave(3, 1)
        want = torch.nn.functional.scaled_dot_product_attention(q, full_k, full_v, attn_mask=mask).transpose(1, 2)
        got = shared_prefix.decode_step(*(t.to(device, dtype) for t in (q, k, v, pk, pv)), mask.to(device),
                                        1 / math.sqrt(64))
        worst[dtype] = float((got.float().cpu() - want).abs().max())
    pairs = [(a, b) for ra, rb in zip(*runs, strict=True) for a, b in zip(ra, rb, strict=True)]
    same = sum(a == b for a, b in pairs) / len(pairs)  # an ulp apart at a near-tie can flip a token
    ok = same >= 0.9 and worst[torch.float32] < 1e-4 and worst[torch.bfloat16] < 5e-2
    return ok, f"samples identical to the per-row cache's: {same:.0%} (need >= 90 %); max |out - sdpa| fp32 " \
               f"{worst[torch.float32]:.1e} (need < 1e-4), bf16 {worst[torch.bfloat16]:.1e} (need < 5e-2)"


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


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def reward_spec(tmp: Path) -> str:
    """A callable (rule) reward: spread without a model, so the checks below see non-zero DPO weights."""
    path = tmp / "rule_reward.py"
    path.write_text(REWARD)
    return f"{path}:score"


def with_topk(k: int | None, run: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
    """``run()`` with ``GumbelSampler.TOPK = k`` (None: as it is), the class attribute restored after."""
    if k is None:
        return run()
    from pvar.backends.hf_policy import GumbelSampler

    had = hasattr(GumbelSampler, "TOPK")
    old = getattr(GumbelSampler, "TOPK", None)
    GumbelSampler.TOPK = k
    try:
        ok, detail = run()
    finally:
        if had:
            GumbelSampler.TOPK = old
        else:
            del GumbelSampler.TOPK
    note = f"GumbelSampler.TOPK = {k}" if had else f"GumbelSampler has no TOPK: the top-{k} fallback was not forced"
    return ok, f"{detail}; {note}"


def adapter_for(base: str, tmp: Path) -> tuple[Path, str]:
    """The training check's LoRA adapter, or (if it left none) one with seeded non-zero LoRA weights."""
    trained = tmp / "trained"
    if (trained / "adapter_config.json").is_file():
        return trained, "the training check's adapter"
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pvar.backends.assets import resolve_policy

    folder = tmp / "seeded-adapter"
    if not (folder / "adapter_config.json").is_file():
        path = resolve_policy(base)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                               LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
        torch.manual_seed(0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.add_(torch.randn_like(p) * 0.02)
        model.save_pretrained(str(folder))
        AutoTokenizer.from_pretrained(path).save_pretrained(str(folder))
    return folder, "a seeded adapter (the training check left none)"


def greedy_ids(model: str, device: str, tokens: int) -> list[list[int]]:
    """Greedy fp32 answers (token ids) of PROMPTS from HFPolicy."""
    from pvar.backends.hf_policy import HFPolicy

    policy = HFPolicy(model, max_new_tokens=tokens, device=device, dtype="float32", batch_size=64, greedy=True)
    policy.setup()
    gen = policy.generate(PROMPTS, 1, list(range(len(PROMPTS))))
    return [policy.tokenizer(row[0], add_special_tokens=False)["input_ids"] for row in gen.responses]


def check_eval(base: str, device: str, tmp: Path, *, tokens: int, need: float, exact: bool) -> tuple[bool, str]:
    from transformers import AutoTokenizer

    from pvar.backends.assets import resolve_policy
    from pvar.pipeline.evaluate import EvalConfig, evaluate

    adapter, which = adapter_for(base, tmp)
    prompts = write_rows(tmp / "eval-prompts.jsonl",
                         [{"prompt_id": f"e{i}", "prompt": p} for i, p in enumerate(PROMPTS)])
    out = tmp / "eval"
    cfg = EvalConfig.make(policy=str(adapter), baseline=base, prompts=str(prompts), judge="fake",
                          max_new_tokens=tokens, batch_size=8, n_boot=20, lc_boot=10, device=device, dtype="float32")
    res = evaluate(cfg, out)
    tok = AutoTokenizer.from_pretrained(resolve_policy(base))
    pairs = []
    for side, model in (("policy", str(out / "merged-policy")), ("baseline", base)):
        rows = [json.loads(x) for x in (out / f"outputs_{side}.jsonl").read_text().splitlines()]
        got = [tok(r["output"], add_special_tokens=False)["input_ids"] for r in rows]
        pairs += list(zip(greedy_ids(model, "cpu", tokens), got, strict=True))
    identical = sum(a == b for a, b in pairs) / len(pairs)
    share = sum(prefix_share(a, b) for a, b in pairs) / len(pairs)
    value, what = (identical, "identical answers") if exact else (share, "common prefix")
    return value >= need and res.n_prompts == len(PROMPTS), \
        f"{which} merged vs its base, {res.n_prompts} prompts each: {what} vs cpu fp32 greedy {value:.0%} " \
        f"(need >= {need:.0%}); identical {identical:.0%}"


def measured_pool(path: Path, n: int = 8, k: int = 4) -> Path:
    """A measured pool (prompt_id, prompt, rewards, pvar) with a spread of PVar, as the measure step writes it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pvar.core.stats import reward_stats

    rng = np.random.default_rng(0)
    rewards = rng.normal(0, 1, (n, k)) * np.linspace(0.1, 2.0, n)[:, None]
    pvar = reward_stats(rewards, scale=1.0).pvar
    pq.write_table(pa.table({"prompt_id": [f"p{i}" for i in range(n)], "prompt": PROMPTS[:n],
                             "rewards": rewards.tolist(), "pvar": [float(x) for x in pvar]}), path)
    return path


def check_signal(model: str, device: str, tmp: Path, *, tokens: int) -> tuple[bool, str]:
    import math

    from pvar.pipeline.diagnostics import SignalConfig, gradient_signal

    out = tmp / "signal"
    cfg = SignalConfig(policy=model, reward=reward_spec(tmp), scale=1.0, beta=0.1, prompts=4, samples=3,
                       params="last-layers", max_length=128, max_new_tokens=tokens, seed=0, dtype="float32",
                       device=device)
    res = gradient_signal(measured_pool(tmp / "measured.parquet"), out, cfg)
    rows = [json.loads(x) for x in (out / "signal.jsonl").read_text().splitlines()]
    finite = all(math.isfinite(r[k]) for r in rows for k in ("dot", "norm_a", "norm_b"))
    bounded = all(abs(r["dot"]) <= r["norm_a"] * r["norm_b"] * (1 + 1e-6) + 1e-12 for r in rows)
    moving = sum(r["norm_a"] > 0 or r["norm_b"] > 0 for r in rows)
    ok = res["n_prompts"] == len(rows) == 4 and finite and bounded and moving > 0
    return ok, f"{len(rows)} prompts x 2 sets of 3 samples, last-layers gradients: finite {finite}, " \
               f"|dot| <= norms {bounded}, non-zero on {moving}/{len(rows)}, mean dot {res['mean_dot']:.3g}"


def check_heldout(base: str, device: str, tmp: Path, *, tokens: int) -> tuple[bool, str]:
    import math

    from pvar.pipeline.diagnostics import GoldPairsConfig, gold_pairs, pair_preferences

    adapter, which = adapter_for(base, tmp)
    prompts = write_rows(tmp / "heldout-prompts.jsonl",
                         [{"prompt_id": f"h{i}", "prompt": p} for i, p in enumerate(PROMPTS)])
    pairs = tmp / "heldout-pairs.jsonl"
    n = gold_pairs(prompts, pairs, GoldPairsConfig(policy=base, reward=reward_spec(tmp), count=len(PROMPTS), samples=4,
                                                   max_new_tokens=tokens, temperature=0.8, top_p=0.95, seed=0,
                                                   dtype="float32", device=device))
    got = pair_preferences(adapter, pairs, beta=0.1, max_length=128, device=device)
    ref = got if device == "cpu" else pair_preferences(adapter, pairs, beta=0.1, max_length=128, device="cpu")
    loss_gap, margin_gap = abs(got["loss"] - ref["loss"]), abs(got["mean_margin"] - ref["mean_margin"])
    ok = n > 0 and got["n_pairs"] == n and math.isfinite(got["loss"]) and loss_gap <= 1e-3 and margin_gap <= 1e-3
    return ok, f"{n} gold pairs; {which}: loss {got['loss']:.4f}, accuracy {got['accuracy']:.0%}, mean margin " \
               f"{got['mean_margin']:.3g}; |{device} - cpu|: loss {loss_gap:.1e}, margin {margin_gap:.1e} " \
               f"(need <= 1e-3)"


def task_spec(i: int) -> str:
    """An IFEval-style spec the gold reward and judge read (as the testbed's prompts carry)."""
    constraints = [{"id": "keywords:existence", "keywords": [["the", "sky", "cat", "dog"][i % 4]]},
                   {"id": "length_constraints:number_words", "num_words": 5 + i % 3, "relation": "less than"}]
    return json.dumps({"task": "ifeval", "constraints": constraints[: 1 + i % 2]}, sort_keys=True)


def check_run(model: str, device: str, tmp: Path) -> tuple[bool, str]:
    """``python -m pvar run`` on a tiny testbed with ``device:`` set: every step of a GPU run, small."""
    import yaml

    root = tmp / "run-check"
    root.mkdir(exist_ok=True)
    texts = TEXTS * 2
    pool = write_rows(root / "pool.jsonl", [{"prompt_id": f"p{i}", "prompt": f"{texts[i]} (p{i})",
                                             "reference": task_spec(i)} for i in range(8)])
    held = write_rows(root / "eval.jsonl", [{"prompt_id": f"e{i}", "prompt": f"{texts[i + 3]} (e{i})",
                                             "reference": task_spec(i + 1)} for i in range(6)])
    cfg = {
        "name": "gpu-check-run", "policy": model, "device": device, "budget": 0.5,
        "prompts": {"source": str(pool), "eval_source": str(held)},
        "scoring": {"n": 4, "max_new_tokens": 8, "shard_size": 8, "reward": "gold", "scale": 4.0},
        "arms": [{"name": "top-pvar", "select": "top", "by": "pvar"},
                 {"name": "random", "select": "random", "seeds": [0]}],
        "primary": ["top-pvar", "random"],
        "train": {"max_steps": 2, "batch_size": 2, "lr": 5e-3, "lora_layers": 1, "max_length": 64},
        "eval": {"judge": "gold", "max_new_tokens": 8, "dtype": "float32", "n_boot": 20, "lc_boot": 10,
                 "aa_batch_size": 4},
        "theory": {"prompts": 2, "params": "last-layers", "max_length": 64, "signal_prompts": 2,
                   "signal_samples": 2, "heldout_pairs": 4, "heldout_samples": 4},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(cfg))
    out = root / "out"
    env = {**os.environ, **({} if device.startswith("cuda") else {"ACCELERATE_USE_CPU": "1"})}
    done = subprocess.run([sys.executable, "-m", "pvar", "run", str(root / "run.yaml"), "-o", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        if os.environ.get("PVAR_DEBUG"):
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
        tail = [x for x in done.stderr.strip().splitlines() if x.strip()][-1:]
        return False, f"pvar run exited {done.returncode}: {tail}"
    state = json.loads((out / "state.json").read_text())
    report = json.loads((out / "report" / "report.json").read_text())
    steps = state["steps"]
    trained = sum(a.get("steps", 0) > 0 for a in report["arms"])
    need = ("signal", "heldout-pairs", "theory")
    ok = all(steps.get(s, {}).get("done") for s in need) and trained > 0 and "heldout" in report
    slow = ", ".join(f"{k} {v.get('seconds', 0):.0f} s" for k, v in
                     sorted(steps.items(), key=lambda kv: -kv[1].get("seconds", 0))[:3])
    return ok, f"exit 0, {len(steps)} steps (slowest: {slow}), " \
               f"{trained}/{len(report['arms'])} arms trained, signal/theory/held-out done, report written"


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
    base = str(tiny) if args.quick else "smollm2"  # the model of the signal, training, eval and held-out checks
    tokens = 16 if args.quick else 32
    greedy_need, greedy_exact = (0.9, True) if args.quick else (0.8, False)
    checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
        (f"hf policy tiny fp32 {device} vs cpu",
         lambda: with_topk(TINY_TOPK, lambda: check_policy(str(tiny), device, "float32", n=4, tokens=16, need=0.9,
                                                             exact=True))),
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
        (f"sampling noise {device} vs cpu", lambda: check_noise(device)),
        (f"shared-prompt attention ({device})", lambda: check_shared_prefix(str(tiny), device)),
        (f"gradient signal ({device})", lambda: check_signal(base, device, tmp, tokens=tokens)),
        (f"ray actors and generate on ray ({device})", lambda: check_ray(device, tiny, tmp)),
        (f"dpo 4 steps under accelerate launch ({device})", lambda: check_training(base, device, tmp)),
        (f"greedy eval answers ({device})",
         lambda: check_eval(base, device, tmp, tokens=tokens, need=greedy_need, exact=greedy_exact)),
        (f"held-out gold pairs and preferences ({device})", lambda: check_heldout(base, device, tmp, tokens=tokens)),
        (f"pvar run end to end, tiny testbed ({device})", lambda: check_run(str(tiny), device, tmp)),
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
