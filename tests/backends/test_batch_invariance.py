"""Greedy eval answers do not depend on which other prompts share a batch (float32)."""

import pytest

pytest.importorskip("torch")

from pvar.backends.hf_policy import HFPolicy
from pvar.testing import tiny_causal_lm

pytestmark = pytest.mark.usefixtures("torch_one_thread")

PROMPTS = ["tell me about the cat", "why is the sky blue at night and red in the morning", "hi",
           "a quick brown fox jumps over the lazy dog and runs", "what is bread", "name a river"]


def test_greedy_answers_are_the_same_alone_and_in_any_batch(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    model = tiny_causal_lm(tmp_path / "m", [*PROMPTS, "the dog sat on a mat and looked at rivers"])
    sharp = AutoModelForCausalLM.from_pretrained(str(model))
    with torch.no_grad():  # sharper logits: a random tiny model then answers each prompt differently
        for p in sharp.parameters():
            p.mul_(8.0)
    sharp.save_pretrained(str(model))
    answers = {}
    for size in (1, 2, 4, 6):
        policy = HFPolicy(str(model), max_new_tokens=12, batch_size=size, dtype="float32", greedy=True)
        policy.setup()
        answers[size] = policy.generate(PROMPTS, 1, list(range(len(PROMPTS)))).responses
    assert answers[1] == answers[2] == answers[4] == answers[6]
    assert len({a[0] for a in answers[1]}) > 1  # the prompts get different answers: the check has teeth
