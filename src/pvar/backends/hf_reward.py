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

    Inputs are cut to ``max_length`` tokens (capped at the model's position limit; `Scores.truncated`
    counts the inputs that were cut), sorted by length, and batched by a token budget: a batch holds
    at most ``batch_size`` texts and ``max_batch_tokens`` padded tokens, so short texts go in large
    batches and long ones in small batches, and padding stays a few percent (`Scores.info` reports
    it). ``dtype`` None or "auto" means float32 on CPU and bfloat16 elsewhere.
    """

    def __init__(
        self, model: str, *, batch_size: int = 16, max_length: int = 1024, device: str = "cpu",
        dtype: str | None = None, max_batch_tokens: int = 32_768,
    ) -> None:
        if batch_size < 1 or max_length < 1 or max_batch_tokens < 1:
            raise ValueError(f"batch_size, max_length and max_batch_tokens must be >= 1, not {batch_size}, "
                             f"{max_length} and {max_batch_tokens}")
        self.max_batch_tokens = max_batch_tokens
        self.model_name = model
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.dtype = dtype
        self._model: Any = None
        self._tokenizer: Any = None
        self._limit = max_length

    def load_tokenizer(self) -> Any:
        """The reward model's tokenizer, with a pad token and right padding."""
        if self._tokenizer is not None:
            return self._tokenizer
        from transformers import AutoTokenizer

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
        self._tokenizer = tok
        return tok

    def token_ids(self, texts: list[str], limit: int | None = None) -> tuple[list[list[int]], int]:
        """Token ids of formatted texts, cut to ``limit`` (default ``max_length``) on the tokenizer's
        truncation side; and how many were cut. The one tokenization both scorers use."""
        tok = self.load_tokenizer()
        # A chat template writes its own special tokens (BOS included); adding them again would
        # duplicate BOS, which is what `apply_chat_template(tokenize=True)` avoids too.
        special = not tok.chat_template
        ids = tok(texts, add_special_tokens=special, verbose=False)["input_ids"]
        limit = self.max_length if limit is None else limit
        left = getattr(tok, "truncation_side", "right") == "left"
        cut = [list(x[-limit:] if left else x[:limit]) for x in ids]
        return cut, sum(len(x) > limit for x in ids)

    def setup(self) -> None:
        """Load tokenizer and model; make padding safe for last-token pooling."""
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForSequenceClassification

        from pvar.backends.assets import hub_error

        tok = self.load_tokenizer()
        on_cpu = str(self.device).startswith("cpu")
        auto = self.dtype in (None, "auto")
        dtype = (torch.float32 if on_cpu else torch.bfloat16) if auto else getattr(torch, self.dtype)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(self.model_name, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise hub_error(self.model_name, "reward", exc) from None
        # Sequence classifiers pool the last token that is not pad_token_id: without it they refuse
        # batches, and with a wrong one they would pool a padding position.
        for cfg in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
            cfg.pad_token_id = tok.pad_token_id
        self._model = model.to(self.device).eval()
        from pvar.backends import onednn

        onednn.enable(self._model)  # on the CPU, float32 products through oneDNN
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
        flat, truncated, padding = self._score_texts(texts)
        rewards, start = [], 0
        for resps in responses:
            rewards.append(flat[start : start + len(resps)])
            start += len(resps)
        return Scores(rewards, truncated=truncated, info={"model": self.model_name, "max_length": self._limit,
                                                          "padding": padding})

    def _score_texts(self, texts: list[str]) -> tuple[list[float], int, float]:
        """Score texts longest first in batches; return scores in input order, the truncation count
        and the share of padding in the batches. Each text is tokenized once and padded per batch."""
        import torch

        if not texts:
            return [], 0, 0.0
        ids, truncated = self.token_ids(texts, self._limit)
        out = [0.0] * len(texts)
        padded = real = 0
        with torch.inference_mode():
            for idx in token_batches([len(x) for x in ids], self.batch_size, self.max_batch_tokens):
                batch = self._tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt").to(self.device)
                padded += batch["input_ids"].numel()
                real += int(batch["attention_mask"].sum())
                logits = self._model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                for i, value in zip(idx, logits[:, 0].float().cpu().tolist(), strict=True):
                    out[i] = value
        return out, truncated, round(1 - real / padded, 4) if padded else 0.0


def token_batches(lengths: list[int], max_rows: int, max_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` in batches, longest first: each batch has at most ``max_rows`` rows and
    pads to at most ``max_tokens`` tokens (rows x its longest), and a text longer than the budget
    goes alone. Sorting keeps the rows of a batch alike in length, so padding is small."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]  # the first row is the longest
        if current and (len(current) >= max_rows or (len(current) + 1) * width > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
