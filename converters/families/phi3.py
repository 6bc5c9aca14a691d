"""Phi-3 / Phi-3.5 / Phi-4-mini (Phi3ForCausalLM): the Llama block with fused projections (qkv_proj rows
[q | k | v], gate_up_proj rows [gate | up]), partial rotary (partial_rotary_factor: Phi-4-mini rotates 3/4 of
each head) and LongRoPE (per-frequency long/short divisors + an attention factor on cos/sin).

llama.cpp (`phi3`) keeps both fused tensors (attn_qkv, ffn_up of 2*ffn rows), takes the LongRoPE divisors
as rope_factors_long/short tensors and picks them per context size (long when n_ctx exceeds
original_max_position_embeddings); HF and the ONNX graph pick them per sequence (long while past + new tokens
exceed it). The two agree whenever the context size and the sequence are on the same side of it. llama.cpp ignores Phi's sliding window
(disabled there); the ONNX graph follows config.json, so the two differ past `sliding_window` tokens when the
config sets one shorter than the context.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...errors import ConfigError
from ..hf import ModelConfig
from .base import Args, Family, Ops, TensorRule
from .llama import attn_spec

_L = "model.layers.{i}."


@dataclass(frozen=True)
class Phi3Args(Args):
    rotary_dim: int = 0
    original_max_positions: int = 0
    sliding_window: int | None = None

    @property
    def rope_dims(self) -> int:
        return self.rotary_dim


def parse(c: ModelConfig) -> Phi3Args:
    r = c.raw
    found = r.get("rope_scaling") or r.get("rope_parameters")
    rope: dict[str, Any] | None = found if isinstance(found, dict) else None
    partial = float(r.get("partial_rotary_factor") or (rope or {}).get("partial_rotary_factor") or 1.0)
    rotary = int(partial * c.hidden_size) // c.num_heads
    orig = int(r.get("original_max_position_embeddings") or (rope or {}).get("original_max_position_embeddings")
               or c.max_position_embeddings)
    scaling = None
    kind = (rope or {}).get("rope_type", (rope or {}).get("type"))
    if kind in ("longrope", "su") and rope is not None:
        long_f, short_f = rope.get("long_factor"), rope.get("short_factor")
        if not isinstance(long_f, list) or not isinstance(short_f, list) or not len(long_f) == len(short_f) == rotary // 2:
            raise ConfigError(f"longrope needs long_factor and short_factor lists of {rotary // 2} values")
        factor = c.max_position_embeddings / orig
        attn = rope.get("attention_factor") or (math.sqrt(1 + math.log(factor) / math.log(orig)) if factor > 1 else 1.0)
        scaling = {"rope_type": "longrope", "long_factor": long_f, "short_factor": short_f, "attention_factor": attn,
                   "original_max_position_embeddings": orig, "max_position_embeddings": c.max_position_embeddings}
    elif kind not in (None, "default"):
        scaling = c.rope_scaling
    common = {**Args.common(c), "rope_scaling": scaling}
    window = r.get("sliding_window")
    return Phi3Args(**common, rotary_dim=rotary, original_max_positions=orig,
                    sliding_window=int(window) if window else None)


def rules(a: Phi3Args) -> tuple[TensorRule, ...]:
    return (
        TensorRule("model.embed_tokens.weight", "token_embd.weight", lambda a: (a.vocab, a.hidden)),
        TensorRule("model.norm.weight", "output_norm.weight", lambda a: (a.hidden,)),
        TensorRule("lm_head.weight", "output.weight", lambda a: (a.vocab, a.hidden), optional=True),
        TensorRule(_L + "input_layernorm.weight", "blk.{i}.attn_norm.weight", lambda a: (a.hidden,)),
        TensorRule(_L + "self_attn.qkv_proj.weight", "blk.{i}.attn_qkv.weight",
                   lambda a: (a.q_rows + 2 * a.kv_rows, a.hidden)),
        TensorRule(_L + "self_attn.o_proj.weight", "blk.{i}.attn_output.weight", lambda a: (a.hidden, a.q_rows)),
        TensorRule(_L + "post_attention_layernorm.weight", "blk.{i}.ffn_norm.weight", lambda a: (a.hidden,)),
        TensorRule(_L + "mlp.gate_up_proj.weight", "blk.{i}.ffn_up.weight", lambda a: (2 * a.ffn, a.hidden)),
        TensorRule(_L + "mlp.down_proj.weight", "blk.{i}.ffn_down.weight", lambda a: (a.hidden, a.ffn)),
    )


def block(ops: Ops[Any], a: Phi3Args, i: int, w: dict[str, np.ndarray], h: Any, delta: Any) -> tuple[Any, Any]:
    x, h = ops.add_norm(h, delta, w["attn_norm.weight"], a.eps, f"layers.{i}.input_layernorm")
    qkv, q_end = w["attn_qkv.weight"], a.q_rows
    q, k, v = ops.linear(x, f"layers.{i}.attn.qkv_proj",
                         [qkv[:q_end], qkv[q_end:q_end + a.kv_rows], qkv[q_end + a.kv_rows:]])
    spec = replace(attn_spec(a), rotary=a.rotary_dim, window=a.sliding_window)
    attn = ops.attention(i, q, k, v, spec)
    (o,) = ops.linear(attn, f"layers.{i}.attn.o_proj", [w["attn_output.weight"]])
    x, h = ops.add_norm(h, o, w["ffn_norm.weight"], a.eps, f"layers.{i}.post_attention_layernorm")
    gate_up = w["ffn_up.weight"]
    gate, up = ops.linear(x, f"layers.{i}.mlp.gate_up_proj", [gate_up[:a.ffn], gate_up[a.ffn:]])
    (down,) = ops.linear(ops.gated(gate, up, "silu"), f"layers.{i}.mlp.down_proj", [w["ffn_down.weight"]])
    return h, down


def gguf_metadata(writer: Any, a: Phi3Args) -> None:
    writer.add_rope_scaling_orig_ctx_len(a.original_max_positions)
    writer.add_sliding_window(a.sliding_window or 0)
    if a.rope_scaling is not None and a.rope_scaling.get("rope_type") == "longrope":
        writer.add_rope_scaling_attn_factors(float(a.rope_scaling["attention_factor"]))


def gguf_tensors(a: Phi3Args) -> list[tuple[str, np.ndarray]]:
    s = a.rope_scaling
    if s is None or s.get("rope_type") != "longrope":
        return []
    return [("rope_factors_long.weight", np.asarray(s["long_factor"], np.float32)),
            ("rope_factors_short.weight", np.asarray(s["short_factor"], np.float32))]


def hf_config(key: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    rot = int(key("rope.dimension_count", cfg["head_dim"]))
    out: dict[str, Any] = {"partial_rotary_factor": rot / cfg["head_dim"],
                           "original_max_position_embeddings": int(key("rope.scaling.original_context_length",
                                                                       cfg["max_position_embeddings"]))}
    window = key("attention.sliding_window", 0)
    out["sliding_window"] = int(window) or None
    return out


PHI3 = Family("phi3", ("Phi3ForCausalLM",), "phi3", "phi3", parse, rules, block, gguf_metadata=gguf_metadata,
              hf_config=hf_config, gguf_tensors=gguf_tensors, rope_kinds=("default", "linear", "longrope"))
FAMILIES = (PHI3,)
