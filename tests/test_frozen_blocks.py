"""Frozen blocks computed once (training/frozen_blocks.py): the same losses as running them every step."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from pvar.pipeline.train import TrainConfig, train
from tests.test_train import TOPICS, make_rows, write_pairs

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(autouse=True)
def fresh_store():
    """Each test starts without the states an earlier test's trainers kept in the shared store."""
    from pvar.training import frozen_blocks

    frozen_blocks._SHARED.clear()
    yield
    frozen_blocks._SHARED.clear()


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


def record_exits(monkeypatch) -> list[dict]:
    """The stats of every `FrozenBlocks` exit, in order (the reference pass, then training)."""
    import pvar.training.frozen_blocks as fb

    exits: list[dict] = []
    original = fb.FrozenBlocks.__exit__

    def record(self, *exc):
        exits.append({**self.stats, "kept": len(self.kept), "store": self.store})
        return original(self, *exc)

    monkeypatch.setattr(fb.FrozenBlocks, "__exit__", record)
    return exits


def test_the_reference_pass_keeps_the_states_training_uses(tmp_path, tiny_llama, monkeypatch):
    """DPO's reference log-probs run inside the trainer's frozen blocks: they compute each of the 8
    sequences (4 pairs) once, and the training steps that follow compute none."""
    exits = record_exits(monkeypatch)
    run(tmp_path, tiny_llama, "fast")
    assert len(exits) == 2  # the reference pass, then training, one FrozenBlocks
    ref, trained = exits
    assert ref["computed"] == ref["kept"] == 8 and ref["reused"] == 0
    assert trained["computed"] == 8 and trained["reused"] > 0  # nothing computed after the reference pass


def test_trainers_of_one_model_share_the_kept_states(tmp_path, tiny_llama, monkeypatch):
    """A second run on the same base model (another arm) computes only the sequences the first did not
    keep, and its losses equal those of the same run with nothing kept, within 1e-4 relative."""
    from pvar.training import frozen_blocks

    rows = make_rows(6, chat=True)
    first = write_pairs(tmp_path / "first.jsonl", rows[:4])
    second = write_pairs(tmp_path / "second.jsonl", rows[2:])  # 2 pairs in common
    cfg = TrainConfig.make(model=str(tiny_llama), lora_layers=2, max_steps=4, batch_size=2, lr=5e-3)
    train(second, tmp_path / "alone", cfg)
    alone = losses(tmp_path / "alone")
    frozen_blocks._SHARED.clear()
    exits = record_exits(monkeypatch)
    train(first, tmp_path / "a", cfg)
    train(second, tmp_path / "b", cfg)
    assert exits[0]["store"] is exits[-1]["store"]
    assert exits[-1]["computed"] == 4  # the 2 new pairs' chosen and rejected
    assert exits[-1]["kept"] == 12
    for a, b in zip(alone, losses(tmp_path / "b"), strict=True):
        assert abs(a - b) <= 1e-4 * abs(a) + 1e-7


def test_the_switch_keeps_each_trainer_to_itself(tmp_path, tiny_llama, monkeypatch):
    """PVAR_SHARED_STATES=0: the reference pass runs every block, each trainer keeps its own states, and
    the losses are those of the shared path within 1e-4 relative."""
    shared, _ = run(tmp_path, tiny_llama, "shared")
    monkeypatch.setenv("PVAR_SHARED_STATES", "0")
    exits = record_exits(monkeypatch)
    alone, _ = run(tmp_path, tiny_llama, "alone")
    run(tmp_path, tiny_llama, "again")
    assert len(exits) == 2  # training only, in each run
    assert exits[0]["store"] is not exits[1]["store"] and exits[1]["computed"] == 8
    for a, b in zip(shared, alone, strict=True):
        assert abs(a - b) <= 1e-4 * abs(a) + 1e-7


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
