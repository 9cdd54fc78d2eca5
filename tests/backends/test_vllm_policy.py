"""vLLM without vLLM: a recording stand-in (tests/fakes/vllm) checks every call pvar makes.

The stand-in follows vLLM's own API (vllm/entrypoints/llm.py, vllm/inputs/data.py,
vllm/sampling_params.py, vllm/pooling_params.py); these tests pin what is handed to it: token-id
prompts equal to the transformers path's ids, one SamplingParams per prompt with its seed, the
engine arguments (dtype, tensor_parallel_size, gpu_memory_utilization), and raw-logit scoring.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pvar.backends.base import Generation, generation_prompt_ids
from pvar.backends.vllm_policy import VLLMPolicy, engine_kwargs, sampling_requests
from pvar.errors import ConfigError

FAKES = Path(__file__).resolve().parents[1] / "fakes"
TEMPLATE_WITH_BOS = (  # Llama-3 style: the template itself writes the BOS token
    "{{ bos_token }}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(FAKES))
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
    import vllm

    vllm.CALLS.clear()
    vllm.TOKENIZERS.clear()
    yield vllm
    vllm.TOKENIZERS.clear()


@pytest.fixture
def bos_model(tmp_path: Path) -> Path:
    """A model folder whose tokenizer adds BOS for plain text and whose chat template writes BOS too."""
    pytest.importorskip("transformers")
    from pvar.testing import tiny_tokenizer

    folder = tmp_path / "bos-model"
    tok = tiny_tokenizer(["why is the sky blue", "be brief hi hello plain text"], folder)
    tok.add_special_tokens({"bos_token": "<s>"})
    tok.chat_template = TEMPLATE_WITH_BOS
    tok._tokenizer.post_processor = __import__("tokenizers").processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.convert_tokens_to_ids("<s>"))])
    tok.save_pretrained(str(folder))
    (folder / "config.json").write_text('{"max_position_embeddings": 64}')
    return folder


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


def test_token_ids_equal_the_transformers_path_and_hold_one_bos(fake_vllm, bos_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(bos_model))
    bos = tok.bos_token_id
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    policy = VLLMPolicy(str(bos_model), max_new_tokens=8)
    policy.generate(["why is the sky blue", chat], 2, [11, 22])
    (_, call), = [c for c in fake_vllm.CALLS if c[0] == "generate"]
    handed = [p["prompt_token_ids"] for p in call["prompts"]]
    assert handed == [generation_prompt_ids(tok, "why is the sky blue"), generation_prompt_ids(tok, chat)]
    assert all(ids.count(bos) == 1 and ids[0] == bos for ids in handed)  # the template's BOS, not a second one
    # What vLLM would have made of the templated *text* (vllm#27486): two BOS tokens.
    text = tok.apply_chat_template([{"role": "user", "content": "why is the sky blue"}], add_generation_prompt=True,
                                   tokenize=False)
    assert tok(text)["input_ids"][:2] == [bos, bos]
    assert call["use_tqdm"] is False
    assert [(p.n, p.seed, p.max_tokens) for p in call["params"]] == [(2, 11, 8), (2, 22, 8)]


def test_hf_policy_hands_its_model_the_same_ids(bos_model: Path) -> None:
    """The transformers path runs on `generation_prompt_ids` too (what the vLLM test compares with)."""
    from pvar.backends.hf_policy import HFPolicy

    pytest.importorskip("torch")
    policy = HFPolicy(str(bos_model), max_new_tokens=8)
    from transformers import AutoTokenizer

    policy.tokenizer = AutoTokenizer.from_pretrained(str(bos_model))
    policy.model = type("M", (), {"config": type("C", (), {"max_position_embeddings": 64})()})()
    assert policy.prompt_ids("why is the sky blue") == generation_prompt_ids(policy.tokenizer, "why is the sky blue")


def test_long_prompts_keep_their_end_within_the_context(fake_vllm, bos_model: Path) -> None:
    policy = VLLMPolicy(str(bos_model), max_new_tokens=8, max_model_len=16)
    policy.generate(["why is the sky blue " * 10], 1, [0])
    (_, call), = [c for c in fake_vllm.CALLS if c[0] == "generate"]
    ids = call["prompts"][0]["prompt_token_ids"]
    assert len(ids) == 16 - 8
    full = generation_prompt_ids(policy.tokenizer, "why is the sky blue " * 10)
    assert ids == full[-8:]


def test_engine_arguments_pass_through(fake_vllm, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    VLLMPolicy(str(tmp_path), dtype="bfloat16", tensor_parallel_size=2, gpu_memory_utilization=0.5,
               max_model_len=2048).setup()
    (_, args), = [c for c in fake_vllm.CALLS if c[0] == "LLM"]
    assert args["model"] == str(tmp_path) and args["dtype"] == "bfloat16"
    assert args["tensor_parallel_size"] == 2 and args["gpu_memory_utilization"] == 0.5
    assert args["max_model_len"] == 2048
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        engine_kwargs("m", tensor_parallel_size=0)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        engine_kwargs("m", gpu_memory_utilization=1.5)


def test_generate_config_dtype_reaches_vllm_unchanged(fake_vllm, tmp_path: Path) -> None:
    """`auto` stays `auto` for vLLM (its own rule: the checkpoint's dtype, bf16 for fp32 ones), never fp32."""
    from pvar.pipeline.generate import GenerateConfig, hf_dtype, make_policy

    (tmp_path / "config.json").write_text("{}")
    for dtype in ("auto", "bfloat16"):
        policy = make_policy(GenerateConfig.make(model=str(tmp_path), backend="vllm", dtype=dtype,
                                                 tensor_parallel_size=4, gpu_memory_utilization=0.8))
        policy.setup()
        assert fake_vllm.CALLS[-1][1]["dtype"] == dtype
        assert fake_vllm.CALLS[-1][1]["tensor_parallel_size"] == 4
    assert hf_dtype("auto", "cpu") == "float32" and hf_dtype("auto", "cuda") == "auto"
    assert hf_dtype("bfloat16", "cpu") == "bfloat16"


def test_generate_maps_outputs_in_index_order(fake_vllm, bos_model: Path) -> None:
    policy = VLLMPolicy(str(bos_model), max_new_tokens=32, temperature=0.7, top_p=0.9)
    gen = policy.generate(["hello", "hi"], 3, [11, 22])
    (_, call), = [c for c in fake_vllm.CALLS if c[0] == "generate"]
    for prompt, sp, texts, stops in zip(call["prompts"], call["params"], gen.responses, gen.stopped, strict=True):
        keys = [sum(prompt["prompt_token_ids"]) + sp.seed + j for j in range(3)]
        assert texts == [f"answer {k % 97}" for k in keys]  # index order, stripped
        assert stops == [k % 3 != 0 for k in keys]
    assert gen.new_tokens == sum(2 + (sum(p["prompt_token_ids"]) + sp.seed + j) % 5
                                 for p, sp in zip(call["prompts"], call["params"], strict=True) for j in range(3))
    assert policy.generate([], 2, []) == Generation([], [], 0)


def test_later_samples_get_their_own_request_seed(fake_vllm, bos_model: Path) -> None:
    """vLLM seeds a request: samples start.. come from the seed of sample index ``start``."""
    from pvar.backends.hf_policy import sample_seed

    VLLMPolicy(str(bos_model)).generate(["hello"], 2, [11], start=4)
    (_, call), = [c for c in fake_vllm.CALLS if c[0] == "generate"]
    assert call["params"][0].seed == sample_seed(11, 4) and call["params"][0].n == 2


def test_missing_vllm_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    policy = VLLMPolicy("m")  # construction stays cheap and import-free
    with pytest.raises(ConfigError, match=r"pip install 'pvar\[gpu\]'"):
        policy.setup()


def test_vllm_eval_generates_greedy_token_prompts(fake_vllm, bos_model: Path, tmp_path: Path) -> None:
    from pvar.pipeline.eval_answers import generate_answers, generation_key
    from pvar.pipeline.evaluate import EvalConfig

    cfg = EvalConfig.make(policy=str(bos_model), prompts="p.jsonl", backend="vllm", max_new_tokens=16,
                          dtype="bfloat16", tensor_parallel_size=2)
    texts, stopped = generate_answers(cfg, str(bos_model), ["a", "b"], ["why is the sky blue", "hello"])
    (_, llm), = [c for c in fake_vllm.CALLS if c[0] == "LLM"]
    (_, call), = [c for c in fake_vllm.CALLS if c[0] == "generate"]
    assert llm["dtype"] == "bfloat16" and llm["tensor_parallel_size"] == 2
    assert all(p.temperature == 0.0 and p.n == 1 and p.max_tokens == 16 for p in call["params"])
    assert call["prompts"][0]["prompt_token_ids"] == generation_prompt_ids(
        __import__("transformers").AutoTokenizer.from_pretrained(str(bos_model)), "why is the sky blue")
    assert len(texts) == len(stopped) == 2
    hf = EvalConfig.make(policy=str(bos_model), prompts="p.jsonl", dtype="bfloat16")
    assert generation_key(cfg, "m", "d") != generation_key(hf, "m", "d")  # cached apart
    assert "backend" not in hf.model_dump()  # hf keys unchanged, so existing caches still hit


def test_vllm_reward_scores_raw_logits(fake_vllm, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from pvar.backends.spec import parse_reward_spec
    from pvar.backends.vllm_reward import VLLMReward
    from pvar.testing import tiny_reward_model

    folder = tiny_reward_model(tmp_path / "rm", ["why is the sky blue", "it is blue because of air"])
    scorer = parse_reward_spec(f"vllm:{folder}", max_length=64, dtype="auto", tensor_parallel_size=2,
                               batch_size=8, device="cuda", max_batch_tokens=100)
    assert isinstance(scorer, VLLMReward)
    scores = scorer.score(["why is the sky blue"], [["it is blue", "because of air"]], [None])
    (_, llm), = [c for c in fake_vllm.CALLS if c[0] == "LLM"]
    (_, call), = [c for c in fake_vllm.CALLS if c[0] == "classify"]
    assert llm["runner"] == "pooling" and llm["dtype"] == "bfloat16" and llm["tensor_parallel_size"] == 2
    assert llm["max_model_len"] == 64
    assert call["params"].use_activation is False  # raw logit: PVar applies Bradley-Terry itself
    fmt = scorer._format
    texts = [fmt.format("why is the sky blue", r) for r in ("it is blue", "because of air")]
    assert [p["prompt_token_ids"] for p in call["prompts"]] == fmt.token_ids(texts)[0]
    assert scores.rewards == [[len(p["prompt_token_ids"]) / 10 for p in call["prompts"]]]


def test_vllm_reward_refuses_a_vllm_that_cannot_return_raw_logits(fake_vllm, monkeypatch) -> None:
    from pvar.backends.vllm_reward import raw_logit_params

    class OldParams:
        def __init__(self, softmax: bool = True) -> None:
            self.softmax = softmax

    monkeypatch.setattr(fake_vllm, "PoolingParams", OldParams)
    with pytest.raises(ConfigError, match="sigmoid"):
        raw_logit_params(fake_vllm)
