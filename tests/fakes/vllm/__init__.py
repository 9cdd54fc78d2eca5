"""A stand-in for vLLM that records every call (the real one is a CUDA build; see tests/backends/test_vllm.py).

It mirrors the surface pvar uses, as vLLM's own source defines it: ``LLM(**engine_args)``,
``LLM.generate(prompts, sampling_params, use_tqdm=)`` returning one ``RequestOutput`` per prompt with
``outputs[k].text / .token_ids / .finish_reason / .index``, ``LLM.classify(prompts, pooling_params=,
use_tqdm=)`` returning ``.outputs.probs``, ``LLM.get_tokenizer()``, ``SamplingParams`` and
``PoolingParams(use_activation=)``. Generated "text" is deterministic in the prompt ids and seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import inputs  # noqa: F401  (vllm.inputs.TokensPrompt)

CALLS: list[tuple[str, Any]] = []
TOKENIZERS: dict[str, Any] = {}  # model path -> tokenizer the fake engine hands out


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    seed: int | None = None


@dataclass
class PoolingParams:
    use_activation: bool | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


@dataclass
class _Probs:
    probs: list[float]


@dataclass
class ClassificationRequestOutput:
    outputs: _Probs


class LLM:
    def __init__(self, model: str, *, runner: str = "auto", convert: str = "auto", dtype: str = "auto",
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9, seed: int = 0,
                 max_model_len: int | None = None, **kwargs: Any) -> None:
        self.args = dict(model=model, runner=runner, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                         gpu_memory_utilization=gpu_memory_utilization, seed=seed, max_model_len=max_model_len,
                         **kwargs)
        CALLS.append(("LLM", self.args))

    def get_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        if self.args["model"] in TOKENIZERS:
            return TOKENIZERS[self.args["model"]]
        try:
            return AutoTokenizer.from_pretrained(self.args["model"])
        except (OSError, ValueError):  # a folder without a tokenizer: tests of the engine arguments only
            return None

    def generate(self, prompts: list[Any], sampling_params: Any = None, *, use_tqdm: bool = True,
                 **kwargs: Any) -> list[RequestOutput]:
        CALLS.append(("generate", {"prompts": prompts, "params": sampling_params, "use_tqdm": use_tqdm}))
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        outs = []
        for prompt, sp in zip(prompts, params, strict=True):
            ids = prompt["prompt_token_ids"]
            samples = []
            for j in range(sp.n):
                key = sum(ids) + (0 if sp.temperature == 0 else (sp.seed or 0) + j)
                stop = key % 3 != 0
                samples.append(CompletionOutput(j, f" answer {key % 97} ", [1] * (2 + key % 5),
                                                "stop" if stop else "length"))
            outs.append(RequestOutput(list(ids), samples[::-1]))  # not in index order, as vLLM may return them
        return outs

    def classify(self, prompts: list[Any], *, pooling_params: Any = None, use_tqdm: bool = True,
                 **kwargs: Any) -> list[ClassificationRequestOutput]:
        CALLS.append(("classify", {"prompts": prompts, "params": pooling_params, "use_tqdm": use_tqdm}))
        return [ClassificationRequestOutput(_Probs([float(len(p["prompt_token_ids"])) / 10]))
                for p in prompts]
