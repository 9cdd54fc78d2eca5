"""Shared-prompt attention: the same attention as sdpa over per-row copies, and the same samples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pvar.backends import shared_prefix  # noqa: E402
from pvar.backends.hf_policy import HFPolicy  # noqa: E402
from pvar.testing import tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # see tests/conftest.py

TEXTS = ["why is the sky blue", "tell me a story about a robot", "how do plants turn light into sugar",
         "the cat sat on the mat", "a quick brown fox jumps over the lazy dog"]
PROMPTS = ["why is the sky blue", "tell me a story about a robot who paints", "the cat"]


def reference(query, key, value, prefix_keys, prefix_values, mask, scale):
    """sdpa over each row's own copy of its prompt, heads repeated (the per-row cache's attention)."""
    rows, heads = query.shape[:2]
    group, rep = rows // prefix_keys.shape[0], heads // key.shape[1]
    k = torch.cat([prefix_keys.repeat_interleave(group, 0), key], dim=2).repeat_interleave(rep, 1)
    v = torch.cat([prefix_values.repeat_interleave(group, 0), value], dim=2).repeat_interleave(rep, 1)
    out = torch.nn.functional.scaled_dot_product_attention(query, k, v, attn_mask=mask, scale=scale)
    return out.transpose(1, 2)


@settings(max_examples=40, deadline=None)
@given(prompts=st.integers(1, 4), group=st.integers(1, 5), kv=st.sampled_from([1, 2, 3]), rep=st.sampled_from([1, 3]),
       span=st.integers(1, 9), own=st.integers(1, 6), masked=st.booleans(), float_mask=st.booleans(),
       seed=st.integers(0, 2**16))
def test_decode_step_is_sdpa_over_per_row_copies(prompts, group, kv, rep, span, own, masked, float_mask, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    rows, dim = prompts * group, 8
    query = torch.randn(rows, kv * rep, 1, dim, generator=gen)
    key, value = torch.randn(rows, kv, own, dim, generator=gen), torch.randn(rows, kv, own, dim, generator=gen)
    pk, pv = torch.randn(prompts, kv, span, dim, generator=gen), torch.randn(prompts, kv, span, dim, generator=gen)
    mask = None
    if masked:  # left padding of each prompt (shared by its rows); a row's own columns always count
        pad = torch.randint(0, span, (prompts,), generator=gen).repeat_interleave(group)
        mask = (torch.arange(span + own)[None, :] >= pad[:, None])[:, None, None, :]
        if float_mask:
            mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    got = shared_prefix.decode_step(query, key, value, pk, pv, mask, 1 / math.sqrt(dim))
    want = reference(query, key, value, pk, pv, mask, 1 / math.sqrt(dim))
    assert got.shape == (rows, 1, kv * rep, dim)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_uniform_groups() -> None:
    assert shared_prefix.uniform_groups([0, 0, 1, 1, 2, 2]) == 2
    assert shared_prefix.uniform_groups([0, 1, 2]) == 1
    assert shared_prefix.uniform_groups([0, 0, 1]) == 0  # a prompt split across batches
    assert shared_prefix.uniform_groups([0, 1, 0, 1]) == 0  # rows not adjacent by prompt
    assert shared_prefix.uniform_groups([]) == 0


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_causal_lm(tmp_path_factory.mktemp(f"tiny_{request.param}"), TEXTS, arch=request.param))


def run(folder: str, shared: bool, batch_size: int, n: int = 4, **kwargs) -> tuple[object, int]:
    """Samples of PROMPTS, and how many decoding steps ran the shared-prompt attention."""
    p = HFPolicy(folder, max_new_tokens=kwargs.pop("max_new_tokens", 16), batch_size=batch_size,
                 temperature=1.3, **kwargs)
    p.setup()
    p.shared_prefix = shared
    calls = [0]
    original = shared_prefix.decode_step

    def counted(*args, **kw):
        calls[0] += 1
        return original(*args, **kw)

    shared_prefix.decode_step = counted
    try:
        return p.generate(PROMPTS, n, [7, 8, 9]), calls[0]
    finally:
        shared_prefix.decode_step = original


@pytest.mark.parametrize(("batch_size", "used"), [(4, True), (6, False), (12, True), (64, True)])
def test_samples_equal_the_per_row_cache(tiny_model: str, batch_size: int, used: bool) -> None:
    """Batches of 6 rows split prompts' 4 samples: they keep per-row copies, with the same samples."""
    plain, none = run(tiny_model, False, batch_size)
    shared, calls = run(tiny_model, True, batch_size)
    assert none == 0
    assert shared == plain
    assert any(t for row in plain.responses for t in row)
    assert (calls > 0) == used


def test_generated_buffers_grow(tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    plain, _ = run(tiny_model, False, 12, max_new_tokens=24)
    original = shared_prefix.shared_prefix_cache
    monkeypatch.setattr(shared_prefix, "shared_prefix_cache",
                        lambda *a, **k: original(*a[:4], 2, **k))  # capacity 2: grows while decoding
    grown, calls = run(tiny_model, True, 12, max_new_tokens=24)
    assert calls > 0 and grown == plain


def test_one_sample_per_prompt_keeps_the_row_cache(tiny_model: str) -> None:
    """Greedy eval and n = 1 have no prompt to share."""
    _, calls = run(tiny_model, True, 8, n=1)
    assert calls == 0


def test_models_not_on_sdpa_are_left_alone(tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    folder = tiny_causal_lm(tmp_path, TEXTS, arch="llama")
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    assert not shared_prefix.enable(model)
    assert model.config._attn_implementation == "eager"


def test_a_config_knob_reaches_the_policy_and_keeps_old_fingerprints(tiny_model: str) -> None:
    """``shared_prefix`` (generate, and the run's scoring section) is left out of dumps at its default,
    so every fingerprint and run folder made before it stays put; turning it off reaches HFPolicy."""
    from pathlib import Path

    from pvar.experiment.presets import load_config
    from pvar.experiment.runner import Experiment
    from pvar.pipeline.generate import GenerateConfig, make_policy

    on, off = GenerateConfig.make(model=tiny_model), GenerateConfig.make(model=tiny_model, shared_prefix=False)
    assert "shared_prefix" not in on.model_dump() and on.fingerprint() != off.fingerprint()
    assert make_policy(on).shared_prefix and not make_policy(off).shared_prefix
    cfg = load_config(preset="quick", overrides={"scoring": {"shared_prefix": False}})
    gen, _ = Experiment(cfg, Path("/nonexistent/run")).ctx.sampling(cfg.policy, cfg.seed)
    assert gen.shared_prefix is False
    assert "shared_prefix" not in load_config(preset="quick").scoring.model_dump()


def test_a_multi_token_step_over_a_shared_prompt_is_refused() -> None:
    """The cache hands attention the generated part only: sdpa over it would silently drop the prompt."""
    from types import SimpleNamespace

    layer = SimpleNamespace(prefix_keys=torch.zeros(1, 1, 3, 4), prefix_values=torch.zeros(1, 1, 3, 4))
    q, k = torch.zeros(2, 1, 2, 4), torch.zeros(2, 1, 2, 4)
    with shared_prefix.active(SimpleNamespace(layers=[layer])), pytest.raises(RuntimeError, match="one token"):
        shared_prefix.attention(SimpleNamespace(layer_idx=0), q, k, k, None)
