"""pvar.pipeline.theory: the expected DPO gradient at init, its Gram-matrix formula and its PVar bound."""

import copy
import json
import math

import numpy as np
import pytest

from pvar.backends.gradients import gram_matrix, load_policy, response_gradients, sequence_ids
from pvar.core.stats import preference_variance
from pvar.core.theory import dpo_coefficients, preference_gaps, theory_from_gram
from pvar.errors import ConfigError
from pvar.pipeline.theory import TheoryConfig, run_theory
from pvar.testing import tiny_causal_lm
from tests.conftest import write_jsonl

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # see tests/conftest.py

TEXT = "the cat sat on a mat dog ran far away good bad answer question why how what is it yes no maybe"
WORDS = TEXT.split(" ")
SCALE = 2.0


def _rows(count: int = 7, n: int = 4) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        responses = [" ".join(rng.choice(WORDS, size=3 + (i + j) % 5)) for j in range(n)]
        rewards = [0.7] * n if i == 2 else list(np.round(rng.normal(0, 0.4 * (i + 1), n), 4))
        prompt = f"what is the cat {i}" if i % 2 else f"why is it {i}"
        rows.append({"prompt_id": f"p{i}", "prompt": prompt, "responses": responses, "rewards": rewards})
    for row, pvar in zip(rows, preference_variance([r["rewards"] for r in rows], SCALE), strict=True):
        row["pvar"] = float(pvar)
    return rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(tiny_causal_lm(tmp_path_factory.mktemp("lm"), [" ".join(WORDS), "cat 0 1 2 3 4 5 6"]))


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("pool") / "pool.jsonl", _rows())


@pytest.fixture(scope="module")
def result(tiny, pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("theory")
    return run_theory(pool, out, TheoryConfig.make(model=tiny, prompts=32, beta=0.1, device="cpu")), out


def test_exact_bound_holds_on_every_prompt(result):
    res, _ = result
    assert res.n_prompts == 7 and res.n_params > 0
    assert res.violations_exact == 0 and res.violations_fisher == 0
    for row in res.rows:
        assert row["grad_norm"] <= row["bound_exact"] * (1 + 1e-6) + 1e-15
        assert row["pvar"] == pytest.approx(row["pool_pvar"], abs=1e-12)
        assert row["snr"] == pytest.approx(4 * row["pvar"] / (1 - 4 * row["pvar"]))
    # with the unbiased centred tr F estimator the Fisher form is the exact bound
    assert res.max_fisher_exact_gap < 1e-9
    assert 0 < res.max_ratio_exact <= 1 + 1e-6


def test_scale_inferred_from_pool_pvar(result):
    res, _ = result
    assert res.scale == SCALE and "inferred" in res.scale_source


def test_all_equal_rewards_give_zero_gradient(result):
    res, _ = result
    row = next(r for r in res.rows if r["prompt_id"] == "p2")
    assert row["pvar"] == 0 and row["grad_norm"] == 0 and row["bound_exact"] == 0
    gram = np.random.default_rng(1).normal(size=(4, 9))
    th = theory_from_gram(gram @ gram.T, np.full(4, 3.0), 1.0, 0.1)
    assert th.grad_norm == 0 and th.pvar == 0 and not th.violates(th.bound_exact)


def test_files_and_spearman(result):
    res, out = result
    lines = (out / "theory.jsonl").read_text().splitlines()
    assert len(lines) == res.n_prompts
    first = json.loads(lines[0])
    assert {"prompt_id", "pvar", "grad_norm", "bound_exact", "bound_fisher", "trF", "snr"} <= set(first)
    summary = json.loads((out / "theory.json").read_text())
    assert summary["n_prompts"] == 7 and summary["violations_exact"] == 0
    assert math.isfinite(summary["spearman_pvar"]) and -1 <= res.spearman_pvar <= 1
    assert (out / "theory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp*"))


def _logprob_via_loss(model, ids, n_prompt):
    """Sum of response-token log-probs from the model's own LM loss: independent of sequence_logprob."""
    import torch

    input_ids = torch.tensor([ids])
    labels = input_ids.clone()
    labels[0, :n_prompt] = -100
    return -model(input_ids=input_ids, labels=labels).loss * (len(ids) - n_prompt)


