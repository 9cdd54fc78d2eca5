"""A transformers sequence-classification reward model (Skywork-Reward-V2 style), scored as trained.

A reward model only means something on inputs formatted the way it was trained, so each
(prompt, response) pair goes through the reward model's OWN chat template, not the policy's.
The reward is the raw logit: PVar applies the Bradley-Terry sigmoid to reward differences itself.
"""

from __future__ import annotations

from typing import Any

from pvar.backends.base import Prompt, Scores


class HFReward:
    """``AutoModelForSequenceClassification`` reward model loaded by hub name or local path.

    Inputs are tokenized in batches sorted by length (less padding), cut to ``max_length`` tokens
    (capped at the model's position limit); `Scores.truncated` counts the inputs that were cut.
    ``dtype`` None means float32 on CPU and bfloat16 elsewhere.
    """

    def __init__(
        self, model: str, *, batch_size: int = 16, max_length: int = 1024, device: str = "cpu",
        dtype: str | None = None,
    ) -> None:
        if batch_size < 1 or max_length < 1:
            raise ValueError(f"batch_size and max_length must be >= 1, not {batch_size} and {max_length}")
        self.model_name = model
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.dtype = dtype
        self._model: Any = None
        self._tokenizer: Any = None
        self._limit = max_length

    def setup(self) -> None:
        """Load tokenizer and model; make padding safe for last-token pooling."""
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from pvar.backends.assets import check_model_ref, hub_error

        check_model_ref(self.model_name, "reward")
        try:
            tok = AutoTokenizer.from_pretrained(self.model_name)
        except (OSError, ValueError) as exc:
            raise hub_error(self.model_name, "reward", exc) from None
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise ValueError(f"reward model {self.model_name!r}: tokenizer has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token
        # Right padding keeps each sequence's position ids identical to an unpadded forward
        # (models with absolute positions, e.g. GPT-2, shift under left padding).
        tok.padding_side = "right"
        on_cpu = str(self.device).startswith("cpu")
        dtype = getattr(torch, self.dtype) if self.dtype else (torch.float32 if on_cpu else torch.bfloat16)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(self.model_name, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise hub_error(self.model_name, "reward", exc) from None
        # Sequence classifiers pool the last token that is not pad_token_id: without it they refuse
        # batches, and with a wrong one they would pool a padding position.
        for cfg in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
            cfg.pad_token_id = tok.pad_token_id
        self._model = model.to(self.device).eval()
        self._tokenizer = tok
        limits = [self.max_length, getattr(model.config.get_text_config(), "max_position_embeddings", None)]
        if isinstance(tok.model_max_length, int) and tok.model_max_length < 1_000_000:
            limits.append(tok.model_max_length)
        self._limit = min(x for x in limits if isinstance(x, int) and x > 0)

    def format(self, prompt: Prompt, response: str) -> str:
        """The text the reward model reads: its chat template when it has one, else prompt + blank line."""
        tok = self._tokenizer
        if tok.chat_template:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            messages.append({"role": "assistant", "content": response})
            return tok.apply_chat_template(messages, tokenize=False)
        text = prompt if isinstance(prompt, str) else "\n\n".join(m["content"] for m in prompt)
        return text + "\n\n" + response

    def score(self, prompts: list[Prompt], responses: list[list[str]], references: list[str | None]) -> Scores:
        """Raw logit ``logits[:, 0]`` per response; references are ignored (the model judges alone)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} response lists")
        self.setup()
        texts = [self.format(p, r) for p, resps in zip(prompts, responses, strict=True) for r in resps]
        flat, truncated = self._score_texts(texts)
        rewards, start = [], 0
        for resps in responses:
            rewards.append(flat[start : start + len(resps)])
            start += len(resps)
        return Scores(rewards, truncated=truncated, info={"model": self.model_name, "max_length": self._limit})

    def _score_texts(self, texts: list[str]) -> tuple[list[float], int]:
        """Score texts longest first in batches; return scores in input order and the truncation count."""
        import torch

        if not texts:
            return [], 0
        tok, limit = self._tokenizer, self._limit
        # A chat template writes its own special tokens (BOS included); adding them again would
        # duplicate BOS, which is what `apply_chat_template(tokenize=True)` avoids too.
        special = not tok.chat_template
        lengths = [len(ids) for ids in tok(texts, add_special_tokens=special, verbose=False)["input_ids"]]
        truncated = sum(n > limit for n in lengths)
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out = [0.0] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = tok([texts[i] for i in idx], add_special_tokens=special, truncation=True, max_length=limit,
                            padding=True, return_tensors="pt").to(self.device)
                logits = self._model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                for i, value in zip(idx, logits[:, 0].float().cpu().tolist(), strict=True):
                    out[i] = value
        return out, truncated
