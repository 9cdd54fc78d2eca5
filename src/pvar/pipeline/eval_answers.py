"""Eval answers: each side's greedy generations, made once and cached under a key.

The key holds the model's identity, the decoding settings and the prompts, so a judge, seed or
bootstrap change reruns in seconds while a new checkpoint or prompt set regenerates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from pvar import status
from pvar.backends.adapters import merged_model
from pvar.backends.base import Prompt
from pvar.fingerprint import json_digest, model_record
from pvar.io.writers import atomic_write_text

GENERATION_FORMAT = "pvar-eval-generations-v1"


class EvalConfig(Protocol):
    """What answering needs of ``pvar.pipeline.evaluate.EvalConfig``: the two sides and the decoding."""

    policy: str
    baseline: str
    backend: str
    max_new_tokens: int
    batch_size: int
    device: str
    dtype: str
    tensor_parallel_size: int
    gpu_memory_utilization: float
    seed: int


def generation_key(cfg: EvalConfig, model: str, prompts_digest: str) -> str:
    """Cache key of one side's generations: model identity, decoding settings and the prompts."""
    key = {"format": GENERATION_FORMAT, "model": model_record(model), "decoding": "greedy",
           "max_new_tokens": cfg.max_new_tokens, "dtype": cfg.dtype, "prompts": prompts_digest}
    if cfg.backend != "hf":  # hf keys stay as they were, so existing caches still hit
        key["backend"] = cfg.backend
    return json_digest(key)


def generate_answers(cfg: EvalConfig, model: str, ids: list[str], prompts: list[Prompt],
                     label: str = "policy") -> tuple[list[str], list[bool]]:
    """Greedy answers of ``model`` (one per prompt) and whether each stopped at EOS."""
    import gc

    from pvar.core.seeding import prompt_seed
    from pvar.pipeline.generate import GenerateConfig, make_policy

    policy = make_policy(GenerateConfig.make(
        model=model, backend=cfg.backend, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
        device=cfg.device, dtype=cfg.dtype, tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization), greedy=True)
    policy.setup()
    with status.progress(f"eval answers of {label}", total=len(ids), unit="answers") as tick:
        done = [0]

        def advance(rows: int) -> None:
            done[0] += rows
            tick(rows)

        policy.progress = advance  # hf reports each batch; vllm answers in one call, counted when it returns
        gen = policy.generate(prompts, 1, [prompt_seed(cfg.seed, pid) for pid in ids])
        tick(len(ids) - done[0])
    if gen.truncated:
        status.log(f"eval answers of {label}: {gen.truncated} of {len(ids)} prompts were cut from the left to fit "
                      f"the context with {cfg.max_new_tokens} new tokens")
    del policy  # free one model before the next side loads
    gc.collect()
    return [r[0] for r in gen.responses], [s[0] for s in gen.stopped]


def _read_cache(path: Path, key_path: Path, key: str, ids: list[str]) -> list[dict] | None:
    if not (path.is_file() and key_path.is_file()):
        return None
    try:
        if json.loads(key_path.read_text()).get("key") != key:
            return None
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    return rows if [r.get("prompt_id") for r in rows] == ids else None


def side_outputs(cfg: EvalConfig, side: str, out: Path, ids: list[str], prompts: list[Prompt], digest: str,
                 known: dict[str, list[dict]] | None = None) -> tuple[list[dict], bool]:
    """One side's generations: from ``outputs_{side}.jsonl`` if its key matches, else generated.

    ``known`` maps keys generated earlier in this run to their rows, so a policy compared with
    itself is generated once. The key file is removed before the outputs are replaced and written
    after, so an interrupted write can never pair new outputs with an old key. Returns (rows,
    whether they came without generating).
    """
    name = getattr(cfg, side)
    path, key_path = out / f"outputs_{side}.jsonl", out / f"outputs_{side}.key.json"
    key = generation_key(cfg, name, digest)
    rows = _read_cache(path, key_path, key, ids)
    if rows is not None:
        return rows, True
    known = {} if known is None else known
    fresh = key not in known
    if fresh:
        texts, stopped = generate_answers(cfg, merged_model(name, out / f"merged-{side}"), ids, prompts, label=side)
        known[key] = [{"prompt_id": i, "prompt": p, "output": t, "stopped_at_eos": s}
                      for i, p, t, s in zip(ids, prompts, texts, stopped, strict=True)]
    key_path.unlink(missing_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in known[key]))
    atomic_write_text(key_path, json.dumps({"key": key, "model": name, "max_new_tokens": cfg.max_new_tokens}) + "\n")
    return known[key], not fresh
