"""Counter-based noise (backends/noise.py): a pure function of (seed, step, token), uniform, independent,
and the sampler built on it draws exactly from the nucleus of softmax(logits / T)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from pvar.backends import noise  # noqa: E402
from pvar.backends.hf_policy import GumbelSampler, sample_seed  # noqa: E402

M64 = 2**64 - 1


def mix_reference(x: int) -> int:
    """SplitMix64's finaliser on Python ints, mod 2**64: the definition the torch code must equal."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def uniform_reference(seed: int, step: int, token: int) -> float:
    row = mix_reference((mix_reference(seed % 2**64) + step * 0x9E3779B97F4A7C15) & M64)
    bits = mix_reference((row + token * 0xD6E8FEB86659FD93) & M64)
    return ((bits >> 12) * 2 + 1) / 2.0**53


@settings(max_examples=60, deadline=None)
@given(seeds=st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=4), step=st.integers(0, 2**20),
       tokens=st.lists(st.integers(0, 2**18), min_size=1, max_size=5))
def test_torch_hash_equals_the_integer_definition(seeds: list[int], step: int, tokens: list[int]) -> None:
    got = noise.uniforms(torch.tensor(seeds), step, torch.tensor([tokens] * len(seeds)))
    per_row = noise.uniforms(torch.tensor(seeds), torch.full((len(seeds),), step), torch.tensor([tokens] * len(seeds)))
    want = [[uniform_reference(s, step, v) for v in tokens] for s in seeds]
    assert got.dtype == torch.float64 and got.tolist() == want and per_row.tolist() == want


def test_uniforms_are_never_zero_or_one() -> None:
    u = noise.uniforms(torch.tensor([0, 2**63 - 1]), 0, torch.arange(50_000).expand(2, -1))
    assert float(u.min()) > 0 and float(u.max()) < 1
    assert torch.isfinite(noise.gumbel(torch.tensor([0, 2**63 - 1]), 0, torch.arange(50_000).expand(2, -1))).all()


def test_uniforms_pass_a_ks_test_over_a_million_draws() -> None:
    from scipy.stats import kstest

    seeds = torch.tensor([sample_seed(s, j) for s in range(64) for j in range(4)])  # 256 rows
    u = torch.cat([noise.uniforms(seeds, step, torch.arange(1000).expand(256, -1)) for step in range(4)])
    assert u.numel() >= 10**6
    assert kstest(u.flatten().numpy(), "uniform").pvalue > 1e-3
    assert abs(float(u.mean()) - 0.5) < 5 / np.sqrt(12 * u.numel())


@pytest.mark.parametrize("axis", ["rows", "steps", "tokens"])
def test_neighbours_along_each_axis_are_independent(axis: str) -> None:
    """Pairs of uniforms one apart in seed (adjacent samples of a prompt), step, or token id: a 16x16
    chi-square on their joint histogram, and their correlation, show no dependence."""
    from scipy.stats import chisquare

    seeds = torch.tensor([sample_seed(7, j) for j in range(257)])
    steps, tokens = torch.arange(120), torch.arange(201)
    grid = torch.stack([noise.uniforms(seeds, int(t), tokens.expand(len(seeds), -1)) for t in steps])  # T, R, V
    a, b = {"steps": (grid[:-1], grid[1:]), "rows": (grid[:, :-1], grid[:, 1:]),
            "tokens": (grid[:, :, :-1], grid[:, :, 1:])}[axis]
    a, b = a.flatten().numpy(), b.flatten().numpy()
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(a.size)
    cells = (np.floor(a * 16) * 16 + np.floor(b * 16)).astype(int)
    assert chisquare(np.bincount(cells, minlength=256)).pvalue > 1e-4


def test_a_token_noise_does_not_depend_on_the_other_candidates() -> None:
    seeds = torch.tensor([11, 22, 33])
    full = noise.uniforms(seeds, 5, torch.arange(100).expand(3, -1))
    picked = torch.tensor([[7, 3, 99], [0, 50, 1], [42, 42, 8]])
    assert torch.equal(noise.uniforms(seeds, 5, picked), full.gather(1, picked))
    assert torch.equal(noise.uniforms(seeds[1:2], 5, picked[1:2]), full[1:2].gather(1, picked[1:2]))


