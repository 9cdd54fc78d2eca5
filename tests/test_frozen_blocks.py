"""Frozen blocks computed once (training/frozen_blocks.py): the same losses as running them every step."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from pvar.pipeline.train import TrainConfig, train
from tests.test_train import TOPICS, make_rows, write_pairs

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from pvar.testing import tiny_causal_lm

    texts = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in make_rows(len(TOPICS))]
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"), texts, arch="llama")


def losses(out) -> list[float]:
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def run(tmp_path, model, name: str, monkeypatch=None, lora_layers_override: int = 2, **settings):
    pairs = write_pairs(tmp_path / "pairs.jsonl", make_rows(4, chat=True))
    cfg = TrainConfig.make(model=str(model), lora_layers=lora_layers_override, max_steps=4, batch_size=2, lr=5e-3,
                           **settings)
    seen = {}
    if monkeypatch is not None:
        import pvar.training.frozen_blocks as fb

        original = fb.FrozenBlocks.__exit__

        def record(self, *exc):
            seen.update(self.stats, active=self.active, kept=len(self.kept))
            return original(self, *exc)

        monkeypatch.setattr(fb.FrozenBlocks, "__exit__", record)
    train(pairs, tmp_path / name, cfg)
    return losses(tmp_path / name), seen


@pytest.mark.parametrize("algo", ["dpo", "simpo"])
def test_first_steps_equal_the_plain_path(tmp_path, tiny_llama, monkeypatch, algo):
    """4 steps (2 epochs of 4 pairs: every sequence is seen again) with the lower 2 of 4 blocks kept: the
    losses equal those of running them at every step within 1e-4 relative, and sequences were reused."""
    plain, _ = run(tmp_path, tiny_llama, "plain", algo=algo, skip_unused=False)
    fast, stats = run(tmp_path, tiny_llama, "fast", monkeypatch, algo=algo)
    assert len(plain) == len(fast) == 4
    for a, b in zip(plain, fast, strict=True):
        assert abs(a - b) <= 1e-4 * abs(a) + 1e-7, (plain, fast)
    assert stats["active"] and stats["reused"] > 0 and stats["computed"] > 0 and stats["kept"] == stats["computed"]
    assert plain[0] != plain[-1]  # it trained


def test_a_model_that_transforms_its_inputs_falls_back(tmp_path, tiny_llama, monkeypatch):
    """A model whose forward changes inputs_embeds before the first block (like Gemma's scaling) fails the
    first-batch check: a warning, and the blocks run as usual (the same losses as the plain path)."""
    from transformers import LlamaModel

    forward = LlamaModel.forward

    def scaled(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
               **kwargs):
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        return forward(self, None, attention_mask, position_ids, cache, inputs_embeds * 2.0, **kwargs)

    monkeypatch.setattr(LlamaModel, "forward", scaled)
    plain, _ = run(tmp_path, tiny_llama, "plain", skip_unused=False)
    with pytest.warns(UserWarning, match="the frozen blocks run at every step"):
        fast, stats = run(tmp_path, tiny_llama, "fast", monkeypatch)
    assert not stats["active"] and fast == plain


def test_gpt2_blocks_are_left_alone(tmp_path):
    """GPT-2 adds position embeddings to inputs_embeds and keeps its blocks in `h`: not a candidate."""
    from transformers import AutoModelForCausalLM

    from pvar.testing import tiny_causal_lm
    from pvar.training.frozen_blocks import decoder_of

    folder = tiny_causal_lm(tmp_path / "gpt2", ["a b c"])
    assert decoder_of(AutoModelForCausalLM.from_pretrained(folder)) is None


@pytest.mark.slow
def test_smollm2_first_steps_equal_the_plain_path(tmp_path):
    """SmolLM2 with LoRA in its top 8 of 30 blocks: 4 steps over 4 chat pairs (each pair seen twice)."""
    plain, _ = run(tmp_path, "smollm2", "plain", skip_unused=False, lora_layers_override=8)
    fast, _ = run(tmp_path, "smollm2", "fast", None, lora_layers_override=8)
    assert len(fast) == 4
    for a, b in zip(plain, fast, strict=True):
        assert abs(a - b) <= 1e-4 * abs(a) + 1e-7, (plain, fast)
