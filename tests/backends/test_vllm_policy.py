"""VLLMPolicy without vLLM: the per-prompt sampling requests, and the call/output mapping via a fake module."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from pvar.backends.base import Generation
from pvar.backends.vllm_policy import VLLMPolicy, sampling_requests
from pvar.errors import ConfigError


def test_sampling_requests_one_per_prompt() -> None:
    reqs = sampling_requests(["a", [{"role": "user", "content": "b"}]], 4, [7, 2**62 + 1], max_new_tokens=64,
                             temperature=0.8, top_p=0.95, greedy=False)
    assert reqs == [
        {"n": 4, "seed": 7, "temperature": 0.8, "top_p": 0.95, "max_tokens": 64},
        {"n": 4, "seed": 2**62 + 1, "temperature": 0.8, "top_p": 0.95, "max_tokens": 64},
    ]
    assert all(type(r["seed"]) is int for r in reqs)


def test_sampling_requests_greedy_and_errors() -> None:
    numpy = pytest.importorskip("numpy")
    (req,) = sampling_requests(["a"], 1, [numpy.int64(5)], max_new_tokens=8, temperature=0.8, top_p=0.9, greedy=True)
    assert req["temperature"] == 0.0 and req["top_p"] == 1.0 and req["seed"] == 5 and type(req["seed"]) is int
    (zero,) = sampling_requests(["a"], 2, [1], max_new_tokens=8, temperature=0, top_p=0.9, greedy=False)
    assert zero["temperature"] == 0.0
    with pytest.raises(ValueError, match="seeds"):
        sampling_requests(["a", "b"], 2, [1], max_new_tokens=8, temperature=1, top_p=1, greedy=False)
    with pytest.raises(ValueError, match="n must"):
        sampling_requests(["a"], 0, [1], max_new_tokens=8, temperature=1, top_p=1, greedy=False)


@dataclass
class FakeCompletion:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class FakeRequestOutput:
    prompt: str
    outputs: list[FakeCompletion]


class FakeTokenizer:
    chat_template = "chatml"

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool, tokenize: bool) -> str:
        assert add_generation_prompt and not tokenize
        body = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        return body + "<assistant>"


@dataclass
class FakeVLLM:
    """Records what VLLMPolicy asks of vLLM; answers sample j of a prompt with text 'PROMPT#j'."""

    init_kwargs: dict[str, Any] = field(default_factory=dict)
    generate_calls: list[tuple[list[str], list[Any], dict[str, Any]]] = field(default_factory=list)

    def module(self) -> types.ModuleType:
        fake = self
        mod = types.ModuleType("vllm")

        class SamplingParams:
            def __init__(self, **kwargs: Any) -> None:
                self.kwargs = kwargs

        class LLM:
            def __init__(self, **kwargs: Any) -> None:
                fake.init_kwargs = kwargs

            def get_tokenizer(self) -> FakeTokenizer:
                return FakeTokenizer()

            def generate(self, prompts: list[str], params: list[SamplingParams], **kwargs: Any) -> list:
                fake.generate_calls.append((prompts, params, kwargs))
                outs = []
                for p, sp in zip(prompts, params, strict=True):
                    n = sp.kwargs["n"]
                    samples = [FakeCompletion(j, f" {p}#{j} ", list(range(j + 1)), "stop" if j % 2 else "length")
                               for j in range(n)]
                    outs.append(FakeRequestOutput(p, samples[::-1]))  # out of index order on purpose
                return outs

        mod.SamplingParams = SamplingParams
        mod.LLM = LLM
        return mod


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> FakeVLLM:
    fake = FakeVLLM()
    monkeypatch.setitem(sys.modules, "vllm", fake.module())
    return fake


def test_setup_builds_the_engine(fake_vllm: FakeVLLM, tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")  # a model folder
    VLLMPolicy(str(tmp_path), tensor_parallel_size=2, gpu_memory_utilization=0.5, max_model_len=2048).setup()
    assert fake_vllm.init_kwargs == {"model": str(tmp_path), "dtype": "auto", "tensor_parallel_size": 2,
                                     "gpu_memory_utilization": 0.5, "max_model_len": 2048}
    VLLMPolicy("some/folder").setup()
    assert "max_model_len" not in fake_vllm.init_kwargs


def test_generate_maps_outputs_in_order(fake_vllm: FakeVLLM) -> None:
    policy = VLLMPolicy("m", max_new_tokens=32, temperature=0.7, top_p=0.9)
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    gen = policy.generate(["hello", chat], 3, [11, 22])

    (prompts, params, kwargs), = fake_vllm.generate_calls
    assert prompts == ["<user>hello</user><assistant>", "<system>be brief</system><user>hi</user><assistant>"]
    assert [p.kwargs for p in params] == [
        {"n": 3, "seed": 11, "temperature": 0.7, "top_p": 0.9, "max_tokens": 32},
        {"n": 3, "seed": 22, "temperature": 0.7, "top_p": 0.9, "max_tokens": 32},
    ]
    assert kwargs == {"use_tqdm": False}
    assert gen.responses == [[f"{prompts[0]}#{j}" for j in range(3)], [f"{prompts[1]}#{j}" for j in range(3)]]
    assert gen.stopped == [[False, True, False], [False, True, False]]
    assert gen.new_tokens == 2 * (1 + 2 + 3)


def test_generate_without_chat_template(fake_vllm: FakeVLLM) -> None:
    policy = VLLMPolicy("m", greedy=True)
    policy.setup()
    policy.tokenizer.chat_template = None
    gen = policy.generate(["plain text"], 1, [0])
    (prompts, params, _), = fake_vllm.generate_calls
    assert prompts == ["plain text"] and params[0].kwargs["temperature"] == 0.0
    assert gen.responses == [["plain text#0"]]
    assert policy.generate([], 2, []) == Generation([], [], 0)


def test_missing_vllm_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    policy = VLLMPolicy("m")  # construction stays cheap and import-free
    with pytest.raises(ConfigError, match=r"pip install 'pvar\[gpu\]'"):
        policy.setup()


def test_later_samples_get_their_own_request_seed(fake_vllm: FakeVLLM) -> None:
    """vLLM seeds a request: samples start.. come from the seed of sample index ``start``."""
    from pvar.backends.hf_policy import sample_seed

    VLLMPolicy("m").generate(["hello"], 2, [11], start=4)
    (_, params, _), = fake_vllm.generate_calls
    assert params[0].kwargs["seed"] == sample_seed(11, 4) and params[0].kwargs["n"] == 2