def nucleus_probs(logits: torch.Tensor, temperature: float, top_p: float) -> np.ndarray:
    p = np.exp((logits.double() / temperature).numpy() - (logits.double() / temperature).numpy().max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep = np.zeros_like(p, dtype=bool)
    keep[order[(np.cumsum(p[order]) - p[order]) < top_p]] = True
    q = np.where(keep, p, 0.0)
    return q / q.sum()


@pytest.mark.parametrize(("temperature", "top_p"), [(0.8, 0.95), (1.0, 0.7), (1.3, 1.0)])
def test_token_frequencies_match_the_nucleus_of_a_large_vocabulary(temperature: float, top_p: float) -> None:
    """A 3,000-token vocabulary (the top-k path, not the small-vocabulary one), sampled through the
    processor HF calls: chi-square of the counts against softmax(logits / T) on the nucleus."""
    from scipy.stats import chisquare

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3000, generator=gen) * 0.5
    logits[:12] += torch.linspace(5.0, 2.0, 12)  # a head of likely tokens over a long flat tail
    target = nucleus_probs(logits, temperature, top_p)
    rows = 6000
    sampler = GumbelSampler([sample_seed(1, j) for j in range(rows)], temperature=temperature, top_p=top_p)
    picks = [sampler(None, logits.expand(rows, -1).clone()).argmax(-1) for _ in range(2)]
    for step in picks:
        counts = np.bincount(step.numpy(), minlength=len(logits))
        assert counts[target == 0].sum() == 0, "a token outside the nucleus was sampled"
        big = target * rows >= 5  # chi-square cells with enough expected counts; the tail pooled
        observed = np.append(counts[big], counts[~big].sum())
        expected = np.append(target[big], target[~big].sum()) * rows
        keep = expected > 0
        assert chisquare(observed[keep], expected[keep]).pvalue > 1e-4
    assert (picks[0] != picks[1]).float().mean() > 0.2


def test_noise_is_computed_for_candidates_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """At top_p < 1 the sampler hashes the top-k candidates of each row, not the vocabulary."""
    sizes = []
    original = noise.uniforms

    def spy(seeds, steps, tokens):
        sizes.append(tuple(tokens.shape))
        return original(seeds, steps, tokens)

    monkeypatch.setattr(noise, "uniforms", spy)
    logits = torch.randn(8, 49152, generator=torch.Generator().manual_seed(0))
    logits[:, :10] += 12  # peaked, as a language model's next-token distribution mostly is
    GumbelSampler(list(range(8)), temperature=0.8, top_p=0.95)(None, logits)
    assert sizes == [(8, GumbelSampler.TOPK)]


def test_generate_fingerprint_names_the_noise() -> None:
    """Samples drawn with the generator-stream noise are other samples: an hf generate folder from before
    has another fingerprint (refused, never mixed); vLLM samples with its own sampler, so its is unchanged."""
    from pvar.config import StageConfig
    from pvar.pipeline.generate import GenerateConfig

    hf, vllm = GenerateConfig(), GenerateConfig(backend="vllm")
    assert hf.fingerprint() != StageConfig.fingerprint(hf)
    assert vllm.fingerprint() == StageConfig.fingerprint(vllm)


@pytest.mark.slow
def test_smollm2_samples_ignore_batching_and_extend() -> None:
    """SmolLM2 (its 49,152-token vocabulary takes the top-k path): samples do not depend on the batch size
    or on which prompts share the batch, and asking for more samples later keeps the earlier ones."""
    from pvar.backends.hf_policy import HFPolicy

    prompts = ["What is the capital of France?", "Write a haiku about rain.", "Explain gravity to a child."]
    seeds = [11, 22, 33]

    def gen(batch_size: int, which: list[int], n: int, start: int = 0):
        p = HFPolicy("smollm2", max_new_tokens=24, batch_size=batch_size)
        p.setup()
        return p.generate([prompts[i] for i in which], n, [seeds[i] for i in which], start=start).responses

    full = gen(12, [0, 1, 2], 4)
    assert gen(3, [2, 0], 4) == [full[2], full[0]]
    head, tail = gen(5, [0, 1, 2], 2), gen(5, [0, 1, 2], 2, start=2)
    assert [h + t for h, t in zip(head, tail, strict=True)] == full
    assert len({t for row in full for t in row}) > 6  # samples, not copies
