"""OLMo 2 (Olmo2ForCausalLM): no norm before attention or MLP; RMSNorms after them instead
(post_attention_layernorm, post_feedforward_layernorm), and q/k RMSNorms over the whole projection
(q_rows and kv_rows wide, not per head). llama.cpp `olmo2` uses NeoX-style RoPE: no permutation."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .base import Args, Family, Ops, TensorRule
from .llama import attn_spec, parse

_L = "model.layers.{i}."


def post_norm_rules(q_norm: Callable[[Any], tuple[int, ...]], k_norm: Callable[[Any], tuple[int, ...]]
                    ) -> tuple[TensorRule, ...]:
    """The post-norm layout (OLMo 2, EXAONE 4.0): norms after attention and MLP, q/k norms of the given shapes."""
    return (
        TensorRule("model.embed_tokens.weight", "token_embd.weight", lambda a: (a.vocab, a.hidden)),
        TensorRule("model.norm.weight", "output_norm.weight", lambda a: (a.hidden,)),
        TensorRule("lm_head.weight", "output.weight", lambda a: (a.vocab, a.hidden), optional=True),
        TensorRule(_L + "self_attn.q_proj.weight", "blk.{i}.attn_q.weight", lambda a: (a.q_rows, a.hidden)),
        TensorRule(_L + "self_attn.k_proj.weight", "blk.{i}.attn_k.weight", lambda a: (a.kv_rows, a.hidden)),
        TensorRule(_L + "self_attn.v_proj.weight", "blk.{i}.attn_v.weight", lambda a: (a.kv_rows, a.hidden)),
        TensorRule(_L + "self_attn.o_proj.weight", "blk.{i}.attn_output.weight", lambda a: (a.hidden, a.q_rows)),
        TensorRule(_L + "self_attn.q_norm.weight", "blk.{i}.attn_q_norm.weight", q_norm),
        TensorRule(_L + "self_attn.k_norm.weight", "blk.{i}.attn_k_norm.weight", k_norm),
        TensorRule(_L + "post_attention_layernorm.weight", "blk.{i}.post_attention_norm.weight", lambda a: (a.hidden,)),
        TensorRule(_L + "post_feedforward_layernorm.weight", "blk.{i}.post_ffw_norm.weight", lambda a: (a.hidden,)),
        TensorRule(_L + "mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight", lambda a: (a.ffn, a.hidden)),
        TensorRule(_L + "mlp.up_proj.weight", "blk.{i}.ffn_up.weight", lambda a: (a.ffn, a.hidden)),
        TensorRule(_L + "mlp.down_proj.weight", "blk.{i}.ffn_down.weight", lambda a: (a.hidden, a.ffn)),
    )


def rules(a: Args) -> tuple[TensorRule, ...]:
    return post_norm_rules(lambda a: (a.q_rows,), lambda a: (a.kv_rows,))  # over the whole projection


def block(ops: Ops[Any], a: Args, i: int, w: dict[str, np.ndarray], h: Any, delta: Any) -> tuple[Any, Any]:
    if delta is not None:
        h = ops.add(h, delta)
    q, k, v = ops.linear(h, f"layers.{i}.attn.qkv_proj", [w["attn_q.weight"], w["attn_k.weight"], w["attn_v.weight"]])
    q = ops.norm(q, w["attn_q_norm.weight"], a.eps, f"layers.{i}.attn.q_norm")
    k = ops.norm(k, w["attn_k_norm.weight"], a.eps, f"layers.{i}.attn.k_norm")
    attn = ops.attention(i, q, k, v, attn_spec(a))
    (o,) = ops.linear(attn, f"layers.{i}.attn.o_proj", [w["attn_output.weight"]])
    h = ops.add(h, ops.norm(o, w["post_attention_norm.weight"], a.eps, f"layers.{i}.post_attention_layernorm"))
    gate, up = ops.linear(h, f"layers.{i}.mlp.gate_up_proj", [w["ffn_gate.weight"], w["ffn_up.weight"]])
    (down,) = ops.linear(ops.gated(gate, up, "silu"), f"layers.{i}.mlp.down_proj", [w["ffn_down.weight"]])
    return h, ops.norm(down, w["post_ffw_norm.weight"], a.eps, f"layers.{i}.post_feedforward_layernorm")


OLMO2 = Family("olmo2", ("Olmo2ForCausalLM",), "olmo2", "olmo2", parse, rules, block)
FAMILIES = (OLMO2,)
