"""Training sees the context the policy was sampled in: the prompt token ids TRL trains on equal the ids
the policy continued when it sampled (same chat template, same special tokens), for every algorithm,
with a tiny ChatML tokenizer and with SmolLM2's real tokenizer and template (system prompt included)."""

import json
import logging

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from pvar.backends.base import generation_prompt_ids
from pvar.pipeline.train import ALGOS, TrainConfig
from pvar.training.trainers import build_trainer

pytestmark = pytest.mark.usefixtures("torch_one_thread")

PAIRS = [
    {"prompt": "Name a large river in Europe, in lowercase only.", "chosen": "the danube is one.",
     "rejected": "The Danube."},
    {"prompt": "Say hello without commas.", "chosen": "Hello there friend.", "rejected": "Hello, friend."},
    {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "I do not know"},
    {"prompt": "Give one word for happy.", "chosen": "Joyful", "rejected": "sad"},
]


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory):
    from pvar.testing import tiny_causal_lm

    texts = [f"{p['prompt']} {p['chosen']} {p['rejected']}" for p in PAIRS]
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny-chat"), texts)


@pytest.fixture(scope="module")
def smollm2_tiny(tmp_path_factory):
    """SmolLM2's own tokenizer and chat template on a 1-layer random Llama with its vocabulary."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pvar.backends.assets import _smollm2_gguf

    try:
        gguf = _smollm2_gguf()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    folder = tmp_path_factory.mktemp("smollm2-tiny")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert "SmolLM" in tok.chat_template  # its default system prompt is part of the context
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(str(folder))
    return folder


def _trained_prompt_ids(trainer, algo: str) -> list[list[int]]:
    data = trainer.train_dataset
    if algo in ("dpo", "ipo", "kto"):
        return [list(x) for x in data["prompt_ids"]]
    return [list(x) for x in data["prompt_input_ids"]]  # CPO (SimPO) and ORPO tokenize their own way


@pytest.mark.parametrize("model_fixture", ["tiny_chat", "smollm2_tiny"])
@pytest.mark.parametrize("algo", ALGOS)
def test_trained_prompt_ids_equal_sampled_prompt_ids(tmp_path, request, model_fixture, algo):
    from transformers import AutoTokenizer

    folder = request.getfixturevalue(model_fixture)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    cfg = TrainConfig.make(model=str(folder), algo=algo, max_steps=1, batch_size=2, max_length=256)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    trl_logger = logging.getLogger("trl")
    trl_logger.addHandler(handler)
    try:
        built = build_trainer(pairs, tmp_path / "out", cfg)
    finally:
        trl_logger.removeHandler(handler)
    tok = AutoTokenizer.from_pretrained(str(folder))
    sampled = [generation_prompt_ids(tok, p["prompt"]) for p in PAIRS]
    trained = _trained_prompt_ids(built.trainer, algo)
    if algo == "kto":  # unpaired and shuffled: each prompt appears twice (chosen and rejected rows)
        assert sorted(map(tuple, trained)) == sorted(map(tuple, sampled + sampled))
    else:
        assert trained == sampled
    assert not [m for m in seen if "not a prefix" in m]


def test_text_pairs_for_a_raw_policy_stay_text(tmp_path):
    """A tokenizer without a chat template samples raw text, so training keeps raw text."""
    from datasets import Dataset

    from pvar.training.data import in_sampling_context

    class Raw:
        chat_template = None

    data = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in PAIRS])
    assert in_sampling_context(data, Raw())[0] == data[0]
