"""Sampling from a transformers causal LM, seeded per sample so batching cannot change the samples.

HF's ``do_sample=True`` draws every row from one global RNG, so a sample would depend on which
other prompts share its batch, the batch size and the order. Here generation runs greedy
(``do_sample=False``) over scores that `GumbelSampler` has already reduced to its choice: the
argmax of ``logits / T + Gumbel`` over the top-p nucleus, which is an exact draw from the
top-p-filtered ``softmax(logits / T)`` (the Gumbel-max trick). The Gumbel noise of token v at
decoding step t of a row with seed s is a pure function of (s, t, v) (`pvar.backends.noise`),
computed on the logits' device for the candidate tokens only.

The noise is exactly reproducible, on any device; the logits are reproducible up to floating
point: a different batch shape, padding or device can move a logit by an ulp, which changes a
token only when two perturbed scores (or the nucleus boundary) tie to within that ulp.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pvar.backends.base import Generation, Prompt, check_sampling, generation_prompt_ids, keep_end, prompt_token_ids
from pvar.backends.sampler import GumbelSampler, sample_seed

__all__ = ["GumbelSampler", "HFPolicy", "sample_seed"]  # the sampler lives in backends/sampler.py

if TYPE_CHECKING:
    import torch


class HFPolicy:
    """A transformers causal LM as a `Policy`: batched, length-sorted, per-sample seeded generation.

    ``model`` is a local folder or a built-in name ("smollm2"); ``batch_size`` counts sequences
    (prompt × sample) per ``model.generate`` call. ``greedy=True`` decodes without noise (evaluation).

    The default batch of 128 was the fastest on a 2-core CPU with SmolLM2 (bench/generate.py:
    ~3-5 % over 64, ~40 % over 32); the KV cache grows with it (~46 KB per token and row for
    SmolLM2), so lower it for long prompts or generations on small machines.
    """

    def __init__(self, model: str, *, max_new_tokens: int = 128, temperature: float = 0.8, top_p: float = 0.95,
                 batch_size: int = 128, device: str = "cpu", dtype: str = "float32", greedy: bool = False,
                 shared_prefix: bool = True) -> None:
        check_sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, batch_size=batch_size)
        self.model_name = model
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.greedy = greedy or temperature == 0  # temperature 0 means greedy, as in vLLM
        self.model: Any = None
        self.tokenizer: Any = None
        self._eos_ids: set[int] = set()
        self._gen_config: Any = None
        self._cache_kwarg = "cache"
        self._logits_to_keep = False
        self.share_prompt = True  # prefill each prompt once for its n samples (see _generate_batch)
        self.preallocate = True  # key/value buffers written in place (backends/kv_cache.py), not concatenated
        self.shared_prefix = shared_prefix  # a prompt's keys/values held and read once for its samples
        self.onednn = True  # float32 linear layers on the CPU through oneDNN (backends/onednn.py), set before setup()
        # Continuous batching (backends/decode.py), for models whose layers are all full attention. Off by
        # default: on a 2-core CPU it measured 0.91x (32 slots) to 0.99-1.12x (128 slots) model.generate in
        # length-sorted fixed batches (bench/generate.py), where most rows run to max_new_tokens anyway.
        self.continuous = False
        self._slots = False
        self._prefix = False
        self.progress: Callable[[int], None] | None = None  # told the rows of each finished batch

    def setup(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from pvar.backends.assets import hub_error, resolve_policy

        if self.model is not None:
            return
        path = resolve_policy(self.model_name)
        try:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype="auto" if self.dtype == "auto" else getattr(torch, self.dtype))
        except (OSError, ValueError) as exc:
            raise hub_error(self.model_name, "model", exc) from None
        if str(self.device).startswith("cpu"):
            from pvar.backends.allocator import keep_freed_memory

            keep_freed_memory()
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        model.to(self.device).eval()
        if self.onednn:
            from pvar.backends import onednn

            onednn.enable(model)  # on the CPU, float32 products through oneDNN (2x MKL's rate on AMD AVX-512)

        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tok.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        if not eos_ids:
            raise ValueError(f"{path}: neither the generation config nor the tokenizer names an EOS token")
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0]

        cfg = model.generation_config.__class__.from_dict(model.generation_config.to_dict())
        cfg.do_sample = False
        cfg.num_beams = 1
        cfg.num_return_sequences = 1
        cfg.max_new_tokens = self.max_new_tokens
        cfg.max_length = None
        cfg.pad_token_id = pad
        cfg.eos_token_id = eos_ids
        cfg.use_cache = True
        # Sampling and shaping happen in GumbelSampler only: neutralise every processor HF would add.
        for name in ("temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty",
                     "no_repeat_ngram_size", "min_length", "min_new_tokens", "bad_words_ids", "suppress_tokens",
                     "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id", "sequence_bias",
                     "exponential_decay_length_penalty", "guidance_scale", "epsilon_cutoff", "eta_cutoff"):
            if hasattr(cfg, name):
                setattr(cfg, name, None)
        self.model, self.tokenizer, self._gen_config, self._eos_ids = model, tok, cfg, set(eos_ids)
        # transformers 5 renamed `past_key_values` to `cache`; support both spellings.
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._logits_to_keep = "logits_to_keep" in params
        from pvar.backends.decode import supports_slots

        self._slots = supports_slots(model)
        if self._slots:
            from pvar.backends import shared_prefix

            self._prefix = shared_prefix.enable(model)

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt as the model sees it (chat template with generation prompt if any)."""
        return generation_prompt_ids(self.tokenizer, prompt, max_new_tokens=self.max_new_tokens,
                                     limit=getattr(self.model.config, "max_position_embeddings", None))

    def generate(self, prompts: list[Prompt], n: int, seeds: list[int], start: int = 0) -> Generation:
        """Samples ``start .. start + n - 1`` of each prompt; sample j of prompt i depends only on
        (seeds[i], j) and the model, so asking for more samples later never changes earlier ones."""
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
        if n < 1:
            raise ValueError(f"n must be >= 1, not {n}")
        if self.model is None:
            self.setup()
        full = [prompt_token_ids(self.tokenizer, p) for p in prompts]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        ids = [keep_end(x, limit=limit, max_new_tokens=self.max_new_tokens) for x in full]
        cut = sum(len(a) != len(b) for a, b in zip(full, ids, strict=True))
        texts: list[list[str]] = [[""] * n for _ in prompts]
        stopped: list[list[bool]] = [[False] * n for _ in prompts]
        pairs = [(i, j) for i in range(len(prompts)) for j in range(start, start + n)]
        if self.continuous and self._slots:
            gen = self._generate_slots(pairs, ids, seeds, start, texts, stopped)
            gen.truncated = cut
            return gen
        # One row per (prompt, sample); sorting by length keeps padding (wasted compute) small.
        rows = sorted(pairs, key=lambda r: (len(ids[r[0]]), r))
        total = 0
        for at in range(0, len(rows), self.batch_size):
            batch = rows[at:at + self.batch_size]
            out, counts, ended = self._generate_batch(batch, ids, [sample_seed(seeds[i], j) for i, j in batch])
            for (i, j), text, count, end in zip(batch, out, counts, ended, strict=True):
                texts[i][j - start], stopped[i][j - start] = text, end
                total += count
            if self.progress is not None:
                self.progress(len(batch))
        return Generation(texts, stopped, total, truncated=cut)

    def _generate_slots(self, pairs: list[tuple[int, int]], ids: list[list[int]], seeds: list[int], start: int,
                        texts: list[list[str]], stopped: list[list[bool]]) -> Generation:
        """All rows through `decode`: ``batch_size`` slots, refilled as rows finish."""

        from pvar.backends.decode import decode

        sampler = GumbelSampler([], temperature=self.temperature or 1.0, top_p=self.top_p, greedy=self.greedy)
        rows = [(i, sample_seed(seeds[i], j)) for i, j in pairs]
        out = decode(self.model, ids, rows, slots=self.batch_size, max_new_tokens=self.max_new_tokens,
                     eos=self._eos_ids, pad=self._gen_config.pad_token_id, choose=sampler.choose, device=self.device,
                     share_prompt=self.share_prompt, cache_kwarg=self._cache_kwarg,
                     logits_to_keep=self._logits_to_keep)
        decoded = self.tokenizer.batch_decode(out.ids, skip_special_tokens=True)
        for (i, j), text, end in zip(pairs, decoded, out.stopped, strict=True):
            texts[i][j - start], stopped[i][j - start] = text.strip(), end
        return Generation(texts, stopped, sum(out.counts))

    def _generate_batch(self, rows: list[tuple[int, int]], ids: list[list[int]],
                        row_seeds: list[int]) -> tuple[list[str], list[int], list[bool]]:
        """One left-padded ``model.generate`` call over ``rows`` (prompt, sample), adjacent by prompt.

        With ``share_prompt`` the prompts are run once each (all but their last token) and the KV
        cache is copied to their samples' rows: the n samples of a prompt do not pay its prefill n
        times. Returns the texts, the token counts up to and including EOS, and the EOS flags.
        """
        import torch
        from transformers import LogitsProcessorList

        from pvar.backends.shared_prefix import active, shared_prefix_cache, uniform_groups

        prompts = list(dict.fromkeys(i for i, _ in rows))  # distinct prompts, in row order
        slot = {i: k for k, i in enumerate(prompts)}
        width = max(len(ids[i]) for i in prompts)
        pad = self._gen_config.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids[i])) + ids[i] for i in prompts], dtype=torch.long,
                                 device=self.device)  # left-padded
        mask = torch.tensor([[0] * (width - len(ids[i])) + [1] * len(ids[i]) for i in prompts], dtype=torch.long,
                            device=self.device)
        index = torch.tensor([slot[i] for i, _ in rows], device=self.device)
        kwargs: dict[str, Any] = {}
        self._gen_config.max_new_tokens = self.max_new_tokens  # may have been changed since setup()
        sampler = GumbelSampler(row_seeds, temperature=self.temperature or 1.0, top_p=self.top_p, greedy=self.greedy)
        attention: Any = contextlib.nullcontext()
        with torch.inference_mode():
            shared = self.share_prompt and width > 1 and len(prompts) < len(rows)
            group = shared and self.shared_prefix and self._prefix and self.preallocate and uniform_groups(
                index.tolist())
            if group:  # every prompt has the same number of rows: its keys/values are held once
                cache = shared_prefix_cache(self.model, input_ids[:, :-1], mask[:, :-1], group,
                                            self.max_new_tokens + 1, cache_kwarg=self._cache_kwarg,
                                            logits_to_keep=self._logits_to_keep)
                kwargs[self._cache_kwarg], attention = cache, active(cache)
            elif self._slots and self.preallocate:  # full attention only: the buffers know no sliding window
                from pvar.backends.kv_cache import preallocated_cache, prefill

                capacity = width + self.max_new_tokens
                kwargs[self._cache_kwarg] = prefill(
                    self.model, input_ids[:, :-1], mask[:, :-1], index, capacity, cache_kwarg=self._cache_kwarg,
                    logits_to_keep=self._logits_to_keep) if shared else preallocated_cache(self.model, capacity)
            elif shared:
                kwargs[self._cache_kwarg] = self._prompt_cache(input_ids[:, :-1], mask[:, :-1], index)
            with attention:
                out = self.model.generate(
                    input_ids=input_ids[index], attention_mask=mask[index], generation_config=self._gen_config,
                    logits_processor=LogitsProcessorList([sampler]), **kwargs,
                )
        new = out[:, width:].cpu()
        is_eos = torch.zeros_like(new, dtype=torch.bool)
        for e in self._eos_ids:
            is_eos |= new == e
        has_eos = is_eos.any(dim=1)
        first = torch.where(has_eos, is_eos.int().argmax(dim=1), new.shape[1])
        counts = torch.where(has_eos, first + 1, first).tolist()
        ends = first.tolist()
        seqs = [new[r, :ends[r]].tolist() for r in range(len(rows))]
        texts = [t.strip() for t in self.tokenizer.batch_decode(seqs, skip_special_tokens=True)]
        return texts, counts, has_eos.tolist()

    def _prompt_cache(self, input_ids: torch.Tensor, mask: torch.Tensor, index: torch.Tensor) -> Any:
        """KV cache of the distinct prompts (left-padded), with its batch rows repeated as ``index`` says."""
        from pvar.backends.kv_cache import prompt_cache

        cache = prompt_cache(self.model, input_ids, mask, cache_kwarg=self._cache_kwarg,
                             logits_to_keep=self._logits_to_keep)
        cache.batch_select_indices(index)
        return cache
