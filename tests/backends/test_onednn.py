"""oneDNN linear layers: F.linear's values and gradients, switched on and off, and the same samples."""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pvar.backends import onednn  # noqa: E402
from pvar.backends.hf_policy import HFPolicy  # noqa: E402
from pvar.testing import tiny_causal_lm  # noqa: E402

pytestmark = [pytest.mark.usefixtures("torch_one_thread"),
              pytest.mark.skipif(not onednn.available(), reason="this torch build has no oneDNN linear")]

TEXTS = ["why is the sky blue", "tell me a story about a robot", "how do plants turn light into sugar"]


def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the oneDNN products (and still compute them)."""
    real, seen = onednn._op(), []

    def counted(*args):
        seen.append(1)
        return real(*args)

    monkeypatch.setattr(onednn, "_op", lambda: counted)
    return seen


@settings(max_examples=40, deadline=None)
@given(lead=st.lists(st.integers(1, 7), min_size=0, max_size=2), k=st.integers(1, 70), n=st.integers(1, 70),
       bias=st.booleans(), strided=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_is_f_linear(lead, k, n, bias, strided, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, 2 * k if strided else k, generator=gen)
    x = x[..., ::2] if strided else x  # a non-contiguous input
    w, b = torch.randn(n, k, generator=gen), torch.randn(n, generator=gen) if bias else None
    with torch.no_grad():
        got = onednn.linear(x, w, b)
    torch.testing.assert_close(got, torch.nn.functional.linear(x, w, b), rtol=1e-5, atol=1e-5)


def test_a_frozen_layer_passes_its_input_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(24, 40, generator=gen), torch.randn(24, generator=gen)
    x = torch.randn(3, 5, 40, generator=gen, requires_grad=True)
    upstream = torch.randn(3, 5, 24, generator=gen)
    seen = calls(monkeypatch)
    (onednn.linear(x, w, b) * upstream).sum().backward()
    assert len(seen) == 2  # the forward and the input's gradient
    got = x.grad.clone()
    x.grad = None
    (torch.nn.functional.linear(x, w, b) * upstream).sum().backward()
    torch.testing.assert_close(got, x.grad, rtol=1e-5, atol=1e-5)


def test_a_weight_that_trains_keeps_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    w = torch.randn(4, 6, requires_grad=True)
    seen = calls(monkeypatch)
    onednn.linear(torch.randn(2, 6), w).sum().backward()
    assert not seen and w.grad is not None
    with torch.no_grad():  # not differentiated: oneDNN
        onednn.linear(torch.randn(2, 6), w)
    assert len(seen) == 1


def test_other_dtypes_and_missing_kernels_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = calls(monkeypatch)
    x, w = torch.randn(2, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    assert torch.equal(onednn.linear(x, w), torch.nn.functional.linear(x, w))
    assert not seen
    x, w = torch.randn(2, 6, device="meta"), torch.randn(4, 6, device="meta")  # another device (as CUDA)
    assert onednn.linear(x, w).shape == (2, 4) and not seen
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's casts apply to F.linear only
        assert onednn.linear(torch.randn(2, 6), torch.randn(4, 6)).dtype == torch.bfloat16
    assert torch.equal(onednn.linear(torch.randn(3, 0), torch.randn(4, 0)), torch.zeros(3, 4))  # oneDNN refuses K=0
    assert not seen
    x, w = torch.randn(2, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    monkeypatch.setattr(onednn, "available", lambda: False)
    x, w = x.float(), w.float()
    assert torch.equal(onednn.linear(x, w), torch.nn.functional.linear(x, w))
    assert not seen


def test_enable_switches_plain_linears_only_and_disable_undoes_it(tmp_path) -> None:
    class Adapter(torch.nn.Linear):  # a Linear subclass (a quantised or adapter layer) is left alone
        pass

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), Adapter(16, 4))
    keys = list(model.state_dict())
    x = torch.randn(3, 8)
    with torch.no_grad():
        want = model(x)
        assert onednn.enable(model) == 1
        assert isinstance(model[0], torch.nn.Linear) and type(model[0]) is not torch.nn.Linear
        assert type(model[2]) is Adapter
        torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)
        twin = copy.deepcopy(model)  # TRL and peft copy models
        torch.testing.assert_close(twin(x), want, rtol=1e-5, atol=1e-5)
        saved = pickle.loads(pickle.dumps(model[0]))  # torch.save of a whole module pickles its class by name
        assert type(saved) is type(model[0])
        torch.testing.assert_close(saved(x), model[0](x))
    assert list(model.state_dict()) == keys
    assert onednn.disable(model) == 1 and type(model[0]) is torch.nn.Linear
    elsewhere = torch.nn.Sequential(torch.nn.Linear(8, 16)).to("meta")  # a model on another device (as CUDA)
    assert onednn.enable(elsewhere) == 0 and type(elsewhere[0]) is torch.nn.Linear


def test_hf_policy_runs_on_onednn_with_the_same_samples(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = str(tiny_causal_lm(tmp_path / "llama", TEXTS, arch="llama"))
    out = {}
    for on in (True, False):
        p = HFPolicy(folder, max_new_tokens=12, batch_size=8)
        p.onednn = on
        seen = calls(monkeypatch)
        out[on] = p.generate(TEXTS, 4, [1, 2, 3]).responses
        assert bool(seen) == on
        monkeypatch.undo()
    assert out[True] == out[False]


def test_training_and_reward_loaders_switch_their_models(tmp_path) -> None:
    from pvar.backends.hf_reward import HFReward
    from pvar.testing import tiny_reward_model
    from pvar.training.trainers import load_model

    _, model = load_model(str(tiny_causal_lm(tmp_path / "llama", TEXTS, arch="llama")), "tiny")
    kinds = {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Linear)}
    assert kinds == {"OneDNNLinear"}
    reward = HFReward(str(tiny_reward_model(tmp_path / "reward", TEXTS)))
    reward.score(["why is the sky blue"], [["because of air"]], [None])
    assert "OneDNNLinear" in {type(m).__name__ for m in reward._model.modules()}


def test_the_environment_and_other_cpus_turn_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PVAR_ONEDNN", "0")
    assert onednn.available.__wrapped__() is False
    monkeypatch.setenv("PVAR_ONEDNN", "1")
    assert onednn.available.__wrapped__() is True
    monkeypatch.setattr("platform.machine", lambda: "arm64")  # measured on x86-64 only: others keep their BLAS
    assert onednn.available.__wrapped__() is False
