"""Turn a reward spec string (config file or CLI flag) into a scorer, without loading anything yet."""

from __future__ import annotations

import re
from typing import Any

from pvar.backends.base import Scorer
from pvar.backends.callable_reward import CallableReward, ColumnReward
from pvar.backends.embed_reward import EmbeddingReward
from pvar.backends.fake import FakeScorer
from pvar.backends.gold_reward import KINDS as GOLD_KINDS
from pvar.backends.gold_reward import GoldReward
from pvar.backends.hf_reward import HFReward
from pvar.errors import ConfigError

ACCEPTED = ("gold, gold-guarded, minilm-ref, mpnet-ref, hf:NAME_OR_PATH, vllm:NAME_OR_PATH, column:NAME, fake, "
            "module:function")
OPTIONS = ("batch_size", "device", "max_length", "dtype", "max_batch_tokens", "tensor_parallel_size",
           "gpu_memory_utilization")
_HF_OPTIONS = ("batch_size", "device", "max_length", "dtype", "max_batch_tokens")
_VLLM_OPTIONS = ("max_length", "dtype", "tensor_parallel_size", "gpu_memory_utilization")
_FUNCTION = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_MODULE = _FUNCTION


def parse_reward_spec(spec: str, **opts: Any) -> Scorer | ColumnReward:
    """Build the reward named by ``spec``; ``opts`` (batch_size, device, max_length) go where they apply.

    Options set to None are ignored, so a config's unset fields can be passed straight through.
    Malformed or unknown specs raise ConfigError listing the accepted forms.
    """
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"reward: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(OPTIONS)}")
    opts = {k: v for k, v in opts.items() if v is not None}
    text = spec.strip() if isinstance(spec, str) else ""
    key = text.lower()
    embed = {k: opts[k] for k in ("batch_size", "device") if k in opts}
    if key in ("minilm-ref", "mpnet-ref"):
        return EmbeddingReward(key.removesuffix("-ref"), **embed)
    if key == "fake":
        return FakeScorer()
    if key in GOLD_KINDS:
        return GoldReward(key)
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() == "hf":
        if not rest.strip():
            raise _bad(spec, "hf: needs a model name or path")
        return HFReward(rest.strip(), **{k: v for k, v in opts.items() if k in _HF_OPTIONS})
    if sep and prefix.lower() == "vllm":
        if not rest.strip():
            raise _bad(spec, "vllm: needs a model name or path")
        from pvar.backends.vllm_reward import VLLMReward

        return VLLMReward(rest.strip(), **{k: v for k, v in opts.items() if k in _VLLM_OPTIONS})
    if sep and prefix.lower() == "column":
        if not rest.strip():
            raise _bad(spec, "column: needs a column name")
        return ColumnReward(rest.strip())
    if text.count(":") == 1:
        module, func = (part.strip() for part in text.split(":"))
        is_path = module.endswith(".py") or "/" in module
        if module and (is_path or _MODULE.match(module)) and _FUNCTION.match(func):
            return CallableReward(f"{module}:{func}")
    raise _bad(spec)


def _bad(spec: object, why: str = "") -> ConfigError:
    reason = f" ({why})" if why else ""
    return ConfigError(f"reward: unknown spec {spec!r}{reason}; accepted forms: {ACCEPTED}")


def is_exact(spec: str) -> bool:
    """Whether ``spec`` is a task's exact gold scorer: a program that *is* the objective, so judging
    with it cannot reward agreement with a learned selection model (the guard is reported beside it)."""
    return isinstance(spec, str) and spec.strip().lower() in GOLD_KINDS
