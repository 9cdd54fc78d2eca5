"""Per-response gradients of a causal LM and their Gram matrix (torch): what the theory check and
the gradient-signal diagnostic measure. The algebra on top is core/theory.py."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from pvar.backends.base import generation_prompt_ids
from pvar.errors import ConfigError

if TYPE_CHECKING:
    import torch

_GRAM_CHUNK = 1 << 22  # columns of the gradient matrix per float64 Gram update (~128 MB for n = 4)


def select_parameters(model: torch.nn.Module, spec: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The named parameters the gradient is taken over (see ``TheoryConfig.params``).

    'last-layers[:K]' keeps the parameters of the K highest-numbered blocks (names holding
    ``layers.N.``, ``h.N.``, ``blocks.N.`` or ``layer.N.``) plus unnumbered norms (the final norm);
    embeddings and a tied LM head stay out (they are the largest tensors).
    """
    named = list(model.named_parameters())
    if spec == "all":
        return named
    if spec.startswith("re:"):
        pattern = re.compile(spec[3:])
        chosen = [(n, p) for n, p in named if pattern.search(n)]
    else:
        k = int(spec.split(":", 1)[1]) if ":" in spec else 2
        block = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
        index = {n: int(m.group(1)) for n, _ in named if (m := block.search(n))}
        if not index:
            raise ConfigError(f"params: {spec!r} found no numbered blocks in {type(model).__name__}")
        top = max(index.values())
        chosen = [(n, p) for n, p in named
                  if (n in index and index[n] > top - k) or (n not in index and re.search(r"norm|ln_f", n))]
    if not chosen:
        raise ConfigError(f"params: {spec!r} selects no parameter of {type(model).__name__}")
    return chosen


def sequence_ids(tokenizer: Any, prompt: Any, response: str, *, max_length: int,
                 append_eos: bool = True) -> tuple[list[int], int]:
    """Token ids of chat-templated prompt + response, and the prompt's length in them.

    The prompt is rendered as the policy saw it when sampling (chat template with the generation
    prompt); the response follows as the assistant turn, closed by EOS as DPO trains on it. Over
    ``max_length`` the response is cut to leave at least one prompt token, then the prompt is cut
    from the left (its end holds the question and the assistant header).
    """
    prompt_ids = generation_prompt_ids(tokenizer, prompt)
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if append_eos and tokenizer.eos_token_id is not None:
        response_ids = [*response_ids, tokenizer.eos_token_id]
    if not prompt_ids:
        raise ValueError("the prompt renders to no tokens")
    response_ids = response_ids[: max_length - 1]
    prompt_ids = prompt_ids[len(prompt_ids) - min(len(prompt_ids), max_length - len(response_ids)):]
    return prompt_ids + response_ids, len(prompt_ids)


def sequence_logprob(model: torch.nn.Module, ids: list[int], n_prompt: int) -> torch.Tensor:
    """log π(response | prompt): the sum of the response tokens' log-probabilities (a 0-d tensor)."""
    import torch

    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits[0, n_prompt - 1 : -1].float()
    targets = input_ids[0, n_prompt:]
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).sum()


def batched_logprobs(model: torch.nn.Module, seqs: list[tuple[list[int], int]], *, batch_size: int = 8,
                     pad_id: int = 0) -> list[float]:
    """`sequence_logprob` of many (ids, prompt length) at once, without gradients: right-padded batches
    (padding after a sequence changes none of its positions), longest first, float32 log-softmax."""
    import torch

    device = next(model.parameters()).device
    out = [0.0] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
    with torch.no_grad():
        for at in range(0, len(order), batch_size):
            part = order[at:at + batch_size]
            width = max(len(seqs[i][0]) for i in part)
            ids = torch.tensor([seqs[i][0] + [pad_id] * (width - len(seqs[i][0])) for i in part], device=device)
            mask = torch.tensor([[1] * len(seqs[i][0]) + [0] * (width - len(seqs[i][0])) for i in part],
                                device=device)
            logits = model(input_ids=ids, attention_mask=mask).logits
            for row, i in enumerate(part):
                n_prompt, n = seqs[i][1], len(seqs[i][0])
                steps = torch.log_softmax(logits[row, n_prompt - 1:n - 1].float(), dim=-1)
                out[i] = float(steps.gather(-1, ids[row, n_prompt:n, None]).sum())
    return out


def response_gradients(model: torch.nn.Module, tokenizer: Any, params: list[torch.nn.Parameter], prompt: Any,
                       responses: list[str], *, max_length: int = 512, append_eos: bool = True,
                       ) -> tuple[torch.Tensor, list[int]]:
    """Flattened g_i = ∇ log π(y_i | x) over ``params``, one row per response (n × n_params, float32).

    One forward and one backward per response: a batched forward would make every backward pay
    for the whole batch. Also returns each response's token count.
    """
    import torch

    total = sum(p.numel() for p in params)
    out = torch.empty((len(responses), total), dtype=torch.float32, device=params[0].device)
    lengths = []
    for i, response in enumerate(responses):
        ids, n_prompt = sequence_ids(tokenizer, prompt, response, max_length=max_length, append_eos=append_eos)
        lengths.append(len(ids) - n_prompt)
        grads = torch.autograd.grad(sequence_logprob(model, ids, n_prompt), params, allow_unused=True)
        at = 0
        for p, g in zip(params, grads, strict=True):
            view = out[i, at : at + p.numel()]
            if g is None:  # a parameter the response does not reach (e.g. an unused position)
                view.zero_()
            else:
                view.copy_(g.reshape(-1))
            at += p.numel()
        del grads
    return out, lengths


def gram_matrix(grads: torch.Tensor) -> np.ndarray:
    """K = grads · gradsᵀ in float64, over column chunks (a float64 copy of all of them is 2× the memory)."""
    import torch

    n, total = grads.shape
    k = torch.zeros((n, n), dtype=torch.float64, device=grads.device)
    for start in range(0, total, _GRAM_CHUNK):
        chunk = grads[:, start : start + _GRAM_CHUNK].double()
        k += chunk @ chunk.T
    return k.cpu().numpy()


def load_policy(model: str, device: str = "auto", params: str = "all") -> tuple[Any, Any, list[Any], str]:
    """Model (eval, float32, gradients only where ``params`` says), tokenizer, parameters, device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pvar.backends.assets import resolve_policy

    path = resolve_policy(model)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(path)
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    from pvar.backends import onednn

    onednn.enable(policy)  # on the CPU, frozen float32 layers through oneDNN; the chosen parameters keep autograd
    chosen = select_parameters(policy, params)
    keep = {id(p) for _, p in chosen}
    for p in policy.parameters():
        p.requires_grad_(id(p) in keep)
    return policy, tokenizer, [p for _, p in chosen], device

