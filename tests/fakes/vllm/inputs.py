"""``vllm.inputs.TokensPrompt``: a TypedDict in vLLM (vllm/inputs/data.py)."""

from typing import TypedDict


class TokensPrompt(TypedDict):
    prompt_token_ids: list[int]
