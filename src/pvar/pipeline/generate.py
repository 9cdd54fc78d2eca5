"""generate: sample n responses per prompt with a policy model (transformers, vLLM, or fake).

Sampling is seeded per prompt from (run seed, prompt_id), so sharding, batch order and
resuming do not change what a prompt gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from pvar.backends.base import Policy
from pvar.config import Device, Dtype, Seed, StageConfig
from pvar.core.seeding import prompt_seed


class GenerateConfig(StageConfig):
    model: str = Field("smollm2", description="Policy: a hub name, a local folder, or 'smollm2' (offline built-in).")
    backend: Literal["hf", "vllm", "fake"] = Field("hf", description="hf (transformers), vllm (GPU), fake (tests).")
    n: int = Field(4, ge=2, le=1024, description="Responses per prompt (PVar needs at least 2).")
    max_new_tokens: int = Field(128, ge=1, le=131_072, description="Cap on generated tokens per response.")
    temperature: float = Field(0.8, gt=0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    seed: Seed = Field(0, description="Run seed; each prompt's samples derive from it and the prompt_id.")
    start: int = Field(0, ge=0, le=1_000_000, description="Index of the first sample: adaptive sampling asks for "
                       "samples start.. of prompts it has sampled before; earlier samples never change.")
    batch_size: int = Field(128, ge=1, le=65_536, description="Sequences per model call (hf): a speed knob.")
    shared_prefix: bool = Field(True, description="hf: hold and read each prompt's keys/values once for its "
                                "samples (the same samples; off: per-row copies of the prompt): a speed knob.")
    device: Device = Field("cpu", description="torch device for the hf backend.")
    dtype: Dtype = Field(
        "auto", description="Weights dtype. auto: float32 for hf on CPU (reproducible), the checkpoint's own "
        "dtype for hf on GPUs, and vLLM's rule for vllm (the checkpoint's dtype; float32 ones run in bfloat16). "
        "Samples in another dtype differ from float32 ones.")
    tensor_parallel_size: int = Field(1, ge=1, le=1024, description="vllm: GPUs one engine shards the model over.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1,
                                          description="vllm: share of each GPU's memory the engine may take.")

    omit_at_default = ("start", "shared_prefix", "tensor_parallel_size", "gpu_memory_utilization")

    def fingerprint(self) -> str:
        """The settings' hash; for hf, also the sampling noise's version: samples drawn with other noise
        are other samples, so a folder sampled before it is refused rather than mixed."""
        from pvar.backends.noise import VERSION
        from pvar.fingerprint import digest

        base = super().fingerprint()
        return digest(base, VERSION) if self.backend == "hf" else base


def make_policy(cfg: GenerateConfig, *, greedy: bool = False) -> Policy:
    """The policy ``cfg`` names (hf, vllm or fake); ``greedy=True`` decodes without noise (eval answers)."""
    if cfg.backend == "fake":
        from pvar.backends.fake import FakePolicy

        return FakePolicy()
    opts = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                batch_size=cfg.batch_size, greedy=greedy)
    if cfg.backend == "vllm":
        from pvar.backends.vllm_policy import VLLMPolicy

        return VLLMPolicy(cfg.model, dtype=cfg.dtype, tensor_parallel_size=cfg.tensor_parallel_size,
                          gpu_memory_utilization=cfg.gpu_memory_utilization, **opts)
    from pvar.backends.hf_policy import HFPolicy

    return HFPolicy(cfg.model, device=cfg.device, dtype=hf_dtype(cfg.dtype, cfg.device),
                    shared_prefix=cfg.shared_prefix, **opts)


def hf_dtype(dtype: str, device: str) -> str:
    """``auto`` for the hf backend: float32 on CPU (samples reproducible across machines), else the
    checkpoint's own dtype (transformers' ``dtype="auto"``: bf16 for today's chat models)."""
    if dtype != "auto":
        return dtype
    return "float32" if str(device).startswith("cpu") else "auto"


class GenerateStage:
    """Adds ``responses`` (n per prompt) and ``stopped_at_eos`` to prompt rows."""

    name = "generate"

    def __init__(self, config: GenerateConfig) -> None:
        self.config = config
        # rows per call: a few model batches, so length bucketing has prompts to group
        self.chunk_rows = max(1, 4 * config.batch_size // config.n)
        self.policy = make_policy(config)
        self._tokens = 0
        self._truncated = 0

    def setup(self) -> None:
        self.policy.setup()

    def counters(self) -> dict[str, int]:
        return {"tokens": self._tokens, "truncated_prompts": self._truncated}

    def __call__(self, table: pa.Table) -> pa.Table:
        prompts = table.column("prompt").to_pylist()
        seeds = [prompt_seed(self.config.seed, pid) for pid in table.column("prompt_id").to_pylist()]
        gen = (self.policy.generate(prompts, self.config.n, seeds, start=self.config.start) if self.config.start
               else self.policy.generate(prompts, self.config.n, seeds))
        self._tokens += gen.new_tokens
        self._truncated += gen.truncated
        for name in ("responses", "stopped_at_eos", "rewards"):  # stale downstream columns go too
            if name in table.column_names:
                table = table.drop_columns([name])
        table = table.append_column("responses", pa.array(gen.responses, type=pa.list_(pa.string())))
        return table.append_column("stopped_at_eos", pa.array(gen.stopped, type=pa.list_(pa.bool_())))


REQUIRE = ("prompt_id", "prompt")  # the input columns the stage reads


def run(source: str | Path, output: str | Path, cfg: GenerateConfig, **engine: Any) -> Any:
    """The verb's uniform entry (source, output, cfg): sharded and resumable on an engine (``engine``:
    the keywords of :func:`pvar.engines.run_shown`: engine, shard_size, force, ray_address, show_progress, ...)."""
    from pvar.engines import run_shown

    return run_shown(GenerateStage(cfg), source, output, require=REQUIRE, **engine)
