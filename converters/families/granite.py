"""Granite 3.x (GraniteForCausalLM): the Llama block with four multipliers: embeddings times
embedding_multiplier, attention scale attention_multiplier (instead of 1/sqrt(head_dim)), each residual branch
times residual_multiplier, logits divided by logits_scaling. llama.cpp `granite`: Q/K rows permuted as llama's."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..hf import ModelConfig
from .base import Args, Family, Ops
from .llama import attn_spec, llama_rules


@dataclass(frozen=True)
class GraniteArgs(Args):
    embedding_multiplier: float = 1.0
    attention_multiplier: float = 1.0
    residual_multiplier: float = 1.0
    logits_scaling: float = 1.0


def parse(c: ModelConfig) -> GraniteArgs:
    r = c.raw
    return GraniteArgs(**Args.common(c), embedding_multiplier=float(r.get("embedding_multiplier", 1.0)),
                       attention_multiplier=float(r.get("attention_multiplier", c.head_dim ** -0.5)),
                       residual_multiplier=float(r.get("residual_multiplier", 1.0)),
                       logits_scaling=float(r.get("logits_scaling", 1.0)))


def block(ops: Ops[Any], a: GraniteArgs, i: int, w: dict[str, np.ndarray], h: Any, delta: Any) -> tuple[Any, Any]:
    x, h = ops.add_norm(h, delta, w["attn_norm.weight"], a.eps, f"layers.{i}.input_layernorm")
    q, k, v = ops.linear(x, f"layers.{i}.attn.qkv_proj", [w["attn_q.weight"], w["attn_k.weight"], w["attn_v.weight"]])
    attn = ops.attention(i, q, k, v, replace(attn_spec(a), scale=a.attention_multiplier))
    (o,) = ops.linear(attn, f"layers.{i}.attn.o_proj", [w["attn_output.weight"]])
    x, h = ops.add_norm(h, ops.scale(o, a.residual_multiplier), w["ffn_norm.weight"], a.eps,
                        f"layers.{i}.post_attention_layernorm")
    gate, up = ops.linear(x, f"layers.{i}.mlp.gate_up_proj", [w["ffn_gate.weight"], w["ffn_up.weight"]])
    (down,) = ops.linear(ops.gated(gate, up, "silu"), f"layers.{i}.mlp.down_proj", [w["ffn_down.weight"]])
    return h, ops.scale(down, a.residual_multiplier)


def gguf_metadata(writer: Any, a: GraniteArgs) -> None:
    writer.add_attention_scale(a.attention_multiplier)
    writer.add_embedding_scale(a.embedding_multiplier)
    writer.add_residual_scale(a.residual_multiplier)
    writer.add_logit_scale(a.logits_scaling)


def hf_config(key: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    return {"attention_multiplier": float(key("attention.scale", cfg["head_dim"] ** -0.5)),
            "embedding_multiplier": float(key("embedding_scale", 1.0)),
            "residual_multiplier": float(key("residual_scale", 1.0)),
            "logits_scaling": float(key("logit_scale", 1.0))}


GRANITE = Family("granite", ("GraniteForCausalLM",), "granite", "granite", parse, lambda a: llama_rules(permute=True),
                 block, gguf_metadata=gguf_metadata, hf_config=hf_config,
                 embed_scale=lambda a: a.embedding_multiplier, logit_scale=lambda a: 1.0 / a.logits_scaling)
FAMILIES = (GRANITE,)
