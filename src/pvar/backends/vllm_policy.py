"""Sampling with vLLM on GPUs (extra ``pvar[gpu]``), seeded per prompt.

Prompts go to vLLM as token ids (``TokensPrompt``, vllm/inputs/data.py), built by the same
`generation_prompt_ids` as the transformers backend. Handing vLLM chat-templated *text* would let
it tokenize again with special tokens added, and a Llama-3 prompt would start with two
``<|begin_of_text|>`` (vllm-project/vllm#27486). ``LLM.generate`` takes one ``SamplingParams`` per
prompt and returns outputs in prompt order (vllm/entrypoints/llm.py).

Each prompt is its own request with its own ``seed``, so its samples do not depend on the other
prompts in the batch. vLLM fans a request with ``n > 1`` out into ``n`` child requests seeded
``seed + j`` (vllm/v1/engine/parallel_sampling.py), so sample j depends on (seeds[i], j) only. As
with any GPU engine, batch composition can still move logits by rounding, so samples are
reproducible for the same batch and near-reproducible across batches, not bit-identical.
"""

from __future__ import annotations

from typing import Any

from pvar.backends.base import Generation, Prompt, check_sampling, generation_prompt_ids, keep_end, prompt_token_ids

INSTALL_HINT = "pip install 'pvar[gpu]'"


def engine_kwargs(model: str, *, dtype: str = "auto", tensor_parallel_size: int = 1,
                  gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
                  seed: int = 0, **extra: Any) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` (pure, so testable without vLLM).

    ``dtype="auto"`` is vLLM's own rule: the checkpoint's dtype, except float32 checkpoints run in
    bfloat16 on GPUs that support it (vllm/config/model.py ``_resolve_auto_dtype``).
    """
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, not {tensor_parallel_size}")
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], not {gpu_memory_utilization}")
    kwargs: dict[str, Any] = {"model": model, "dtype": dtype, "tensor_parallel_size": int(tensor_parallel_size),
                              "gpu_memory_utilization": float(gpu_memory_utilization), "seed": int(seed)}
    if max_model_len is not None:
        kwargs["max_model_len"] = int(max_model_len)
    kwargs.update(extra)
    return kwargs


def import_vllm(what: str) -> Any:
    """The ``vllm`` module (with ``vllm.inputs``), or a one-line ConfigError saying how to install it."""
    try:
        import vllm
        import vllm.inputs
    except ImportError as exc:
        from pvar.errors import ConfigError

        raise ConfigError(f"{what} needs vLLM, which is not installed; run: {INSTALL_HINT}") from exc
    return vllm


def token_prompt(vllm: Any, ids: list[int]) -> Any:
    """``TokensPrompt(prompt_token_ids=ids)``; a plain dict where the class is not exported (it is a TypedDict)."""
    inputs = getattr(vllm, "inputs", None)
    cls = getattr(inputs, "TokensPrompt", None)
    return cls(prompt_token_ids=list(ids)) if cls is not None else {"prompt_token_ids": list(ids)}


def sampling_requests(prompts: list[Prompt], n: int, seeds: list[int], *, max_new_tokens: int,
                      temperature: float, top_p: float, greedy: bool) -> list[dict[str, Any]]:
    """Keyword arguments of ``vllm.SamplingParams`` for each prompt (pure, so testable without vLLM).

    Greedy requests get temperature 0 (vLLM's greedy) and top_p 1; their seed is kept, harmlessly.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    if n < 1:
        raise ValueError(f"n must be >= 1, not {n}")
    greedy = greedy or temperature == 0
    return [
        {
            "n": n,
            "seed": int(seed),
            "temperature": 0.0 if greedy else float(temperature),
            "top_p": 1.0 if greedy else float(top_p),
            "max_tokens": int(max_new_tokens),
        }
        for seed in seeds
    ]


class VLLMPolicy:
    """A vLLM engine as a `Policy`; ``model`` is a local folder or a built-in name ("smollm2").

    ``dtype="auto"`` takes the checkpoint's dtype; ``device`` and ``batch_size`` are accepted for a
    constructor shaped like `HFPolicy`'s, but vLLM picks its device and schedules its own batches.
    """

    def __init__(self, model: str, *, max_new_tokens: int = 128, temperature: float = 0.8, top_p: float = 0.95,
                 batch_size: int = 64, device: str = "cuda", dtype: str = "auto", greedy: bool = False,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None) -> None:
        check_sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, batch_size=batch_size)
        self.model_name = model
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.greedy = greedy
        self.tensor_parallel_size = tensor_parallel_size
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len
        self.llm: Any = None
        self.tokenizer: Any = None
        self._vllm: Any = None

    def setup(self) -> None:
        if self.llm is not None:
            return
        vllm = import_vllm("backend vllm")
        from pvar.backends.assets import resolve_policy

        kwargs = engine_kwargs(resolve_policy(self.model_name), dtype=self.dtype,
                               tensor_parallel_size=self.tensor_parallel_size,
                               gpu_memory_utilization=self.gpu_memory_utilization, max_model_len=self.max_model_len)
        self._vllm = vllm
        self.llm = vllm.LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def context_limit(self) -> int | None:
        """The engine's context length (``max_model_len``), where this vLLM exposes it."""
        if self.max_model_len is not None:
            return self.max_model_len
        for path in (("llm_engine", "model_config", "max_model_len"), ("model_config", "max_model_len")):
            obj: Any = self.llm
            for name in path:
                obj = getattr(obj, name, None)
            if isinstance(obj, int):
                return obj
        return None

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """The token ids vLLM receives: exactly those of the transformers backend."""
        return generation_prompt_ids(self.tokenizer, prompt, limit=self.context_limit(),
                                     max_new_tokens=self.max_new_tokens)

    def generate(self, prompts: list[Prompt], n: int, seeds: list[int], start: int = 0) -> Generation:
        """``n`` samples per prompt from one ``llm.generate`` call; outputs come back in request order.

        vLLM seeds a request, not each of its samples: a later batch (``start`` > 0) gets the seed of
        its first sample index, so earlier samples never change, but samples start.. differ from those
        of a single request for more samples (the hf backend seeds every sample and has no such caveat).
        """
        if start:
            from pvar.backends.hf_policy import sample_seed

            seeds = [sample_seed(s, start) for s in seeds]
        requests = sampling_requests(prompts, n, seeds, max_new_tokens=self.max_new_tokens,
                                     temperature=self.temperature, top_p=self.top_p, greedy=self.greedy)
        if self.llm is None:
            self.setup()
        if not prompts:
            return Generation([], [], 0)
        params = [self._vllm.SamplingParams(**kw) for kw in requests]
        full = [prompt_token_ids(self.tokenizer, p) for p in prompts]
        ids = [keep_end(x, limit=self.context_limit(), max_new_tokens=self.max_new_tokens) for x in full]
        requests_in = [token_prompt(self._vllm, x) for x in ids]
        outputs = self.llm.generate(requests_in, params, use_tqdm=False)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        responses, stopped, tokens = [], [], 0
        for out in outputs:
            samples = sorted(out.outputs, key=lambda o: getattr(o, "index", 0))  # stable: keeps vLLM's order
            if len(samples) != n:
                raise RuntimeError(f"vLLM returned {len(samples)} samples for a request of n={n}")
            responses.append([o.text.strip() for o in samples])
            stopped.append([o.finish_reason == "stop" for o in samples])
            tokens += sum(len(o.token_ids) for o in samples)
        return Generation(responses, stopped, tokens,
                          truncated=sum(len(a) != len(b) for a, b in zip(full, ids, strict=True)))
