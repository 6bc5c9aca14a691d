"""Llama (LlamaForCausalLM) and Mistral (MistralForCausalLM): RMSNorm, rotate-half RoPE, GQA, SwiGLU.

llama.cpp's `llama` architecture wants Q and K rows interleaved pair-wise (its RoPE rotates adjacent pairs),
hence the permutation on the GGUF side. Qwen2 (qwen2.py) reuses these rules and this block with biases.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..hf import ModelConfig
from .base import Args, AttnSpec, Family, Ops, TensorRule

# (HF name, GGUF name, shape) of the Llama layout; shapes in numpy order [out, in]. From LlamaForCausalLM.
def llama_rules(permute: bool, bias: bool = False) -> tuple[TensorRule, ...]:
    p = "model.layers.{i}."
    rules = [
        TensorRule("model.embed_tokens.weight", "token_embd.weight", lambda a: (a.vocab, a.hidden)),
        TensorRule("model.norm.weight", "output_norm.weight", lambda a: (a.hidden,)),
        TensorRule("lm_head.weight", "output.weight", lambda a: (a.vocab, a.hidden), optional=True),
        TensorRule(p + "input_layernorm.weight", "blk.{i}.attn_norm.weight", lambda a: (a.hidden,)),
        TensorRule(p + "self_attn.q_proj.weight", "blk.{i}.attn_q.weight", lambda a: (a.q_rows, a.hidden),
                   permute="q" if permute else None),
        TensorRule(p + "self_attn.k_proj.weight", "blk.{i}.attn_k.weight", lambda a: (a.kv_rows, a.hidden),
                   permute="k" if permute else None),
        TensorRule(p + "self_attn.v_proj.weight", "blk.{i}.attn_v.weight", lambda a: (a.kv_rows, a.hidden)),
        TensorRule(p + "self_attn.o_proj.weight", "blk.{i}.attn_output.weight", lambda a: (a.hidden, a.q_rows)),
        TensorRule(p + "post_attention_layernorm.weight", "blk.{i}.ffn_norm.weight", lambda a: (a.hidden,)),
        TensorRule(p + "mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight", lambda a: (a.ffn, a.hidden)),
        TensorRule(p + "mlp.up_proj.weight", "blk.{i}.ffn_up.weight", lambda a: (a.ffn, a.hidden)),
        TensorRule(p + "mlp.down_proj.weight", "blk.{i}.ffn_down.weight", lambda a: (a.hidden, a.ffn)),
    ]
    if bias:  # Qwen2ForCausalLM: attention projections carry biases
        rules += [
            TensorRule(p + "self_attn.q_proj.bias", "blk.{i}.attn_q.bias", lambda a: (a.q_rows,),
                       permute="q" if permute else None),
            TensorRule(p + "self_attn.k_proj.bias", "blk.{i}.attn_k.bias", lambda a: (a.kv_rows,),
                       permute="k" if permute else None),
            TensorRule(p + "self_attn.v_proj.bias", "blk.{i}.attn_v.bias", lambda a: (a.kv_rows,)),
        ]
    return tuple(rules)


def parse(c: ModelConfig) -> Args:
    return Args(**Args.common(c))


def attn_spec(a: Args) -> AttnSpec:
    return AttnSpec(a.heads, a.kv_heads, a.head_dim, a.head_dim ** -0.5, a.rope_theta, a.rope_scaling)


def block(ops: Ops[Any], a: Args, i: int, w: dict[str, np.ndarray], h: Any, delta: Any) -> tuple[Any, Any]:
    """One pre-norm decoder layer. h: the residual stream [B, S, D]; delta: the previous layer's output not
    yet added to it (so the add and the next norm can fuse). Returns the new (h, delta)."""
    x, h = ops.add_norm(h, delta, w["attn_norm.weight"], a.eps, f"layers.{i}.input_layernorm")
    q, k, v = ops.linear(x, f"layers.{i}.attn.qkv_proj", [w["attn_q.weight"], w["attn_k.weight"], w["attn_v.weight"]],
                         [w.get("attn_q.bias"), w.get("attn_k.bias"), w.get("attn_v.bias")])
    attn = ops.attention(i, q, k, v, attn_spec(a))
    (o,) = ops.linear(attn, f"layers.{i}.attn.o_proj", [w["attn_output.weight"]])
    x, h = ops.add_norm(h, o, w["ffn_norm.weight"], a.eps, f"layers.{i}.post_attention_layernorm")
    gate, up = ops.linear(x, f"layers.{i}.mlp.gate_up_proj", [w["ffn_gate.weight"], w["ffn_up.weight"]])
    (down,) = ops.linear(ops.gated(gate, up, "silu"), f"layers.{i}.mlp.down_proj", [w["ffn_down.weight"]])
    return h, down


LLAMA = Family("llama", ("LlamaForCausalLM",), "llama", "llama", parse, lambda a: llama_rules(permute=True), block)
MISTRAL = Family("mistral", ("MistralForCausalLM",), "llama", "mistral", parse,
                 lambda a: llama_rules(permute=True), block, rebuilds_gguf=False)   # a llama GGUF rebuilds as Llama
FAMILIES = (LLAMA, MISTRAL)