def test_gram_formula_equals_autograd_of_expected_dpo_loss(tiny):
    import torch
    import torch.nn.functional as F

    policy, tok, params, _ = load_policy(tiny, "cpu")
    ref = copy.deepcopy(policy).requires_grad_(False)
    prompt = [{"role": "user", "content": "why is the cat on a mat"}]
    responses = ["the cat sat", "a dog ran far away", "yes", "no maybe good answer"]
    rewards = np.array([0.3, -1.2, 0.9, 0.0])
    beta, scale, n = 0.5, 1.5, len(responses)

    grads, _ = response_gradients(policy, tok, params, prompt, responses, max_length=64)
    th = theory_from_gram(gram_matrix(grads), rewards, scale, beta)
    g_vec = torch.from_numpy(dpo_coefficients(preference_gaps(rewards, scale), beta)).float() @ grads

    seqs = [sequence_ids(tok, prompt, r, max_length=64) for r in responses]
    h = torch.stack([_logprob_via_loss(policy, ids, k) - _logprob_via_loss(ref, ids, k).detach() for ids, k in seqs])
    p = torch.sigmoid(scale * (torch.tensor(rewards)[:, None] - torch.tensor(rewards)[None, :])).float()
    loss = -F.logsigmoid(beta * (h[:, None] - h[None, :]))  # loss[i, j] = l(i beats j)
    off = ~torch.eye(n, dtype=torch.bool)
    expected = ((p * loss + (1 - p) * loss.T)[off]).sum() / (n * (n - 1))
    direct = torch.cat([g.reshape(-1) for g in torch.autograd.grad(expected, params, retain_graph=True)])
    assert torch.linalg.vector_norm(direct - g_vec) <= 1e-5 * torch.linalg.vector_norm(g_vec)
    assert th.grad_norm == pytest.approx(float(torch.linalg.vector_norm(direct)), rel=1e-5)
    # the one-sided average (1/N) sum p_ij l(i beats j) counts each pair once per orientation: G / 2
    one_sided = ((p * loss)[off]).sum() / (n * (n - 1))
    half = torch.cat([g.reshape(-1) for g in torch.autograd.grad(one_sided, params)])
    assert torch.linalg.vector_norm(2 * half - g_vec) <= 1e-5 * torch.linalg.vector_norm(g_vec)


def test_bound_on_random_vectors_and_tight_for_two_responses():
    rng = np.random.default_rng(3)
    for trial in range(300):
        n = int(rng.integers(2, 9))
        g = rng.normal(size=(n, 5)) * rng.gamma(1.0, 1.0, size=(n, 1))
        if trial % 3 == 0:
            g += rng.normal(size=5) * 50  # a large common component: G and the bound ignore it
        th = theory_from_gram(g @ g.T, rng.normal(0, 2, n), float(rng.gamma(2, 2)), float(rng.gamma(2, 0.1)))
        assert not th.violates(th.bound_exact) and not th.violates(th.bound_fisher)
        assert th.mean_pair_sq == pytest.approx(2 * th.trF, rel=1e-9)
    g = rng.normal(size=(2, 6))
    th = theory_from_gram(g @ g.T, np.array([1.0, -0.5]), 2.0, 0.1)
    assert th.grad_norm == pytest.approx(th.bound_exact, rel=1e-12)  # n = 2: Cauchy-Schwarz is an equality


def test_parameter_subset_and_spread_pick(tiny, pool, tmp_path):
    cfg = TheoryConfig.make(model=tiny, prompts=3, pick="spread", params="last-layers:1", device="cpu", scale=SCALE)
    res = run_theory(pool, tmp_path, cfg)
    assert res.violations_exact == 0 and res.n_prompts == 3
    pvars = preference_variance([r["rewards"] for r in _rows()], SCALE)
    got = [r["pvar"] for r in res.rows]
    assert min(got) == pytest.approx(pvars.min()) and max(got) == pytest.approx(pvars.max())
    policy, _, params, _ = load_policy(tiny, "cpu", "last-layers:1")
    assert res.n_params == sum(p.numel() for p in params) < sum(p.numel() for p in policy.parameters())


def test_scale_mismatch_and_bad_params_refused(tiny, pool, tmp_path):
    with pytest.raises(ConfigError, match="looks measured with scale=2"):
        run_theory(pool, tmp_path, TheoryConfig.make(model=tiny, scale=1.0, device="cpu"))
    with pytest.raises(ConfigError, match="params"):
        TheoryConfig.make(params="first-layers")


def test_import_stays_light():
    import subprocess
    import sys

    code = ("import sys, pvar.pipeline.theory; "
            "print(','.join(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
