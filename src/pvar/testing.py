"""Test helpers: synthetic pools with planted truth and tiny models (torch imported inside)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


def synthetic_pool(n_prompts: int, n: int, spread: np.ndarray | None = None, seed: int = 0) -> dict:
    """Rewards with a known per-prompt spread: r_ij = mu_i + spread_i * z_ij.

    Returns ``{"prompt_id", "rewards" (prompts x n float32), "spread"}``; top-PVar selection
    should recover the prompts with the largest planted spread.
    """
    rng = np.random.default_rng(seed)
    spread = rng.gamma(2.0, 0.5, n_prompts) if spread is None else np.asarray(spread, dtype=np.float64)
    mu = rng.normal(0, 3, n_prompts)
    rewards = (mu[:, None] + spread[:, None] * rng.standard_normal((n_prompts, n))).astype(np.float32)
    ids = np.array([f"syn-{i:07d}" for i in range(n_prompts)])
    return {"prompt_id": ids, "rewards": rewards, "spread": spread}


def tiny_tokenizer(texts: list[str], folder: str | Path):
    """A word-level tokenizer trained on ``texts`` with ChatML specials, saved to ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.train_from_iterator([*texts, "user assistant system"], trainers.WordLevelTrainer(special_tokens=specials))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        bos_token="<|im_start|>", padding_side="left",
    )
    fast.chat_template = CHATML
    fast.save_pretrained(str(folder))
    return fast


def tiny_causal_lm(folder: str | Path, texts: list[str], seed: int = 0, arch: str = "gpt2") -> Path:
    """A 2-layer, 64-wide random GPT-2 plus tokenizer saved to ``folder`` (loads in milliseconds);
    ``arch="llama"``: a 4-layer, 64-wide random Llama (SmolLM2's architecture) instead."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tok = tiny_tokenizer(texts, folder)
    torch.manual_seed(seed)
    if arch == "llama":
        llama = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                            tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id)
        LlamaForCausalLM(llama).save_pretrained(str(folder))
        return folder
    cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(str(folder))
    return folder


def tiny_reward_model(folder: str | Path, texts: list[str], seed: int = 0) -> Path:
    """A 2-layer random GPT-2 sequence classifier (one logit) plus tokenizer, saved to ``folder``."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    folder = Path(folder)
    tok = tiny_tokenizer(texts, folder)
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2, n_head=2, num_labels=1,
                     bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    GPT2ForSequenceClassification(cfg).save_pretrained(str(folder))
    return folder
