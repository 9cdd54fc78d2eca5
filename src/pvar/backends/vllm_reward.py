"""A sequence-classification reward model served by vLLM's pooling runner (extra ``pvar[gpu]``).

Checked against vLLM's source (vllm/entrypoints/llm.py, vllm/pooling_params.py, the pooling docs):

- a sequence (outcome) reward model such as Skywork-Reward-Llama-3.1-8B is a *classify* model:
  ``LLM(model, runner="pooling")`` then ``LLM.classify`` (or ``encode(..., pooling_task="classify")``).
  ``LLM.reward`` is token classification (one value per token) and is not what such a model means.
  vLLM before the runner/convert split (about 0.10.0) spelled it ``LLM(model, task="classify")``.
- for a one-label head, classify applies a sigmoid unless ``PoolingParams(use_activation=False)``
  (``activation=False`` in vLLM ~0.10). PVar needs the raw logit (it applies Bradley-Terry itself),
  so the activation is always turned off; a vLLM that cannot turn it off is refused, never used.
- ``dtype="auto"`` would run a float32 checkpoint of a pooling model in float16, so ``auto``
  becomes bfloat16 here, like the hf backend on GPUs.

Texts are formatted by `HFReward.format` (the reward model's own chat template) and handed over
as token ids, so no BOS is added twice.
"""

from __future__ import annotations

import inspect
from typing import Any

from pvar.backends.base import Prompt, Scores


def pooling_engine_kwargs(vllm: Any, model: str, *, dtype: str, tensor_parallel_size: int,
                          gpu_memory_utilization: float, max_length: int) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments for a classify (sequence reward) model, for this vLLM's spelling."""
    params = inspect.signature(vllm.LLM.__init__).parameters
    kwargs: dict[str, Any] = {"model": model, "dtype": "bfloat16" if dtype in ("auto", None) else dtype,
                              "tensor_parallel_size": int(tensor_parallel_size),
                              "gpu_memory_utilization": float(gpu_memory_utilization),
                              "max_model_len": int(max_length)}
    if "runner" in params:
        kwargs["runner"] = "pooling"
    else:
        kwargs["task"] = "classify"
    return kwargs


def raw_logit_params(vllm: Any) -> Any:
    """``PoolingParams`` that return the head's raw output (no sigmoid), for this vLLM's spelling."""
    cls = vllm.PoolingParams
    fields = set(getattr(cls, "__dataclass_fields__", {})) | set(getattr(cls, "__struct_fields__", ()))
    fields |= set(inspect.signature(cls).parameters)
    for name in ("use_activation", "activation"):
        if name in fields:
            return cls(**{name: False})
    from pvar.errors import ConfigError

    raise ConfigError("reward vllm: this vLLM's PoolingParams cannot turn the classifier's sigmoid off "
                      "(no use_activation / activation); use hf:NAME instead")


class VLLMReward:
    """``vllm:NAME_OR_PATH``: the raw logit of a one-label sequence classifier, scored by vLLM."""

    needs_reference = False

    def __init__(self, model: str, *, max_length: int = 1024, dtype: str | None = None,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9, **_: Any) -> None:
        from pvar.backends.hf_reward import HFReward

        self.model_name = model
        self.max_length = max_length
        self.dtype = dtype
        self.tensor_parallel_size = tensor_parallel_size
        self.gpu_memory_utilization = gpu_memory_utilization
        self._format = HFReward(model, max_length=max_length)  # tokenizer + the model's own template
        self.llm: Any = None
        self._vllm: Any = None
        self._params: Any = None

    def setup(self) -> None:
        if self.llm is not None:
            return
        from pvar.backends.assets import check_model_ref
        from pvar.backends.vllm_policy import import_vllm, token_prompt

        vllm = import_vllm("reward vllm:")

        check_model_ref(self.model_name, "reward")
        self._format.load_tokenizer()
        self._vllm, self._token_prompt = vllm, token_prompt
        self._params = raw_logit_params(vllm)
        self.llm = vllm.LLM(**pooling_engine_kwargs(
            vllm, self.model_name, dtype=self.dtype, tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization, max_length=self.max_length))

    def score(self, prompts: list[Prompt], responses: list[list[str]], references: list[str | None]) -> Scores:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} response lists")
        self.setup()
        fmt = self._format
        texts = [fmt.format(p, r) for p, resps in zip(prompts, responses, strict=True) for r in resps]
        ids, truncated = fmt.token_ids(texts)
        outputs = self.llm.classify([self._token_prompt(self._vllm, x) for x in ids], pooling_params=self._params,
                                    use_tqdm=False)
        if len(outputs) != len(texts):
            raise RuntimeError(f"vLLM returned {len(outputs)} scores for {len(texts)} texts")
        flat = [float(_first(o)) for o in outputs]
        rewards, start = [], 0
        for resps in responses:
            rewards.append(flat[start:start + len(resps)])
            start += len(resps)
        return Scores(rewards, truncated=truncated, info={"model": self.model_name, "max_length": self.max_length,
                                                          "backend": "vllm"})


def _first(output: Any) -> float:
    """The one label's value of a ``ClassificationRequestOutput`` (``.outputs.probs``, raw when the
    activation is off) or of an older ``PoolingRequestOutput`` (``.outputs.data``)."""
    out = output.outputs
    value = getattr(out, "probs", None)
    if value is None:
        value = out.data
    value = value.tolist() if hasattr(value, "tolist") else value
    while isinstance(value, list):
        if len(value) != 1:
            raise RuntimeError(f"reward vllm: expected one label per text, got {len(value)}")
        value = value[0]
    return float(value)
