"""Reference-similarity reward: cosine between a response and the row's reference answer.

No trained reward model is available offline, so the built-in selection reward asks how close a
sampled answer comes to a known good answer (ShareGPT's ChatGPT reply) in a sentence-embedding
space. Rewards are raw cosines in [-1, 1]; gaps between samples are small (~0.05-0.3), so the
pipeline's reward scale setting matters more here than for a real reward model.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from pvar.backends.assets import resolve_sentence_model
from pvar.backends.base import Prompt, Scores

# Process-wide: a judge scores every arm of an experiment against the same references and the same
# base-policy answers, so the model is loaded once and each distinct text is encoded once.
_MODELS: dict[tuple[str, str], Any] = {}
_CACHE: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
CACHE_ENTRIES = 65536  # LRU bound: ~200 MB of 768-d float32 embeddings


def clear_cache(models: bool = True) -> None:
    """Forget cached embeddings, and loaded models unless ``models=False`` (tests; benchmarks; memory)."""
    if models:
        _MODELS.clear()
    _CACHE.clear()


class EmbeddingReward:
    """Cosine similarity (sentence-transformers, normalised embeddings) to the row's reference.

    ``model`` is "minilm" or "mpnet" (shipped offline, see `resolve_sentence_model`) or any
    SentenceTransformer folder or hub name. Each `score` call encodes the batch's distinct texts
    (responses and references) in one batched `encode`, so a reference shared by n responses is
    encoded once rather than n times. sentence-transformers already sorts inputs by length inside
    `encode`, so no sorting happens here. On CPU, long texts encode fastest in batches of 16-32;
    larger batches cost up to 2x more per text there, so the default is 16 on CPU and 256 elsewhere.
    """

    needs_reference = True

    @staticmethod
    def check_reference(reference: str | None) -> str | None:
        """Why ``reference`` cannot be scored against (None when it can): checked before scoring."""
        return None if isinstance(reference, str) and reference.strip() else "empty reference answer"

    def __init__(self, model: str, *, batch_size: int | None = None, device: str = "cpu") -> None:
        if batch_size is None:  # measured: mpnet on long references runs 2x faster at 16 than at 64 on CPU
            batch_size = 16 if device == "cpu" else 256
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

        key = (resolve_sentence_model(self.model_name), self.device)
        if key not in _MODELS:
            try:
                _MODELS[key] = SentenceTransformer(key[0], device=self.device)
            except (OSError, ValueError) as exc:
                from pvar.backends.assets import hub_error

                raise hub_error(self.model_name, "reward", exc) from None
        self._model = _MODELS[key]

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
        emb = self._encode(list(index))
        rewards = []
        for resps, ref in zip(responses, references, strict=True):
            rows = emb[[index[r] for r in resps]]
            # row-wise multiply-and-sum, not a matrix product: a text's score must not depend on which
            # other texts share its call (BLAS blocking changes the last bits), or equal answers of two
            # arms would not tie exactly
            rewards.append([float(x) for x in (rows.astype(np.float64) * emb[index[str(ref)]]).sum(axis=1)])
        return Scores(rewards, info={"model": self.model_name})

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Normalised embeddings of ``texts``, shape (n, d); texts seen before in this process are not re-encoded."""
        tag = (self.model_name, self.device)
        todo = [t for t in texts if (*tag, t) not in _CACHE]
        if todo:
            fresh = self._model.encode(todo, batch_size=self.batch_size, normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=False)
            for text, vec in zip(todo, fresh, strict=True):
                _CACHE[(*tag, text)] = vec
        out = np.stack([_CACHE[(*tag, t)] for t in texts])
        for t in texts:
            _CACHE.move_to_end((*tag, t))
        while len(_CACHE) > CACHE_ENTRIES:
            _CACHE.popitem(last=False)
        return out
