"""Reference-similarity reward: cosine between a response and the row's reference answer.

No trained reward model is available offline, so the built-in selection reward asks how close a
sampled answer comes to a known good answer (ShareGPT's ChatGPT reply) in a sentence-embedding
space. Rewards are raw cosines in [-1, 1]; gaps between samples are small (~0.05-0.3), so the
pipeline's reward scale setting matters more here than for a real reward model.
"""

from __future__ import annotations

from typing import Any

from pvar.backends.assets import resolve_sentence_model
from pvar.backends.base import Prompt, Scores


class EmbeddingReward:
    """Cosine similarity (sentence-transformers, normalised embeddings) to the row's reference.

    ``model`` is "minilm" or "mpnet" (shipped offline, see `resolve_sentence_model`) or any
    SentenceTransformer folder or hub name. Each `score` call encodes the batch's distinct texts
    (responses and references) in one batched `encode`, so a reference shared by n responses is
    encoded once rather than n times. sentence-transformers already sorts inputs by length inside
    `encode`, so no sorting happens here. On CPU, long texts encode fastest in batches of 16-32;
    larger batches (the default suits a GPU) cost up to ~1.5x more per text there.
    """

    def __init__(self, model: str, *, batch_size: int = 256, device: str = "cpu") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.model_name = model
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None

    def setup(self) -> None:
        """Load the model once per worker (heavy import here, not at module level)."""
        if self._model is not None:
            return
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(resolve_sentence_model(self.model_name), device=self.device)

    def score(self, prompts: list[Prompt], responses: list[list[str]], references: list[str | None]) -> Scores:
        """Cosine of each response with its row's reference; rows without a reference are an error."""
        if not len(prompts) == len(responses) == len(references):
            raise ValueError(
                f"prompts, responses and references differ in length: {len(prompts)}, {len(responses)}, "
                f"{len(references)}"
            )
        for i, ref in enumerate(references):
            if ref is None or not str(ref).strip():
                raise ValueError(
                    f"the embedding reward ({self.model_name}) needs a `reference` column: batch row {i} has "
                    "no reference answer; add one to every row, or use another reward (hf:..., module:function)"
                )
        self.setup()
        # Each distinct text is encoded once: references repeat across a prompt's responses, and
        # sampled responses often repeat too (short answers, low temperature).
        index: dict[str, int] = {}
        for text in [r for resps in responses for r in resps] + [str(ref) for ref in references]:
            index.setdefault(text, len(index))
        if not any(responses):
            return Scores([[] for _ in responses], info={"model": self.model_name})
        emb = self._model.encode(
            list(index), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )
        rewards = []
        for resps, ref in zip(responses, references, strict=True):
            rows = emb[[index[r] for r in resps]]
            rewards.append([float(x) for x in rows @ emb[index[str(ref)]]])
        return Scores(rewards, info={"model": self.model_name})
