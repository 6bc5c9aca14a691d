"""Qwen2 / Qwen2.5 (Qwen2ForCausalLM): the Llama block with q/k/v biases; llama.cpp's `qwen2` architecture
uses NeoX-style RoPE, so no Q/K row permutation."""
from __future__ import annotations

from typing import Any

from .base import Family
from .llama import block, llama_rules, parse


def _hf_config(key: Any, args: Any) -> dict[str, Any]:
    return {"attention_bias": True}


QWEN2 = Family("qwen2", ("Qwen2ForCausalLM",), "qwen2", "qwen2", parse, lambda a: llama_rules(permute=False, bias=True),
               block, hf_config=_hf_config)
FAMILIES = (QWEN2,)
