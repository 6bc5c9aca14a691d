"""Qwen3 (Qwen3ForCausalLM): the Llama block without biases, plus an RMSNorm over each head of q and k
before RoPE (weights [head_dim]); head_dim is set explicitly and heads*head_dim may differ from hidden.
llama.cpp's `qwen3` architecture uses NeoX-style RoPE: no Q/K row permutation."""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Args, Family, Ops, TensorRule
from .llama import attn_spec, llama_rules, parse

_P = "model.layers.{i}.self_attn."


def rules(a: Args) -> tuple[TensorRule, ...]:
    return llama_rules(permute=False) + (
        TensorRule(_P + "q_norm.weight", "blk.{i}.attn_q_norm.weight", lambda a: (a.head_dim,)),
        TensorRule(_P + "k_norm.weight", "blk.{i}.attn_k_norm.weight", lambda a: (a.head_dim,)),
    )


def block(ops: Ops[Any], a: Args, i: int, w: dict[str, np.ndarray], h: Any, delta: Any) -> tuple[Any, Any]:
    x, h = ops.add_norm(h, delta, w["attn_norm.weight"], a.eps, f"layers.{i}.input_layernorm")
    q, k, v = ops.linear(x, f"layers.{i}.attn.qkv_proj", [w["attn_q.weight"], w["attn_k.weight"], w["attn_v.weight"]])
    q = ops.head_norm(q, w["attn_q_norm.weight"], a.eps, a.heads, f"layers.{i}.attn.q_norm")
    k = ops.head_norm(k, w["attn_k_norm.weight"], a.eps, a.kv_heads, f"layers.{i}.attn.k_norm")
    attn = ops.attention(i, q, k, v, attn_spec(a))
    (o,) = ops.linear(attn, f"layers.{i}.attn.o_proj", [w["attn_output.weight"]])
    x, h = ops.add_norm(h, o, w["ffn_norm.weight"], a.eps, f"layers.{i}.post_attention_layernorm")
    gate, up = ops.linear(x, f"layers.{i}.mlp.gate_up_proj", [w["ffn_gate.weight"], w["ffn_up.weight"]])
    (down,) = ops.linear(ops.gated(gate, up, "silu"), f"layers.{i}.mlp.down_proj", [w["ffn_down.weight"]])
    return h, down


QWEN3 = Family("qwen3", ("Qwen3ForCausalLM",), "qwen3", "qwen3", parse, rules, block)
FAMILIES = (QWEN3,)
