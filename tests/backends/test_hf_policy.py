"""HFPolicy: per-sample seeding that batching cannot change, an exact Gumbel-max sampler, accounting."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pvar.backends.base import Generation  # noqa: E402
from pvar.backends.hf_policy import GumbelSampler, HFPolicy, sample_seed  # noqa: E402
from pvar.testing import tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # see tests/conftest.py

TEXTS = [
    "the cat sat on the mat and looked at the dog",
    "a quick brown fox jumps over the lazy dog today",
    "why is the sky blue in the morning and red at night",
    "tell me a story about a robot who learns to paint",
    "how do plants turn light into sugar and air",
]
A, B, C = "why is the sky blue", "tell me a story about a robot", "how do plants turn light into sugar"
SEEDS = {A: 11, B: 22, C: 2**62 + 5}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), TEXTS))


def policy(folder: str, **kwargs) -> HFPolicy:
    kwargs.setdefault("max_new_tokens", 12)
    p = HFPolicy(folder, **kwargs)
    p.setup()
    return p


def by_prompt(prompts: list[str], gen: Generation) -> dict[str, tuple[list[str], list[bool]]]:
    return {p: (r, s) for p, r, s in zip(prompts, gen.responses, gen.stopped, strict=True)}


def test_import_does_not_load_torch() -> None:
    code = ("import sys, pvar.backends.hf_policy, pvar.backends.vllm_policy;"
            "print([m for m in ('torch', 'transformers', 'vllm') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sample_seed_is_stable_and_in_range() -> None:
    assert sample_seed(3, 1) == 3 * 1_000_003 + 1
    big = sample_seed(np.int64(2**63 - 1), 7)
    assert 0 <= big < 2**63 and big == sample_seed(2**63 - 1, 7)
    assert len({sample_seed(s, j) for s in range(50) for j in range(8)}) == 400


def test_samples_do_not_depend_on_batching_or_order(tiny_model: str) -> None:
    one = policy(tiny_model, batch_size=2).generate([A, B, C], 3, [SEEDS[A], SEEDS[B], SEEDS[C]])
    two = policy(tiny_model, batch_size=8).generate([C, A], 3, [SEEDS[C], SEEDS[A]])
    first, second = by_prompt([A, B, C], one), by_prompt([C, A], two)
    assert first[A] == second[A] and first[C] == second[C]
    assert all(len(r) == 3 for r in one.responses) and any(t for r in one.responses for t in r)


@pytest.mark.parametrize("batch_size", [2, 16])
def test_later_samples_extend_earlier_ones(tiny_model: str, batch_size: int) -> None:
    """Samples start.. of a prompt are those a single call for more samples returns (adaptive sampling)."""
    seeds = [SEEDS[A], SEEDS[B]]
    full = policy(tiny_model, batch_size=batch_size).generate([A, B], 5, seeds)
    head = policy(tiny_model, batch_size=batch_size).generate([A, B], 2, seeds)
    tail = policy(tiny_model, batch_size=batch_size).generate([A, B], 3, seeds, start=2)
    assert [h + t for h, t in zip(head.responses, tail.responses, strict=True)] == full.responses
    assert [h + t for h, t in zip(head.stopped, tail.stopped, strict=True)] == full.stopped


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_shared_prompt_cache_changes_nothing(tiny_model: str, batch_size: int) -> None:
    shared = policy(tiny_model, batch_size=batch_size)
    plain = policy(tiny_model, batch_size=batch_size)
    plain.share_prompt = False
    args = ([A, B, "the cat"], 3, [4, 5, 6])
    assert shared.generate(*args) == plain.generate(*args)


@pytest.mark.parametrize(("batch_size", "share"), [(1, True), (3, True), (16, False), (16, True)])
def test_preallocated_cache_changes_nothing(tiny_model: str, batch_size: int, share: bool) -> None:
    """Key/value buffers written in place give the samples DynamicCache's concatenation gives; a
    capacity too small for the generation grows the buffers."""
    from pvar.backends import kv_cache

    def run(preallocate: bool, capacity_cut: int = 0):
        p = policy(tiny_model, batch_size=batch_size, max_new_tokens=20, temperature=1.3)
        p.share_prompt, p.preallocate = share, preallocate
        if capacity_cut:
            original = kv_cache.preallocated_cache
            kv_cache.preallocated_cache = lambda model, capacity: original(model, capacity_cut)
            try:
                return p.generate([A, B, "the cat"], 3, [4, 5, 6])
            finally:
                kv_cache.preallocated_cache = original
        return p.generate([A, B, "the cat"], 3, [4, 5, 6])

    plain = run(False)
    assert run(True) == plain
    assert run(True, capacity_cut=2) == plain
    assert any(len(t.split()) > 5 for row in plain.responses for t in row)  # long enough to need the growth


def test_each_prompt_is_prefilled_once(tiny_model: str) -> None:
    p = policy(tiny_model, batch_size=8, max_new_tokens=3)
    seen: list[tuple[tuple[int, ...], int]] = []

    def record(module, args, kwargs):
        cache = kwargs.get(p._cache_kwarg)
        seen.append((tuple(kwargs["input_ids"].shape), 0 if cache is None else cache.get_seq_length()))

    handle = p.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        p.generate([A, "the cat"], 3, [1, 2])
    finally:
        handle.remove()
    width = len(p.prompt_ids(A))
    prefills = [shape for shape, cached in seen if cached == 0]
    # the two distinct prompts, once each, all but the last token; prompts of unlike length in chunks of
    # their own, so the short one pays no padding
    assert sorted(prefills) == sorted([(1, len(p.prompt_ids(A)) - 1), (1, len(p.prompt_ids("the cat")) - 1)])
    decoding = seen[len(prefills):]
    assert decoding[0] == ((6, 1), width - 1)  # then one token per sample row on the copied cache
    assert all(shape == (6, 1) for shape, _ in decoding)


def test_length_chunks_bound_the_padding() -> None:
    from pvar.backends.kv_cache import length_chunks

    assert length_chunks([10, 40, 11, 12, 41, 100]) == [[0, 2, 3], [1, 4], [5]]
    assert length_chunks([5] * 5, most=2) == [[0, 1], [2, 3], [4]]
    assert length_chunks([]) == []


def test_chat_prompt_equals_text_prompt(tiny_model: str) -> None:
    p = policy(tiny_model, batch_size=4)
    chat = [{"role": "user", "content": A}]
    assert p.generate([A], 2, [5]).responses == p.generate([chat], 2, [5]).responses


def test_repeatable_and_seed_sensitive(tiny_model: str) -> None:
    p = policy(tiny_model, batch_size=4)
    g1, g2 = p.generate([A, B], 4, [1, 2]), p.generate([A, B], 4, [1, 2])
    assert g1 == g2
    g3 = p.generate([A, B], 4, [3, 4])
    assert g3.responses != g1.responses
    assert len(set(g1.responses[0])) > 1  # the samples of one prompt differ from each other


def test_tiny_temperature_is_greedy(tiny_model: str) -> None:
    greedy = policy(tiny_model, greedy=True).generate([A, B, C], 2, [1, 2, 3])
    cold = policy(tiny_model, temperature=1e-6).generate([A, B, C], 2, [7, 8, 9])
    assert cold.responses == greedy.responses
    assert all(r[0] == r[1] for r in greedy.responses)  # no noise: every sample is the same
    assert policy(tiny_model, temperature=0).greedy


def test_accounting_matches_the_generated_ids(tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = policy(tiny_model, max_new_tokens=4, batch_size=8)
    eos, word = p.tokenizer.eos_token_id, p.tokenizer.convert_tokens_to_ids("cat")
    assert eos not in (None, word)
    calls = []

    def fake_generate(input_ids, attention_mask, generation_config, logits_processor, **kwargs):
        calls.append((input_ids.clone(), attention_mask.clone()))
        tails = [[word, eos, eos, eos], [word, word, word, word], [eos, eos, eos, eos]]
        tail = torch.tensor([tails[r % 3] for r in range(len(input_ids))])
        return torch.cat([input_ids, tail], dim=1)

    monkeypatch.setattr(p.model, "generate", fake_generate)
    p.continuous = False  # the model.generate path (models with sliding-window or hybrid caches)
    gen = p.generate([A, "the cat"], 3, [1, 2])  # rows sort by prompt length: "the cat" first
    assert gen.stopped == [[True, False, True], [True, False, True]]
    assert gen.responses == [["cat", "cat cat cat cat", ""], ["cat", "cat cat cat cat", ""]]
    assert gen.new_tokens == 2 * (2 + 4 + 1)
    ids, mask = calls[0]
    lengths = mask.sum(1).tolist()
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    assert (ids[0, : ids.shape[1] - lengths[0]] == p.tokenizer.pad_token_id).all()  # left padding
    assert mask[0, 0] == 0 and mask[0, -1] == 1


def test_tokens_and_stops_are_consistent(tiny_model: str) -> None:
    p = policy(tiny_model, max_new_tokens=6, batch_size=3, temperature=1.5)
    gen = p.generate([A, B, C], 4, [1, 2, 3])
    flat = [s for row in gen.stopped for s in row]
    assert 0 < gen.new_tokens <= 6 * 12
    assert gen.new_tokens >= 6 * flat.count(False) + flat.count(True)


def test_prompt_without_chat_template_uses_raw_text(tiny_model: str) -> None:
    p = policy(tiny_model)
    p.tokenizer.chat_template = None
    assert p.prompt_ids(A) == p.tokenizer(A)["input_ids"]
    assert p.prompt_ids([{"role": "user", "content": A}]) == p.tokenizer(A)["input_ids"]
    assert len(p.generate([A], 2, [0]).responses[0]) == 2


def test_no_default_hf_processor_interferes(tiny_model: str) -> None:
    p = policy(tiny_model)
    assert len(p.model._get_logits_processor(p._gen_config, 5, device="cpu")) == 0


def test_argument_errors(tiny_model: str) -> None:
    with pytest.raises(ValueError, match="seeds"):
        policy(tiny_model).generate([A, B], 2, [1])
    with pytest.raises(ValueError, match="top_p"):
        HFPolicy(tiny_model, top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        GumbelSampler([1], temperature=0)


def gumbel_draws(logits: torch.Tensor, seeds: list[int], steps: int, **kw) -> torch.Tensor:
    """Tokens chosen by argmax of the processed scores, for `steps` successive calls: (steps, rows)."""
    sampler = GumbelSampler(seeds, **kw)
    scores = logits.expand(len(seeds), -1)
    return torch.stack([sampler(None, scores.clone()).argmax(-1) for _ in range(steps)])


def nucleus_probs(logits: torch.Tensor, temperature: float, top_p: float) -> np.ndarray:
    """The target: softmax(logits / T) restricted to the top-p nucleus, renormalised (numpy, float64)."""
    p = np.exp((logits.double() / temperature).numpy() - (logits.double() / temperature).numpy().max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    above = np.cumsum(p[order]) - p[order]
    keep = np.zeros_like(p, dtype=bool)
    keep[order[above < top_p]] = True
    q = np.where(keep, p, 0.0)
    return q / q.sum()


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9), (1.3, 0.6)])
def test_gumbel_sampler_matches_target_distribution(temperature: float, top_p: float) -> None:
    from scipy.stats import chisquare

    logits = torch.tensor([2.0, 1.5, 1.0, 0.7, 0.2, -0.3, -1.0, -2.5, -4.0, 0.0])
    target = nucleus_probs(logits, temperature, top_p)
    draws = gumbel_draws(logits, list(range(4000)), steps=3, temperature=temperature, top_p=top_p)
    for step in draws:  # every step is its own exact sample, not only the first
        counts = np.bincount(step.numpy(), minlength=len(logits))
        assert counts[target == 0].sum() == 0, "a token outside the nucleus was sampled"
        inside = target > 0
        expected = target[inside] * counts.sum()
        assert chisquare(counts[inside], expected).pvalue > 1e-4
    assert (draws[0] != draws[1]).float().mean() > 0.2  # the steps are not copies of each other


def test_nucleus_matches_transformers_top_p() -> None:
    from transformers import TopPLogitsWarper

    gen = torch.Generator().manual_seed(0)
    peaked = torch.randn(6, 5000, generator=gen) * 4
    flat = torch.randn(6, 5000, generator=gen) * 0.1  # top-64 holds < top_p: exercises the fallbacks
    for top_p in (0.5, 0.9, 0.99):
        sampler = GumbelSampler(list(range(12)), top_p=top_p)
        logits = torch.cat([peaked, flat])
        ours = sampler.nucleus(logits)
        theirs = TopPLogitsWarper(top_p)(None, logits.clone()) > -float("inf")
        assert (ours != theirs).sum() <= 2  # ties in float rounding at the boundary at most
        assert ours[6:].sum(-1).min() > 64


def test_sampler_rows_are_independent() -> None:
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(1))
    alone = gumbel_draws(logits, [42], steps=5, top_p=0.9)[:, 0]
    crowded = gumbel_draws(logits, [7, 42, 9, 13], steps=5, top_p=0.9)[:, 1]
    assert torch.equal(alone, crowded)


@pytest.mark.slow
def test_smollm2_generates_text() -> None:
    p = HFPolicy("smollm2", max_new_tokens=16, batch_size=4)
    p.setup()
    gen = p.generate(["What is the capital of France?", [{"role": "user", "content": "Say hello."}]], 2, [1, 2])
    assert all(text.strip() for row in gen.responses for text in row)
    assert 0 < gen.new_tokens <= 4 * 16


def test_policy_protocol_shape(tiny_model: str) -> None:
    p = HFPolicy(tiny_model, max_new_tokens=3)
    assert p.model is None  # construction is cheap: nothing loads before setup/generate
    gen = p.generate([], 2, [])
    assert gen == Generation([], [], 0)


def test_prompts_cut_to_fit_the_context_are_counted(tiny_model: str) -> None:
    """A prompt longer than the context minus max_new_tokens keeps its end, and the cut is counted (the
    generate stage reports it as truncated_prompts)."""
    p = policy(tiny_model, max_new_tokens=8)
    limit = p.model.config.max_position_embeddings
    long = " ".join(["the cat sat on the mat"] * (limit // 5))
    gen = p.generate([long, A], 2, [1, 2])
    assert gen.truncated == 1 and len(p.prompt_ids(long)) == limit - 8
    assert policy(tiny_model, max_new_tokens=8).generate([A, B], 2, [1, 2]).truncated == 0
