"""Continuous batching (backends/decode.py): the same samples as ``model.generate``, with slots reused."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pvar.backends.decode import decode, supports_slots  # noqa: E402
from pvar.backends.hf_policy import GumbelSampler, HFPolicy  # noqa: E402
from pvar.testing import tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TEXTS = [
    "the cat sat on the mat and looked at the dog",
    "a quick brown fox jumps over the lazy dog today",
    "why is the sky blue in the morning and red at night",
    "tell me a story about a robot who learns to paint",
]
PROMPTS = ["why is the sky blue", "tell me a story about a robot", "the cat",
           "a quick brown fox jumps over the lazy dog today and the cat sat on the mat", "how do plants"]
SEEDS = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), TEXTS))


def make(folder: str, *, continuous: bool, **kwargs) -> HFPolicy:
    kwargs.setdefault("max_new_tokens", 12)
    p = HFPolicy(folder, **kwargs)
    p.setup()
    p.continuous = continuous
    return p


@pytest.mark.parametrize("kwargs", [{}, {"greedy": True}, {"temperature": 1.5, "top_p": 1.0},
                                    {"max_new_tokens": 40, "temperature": 1.2}])
@pytest.mark.parametrize("slots", [1, 2, 4, 32])
def test_continuous_batching_equals_model_generate(tiny_model: str, kwargs: dict, slots: int) -> None:
    reference = make(tiny_model, continuous=False, batch_size=32, **kwargs).generate(PROMPTS, 3, SEEDS)
    assert make(tiny_model, continuous=True, batch_size=slots, **kwargs).generate(PROMPTS, 3, SEEDS) == reference
    assert 0 < sum(map(sum, reference.stopped)) < 15 or kwargs.get("greedy")  # some rows end early, some do not


def test_finished_rows_free_their_slot(tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows enter as others finish (several prefills), never more than `slots` rows per step, and
    the whole run takes fewer steps than batches of 2 decoded to their longest row would."""
    import pvar.backends.decode as dec

    p = make(tiny_model, continuous=True, batch_size=2, max_new_tokens=30, temperature=1.3)
    widths: list[int] = []
    seen: dict = {}
    original = dec.decode

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.update(out.stats)
        seen["counts"] = out.counts
        return out

    hook = p.model.register_forward_pre_hook(lambda m, a, k: widths.append(k["input_ids"].shape), with_kwargs=True)
    monkeypatch.setattr(dec, "decode", spy)
    try:
        p.generate(PROMPTS, 2, SEEDS)
    finally:
        hook.remove()
    steps = [w[0] for w in widths if w[1] == 1]
    assert max(steps) <= 2 and len(steps) == seen["steps"]
    assert seen["prefills"] > 3  # refills as rows finish, not one prefill per batch of 2
    batched = sum(max(seen["counts"][r:r + 2]) for r in range(0, 10, 2))  # lower bound for fixed batches
    assert seen["steps"] < batched
    assert seen["column_drops"] > 0  # the attention span was trimmed along the way


def test_accounting_of_the_decode_loop(tiny_model: str) -> None:
    """Tokens count up to and including EOS; text stops before it; rows hitting the cap are not stopped."""
    p = make(tiny_model, continuous=True, batch_size=3, max_new_tokens=4)
    eos, word = p.tokenizer.eos_token_id, p.tokenizer.convert_tokens_to_ids("cat")
    script = {0: [word, eos], 1: [word] * 4, 2: [eos]}  # per row: what the sampler emits
    position: dict[int, int] = {}

    def choose(logits, seeds, steps):
        out = []
        for g, step in zip(seeds.tolist(), steps.tolist(), strict=True):
            k = position.get(g, 0)
            assert step == k  # a row's step is the count of tokens it has generated
            position[g] = k + 1
            out.append(script[g][k])
        return torch.tensor(out)

    ids = [p.prompt_ids(x) for x in ("the cat", "why is the sky blue", "the cat")]
    out = decode(p.model, ids, [(0, 0), (1, 1), (2, 2)], slots=2, max_new_tokens=4, eos={eos},
                 pad=p.tokenizer.pad_token_id, choose=choose, cache_kwarg=p._cache_kwarg)
    assert out.ids == [[word], [word] * 4, []]
    assert out.stopped == [True, False, True]
    assert out.counts == [2, 4, 1]


def test_choose_equals_argmax_of_the_perturbed_scores() -> None:
    """The top-k shortcut draws exactly what the full-vocabulary reference draws, flat rows included,
    at any top-k (a row whose nucleus the top-k does not hold falls back to its whole nucleus)."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.cat([torch.randn(6, 5000, generator=gen) * 4, torch.randn(3, 5000, generator=gen) * 0.05])
    seeds = torch.arange(9) * 7919 + 2**62
    for top_p in (0.5, 0.95, 1.0):
        sampler = GumbelSampler(seeds.tolist(), temperature=0.8, top_p=top_p)
        for step in range(3):
            want = sampler.perturb(logits, seeds, step).argmax(-1)
            assert torch.equal(sampler.choose(logits, seeds, step), want)
            assert torch.equal(sampler.choose(logits, seeds, torch.full((9,), step)), want)
            try:
                GumbelSampler.TOPK = 2  # almost every row takes the fallback
                assert torch.equal(sampler.choose(logits, seeds, step), want)
            finally:
                GumbelSampler.TOPK = 64


def test_sliding_window_models_keep_model_generate(tiny_model: str) -> None:
    from transformers import MistralConfig, MistralForCausalLM

    assert supports_slots(make(tiny_model, continuous=True).model)
    cfg = MistralConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, sliding_window=8)
    assert not supports_slots(MistralForCausalLM(cfg))
