"""Sampling with vLLM on GPUs (extra ``pvar[gpu]``), seeded per prompt.

Each prompt is its own request with its own ``seed``, so its samples do not depend on the other
prompts in the batch. vLLM fans a request with ``n > 1`` out into ``n`` child requests seeded
``seed + j`` (vllm/v1/engine/parallel_sampling.py), so sample j depends on (seeds[i], j) only. As
with any GPU engine, batch composition can still move logits by rounding, so samples are
reproducible for the same batch and near-reproducible across batches, not bit-identical.
"""

from __future__ import annotations

from typing import Any

from pvar.backends.base import Generation, Prompt, check_sampling, generation_prompt

INSTALL_HINT = "pip install 'pvar[gpu]'"


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
        try:
            import vllm
        except ImportError as exc:
            from pvar.errors import ConfigError

            raise ConfigError(f"backend vllm needs vLLM, which is not installed; run: {INSTALL_HINT}") from exc
        from pvar.backends.assets import resolve_policy

        kwargs: dict[str, Any] = {
            "model": resolve_policy(self.model_name),
            "dtype": self.dtype,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
        }
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        self._vllm = vllm
        self.llm = vllm.LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def prompt_string(self, prompt: Prompt) -> str:
        """The text vLLM receives: the chat template with a generation prompt, or the raw text."""
        return generation_prompt(self.tokenizer, prompt)[0]

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
        outputs = self.llm.generate([self.prompt_string(p) for p in prompts], params, use_tqdm=False)
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
        return Generation(responses, stopped, tokens)
