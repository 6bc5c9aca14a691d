"""Gemma 2 (Gemma2ForCausalLM): RMSNorm times (1 + weight), a norm before and after both attention and MLP,
embeddings scaled by sqrt(hidden), GELU-tanh gated MLP, query scale query_pre_attn_scalar**-0.5, sliding-window
layers alternating with global ones, attention and final logit soft-capping. Tied head.

llama.cpp (`gemma2`) scales queries by 1/sqrt(head_dim) (1/sqrt(hidden/heads) for the 46-layer 27B) whatever
query_pre_attn_scalar says, so the ratio is folded into the weights feeding q: every form then agrees.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ConfigError
from ..hf import ModelConfig
from .base import Args, AttnSpec, Family, Ops, TensorRule, minus_one, plus_one, text_config

_L = "model.layers.{i}."


@dataclass(frozen=True)
class GemmaArgs(Args):
    query_pre_attn_scalar: float = 0.0
    sliding_window: int | None = None
    swa_layers: tuple[bool, ...] = ()          # True where the layer attends over the sliding window only
    rope_local_theta: float = 10000.0          # RoPE base of the sliding layers (no scaling there)
    attn_softcap: float | None = None
    final_softcap: float | None = None
    llama_scale: float = 1.0                   # the query scale llama.cpp applies

    @property
    def q_fold(self) -> float:
        """query_pre_attn_scalar**-0.5 / llama.cpp's scale: multiplies the weights feeding q."""
        return (self.query_pre_attn_scalar ** -0.5) / self.llama_scale


SWA_PERIOD = 2     # llama.cpp's gemma2: every other layer global


def layer_pattern(c: ModelConfig, default_period: int) -> tuple[bool, ...]:
    """Sliding (True) or global per layer, from `layer_types` or a period (every period-th layer is global)."""
    raw = text_config(c)
    types = raw.get("layer_types")
    if isinstance(types, list):
        if len(types) != c.num_layers or not set(types) <= {"sliding_attention", "full_attention"}:
            raise ConfigError(f"layer_types must list {c.num_layers} of 'sliding_attention'/'full_attention'")
        return tuple(t == "sliding_attention" for t in types)
    period = int(raw.get("sliding_window_pattern") or raw.get("_sliding_window_pattern") or default_period)
    return tuple(bool((i + 1) % period) for i in range(c.num_layers))


def gemma_args(c: ModelConfig, *, default_period: int, big_layers: int, theta: float, local_theta: float,
               scaling: dict[str, Any] | None) -> GemmaArgs:
    raw = text_config(c)
    common = Args.common(c)
    common.update(rope_theta=theta, rope_scaling=scaling, tied=True)
    window = raw.get("sliding_window")
    swa = layer_pattern(c, default_period) if window else tuple(False for _ in range(c.num_layers))
    llama_scale = (1 / math.sqrt(c.hidden_size / c.num_heads) if c.num_layers == big_layers
                   else 1 / math.sqrt(c.head_dim))
    return GemmaArgs(**common, query_pre_attn_scalar=float(raw.get("query_pre_attn_scalar") or c.head_dim),
                     sliding_window=int(window) if window else None, swa_layers=swa, rope_local_theta=local_theta,
                     attn_softcap=raw.get("attn_logit_softcapping"), final_softcap=raw.get("final_logit_softcapping"),
                     llama_scale=llama_scale)


def parse(c: ModelConfig) -> GemmaArgs:
    raw = text_config(c)
    act = raw.get("hidden_activation") or raw.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in ("gelu_pytorch_tanh", "gelu"):
        raise ConfigError(f"Gemma activation {act!r} is not supported (gelu_pytorch_tanh expected)")
    return gemma_args(c, default_period=SWA_PERIOD, big_layers=46, theta=c.rope_theta, local_theta=c.rope_theta,
                      scaling=c.rope_scaling)


def _norm(hf: str, gg: str) -> TensorRule:
    return TensorRule(hf, gg, lambda a: (a.hidden,), to_canon=plus_one, from_canon=minus_one)


def _fold(w: np.ndarray, a: GemmaArgs) -> np.ndarray:
    return np.asarray(w, np.float32) * np.float32(a.q_fold)


def _unfold(w: np.ndarray, a: GemmaArgs) -> np.ndarray:
    return np.asarray(w, np.float32) / np.float32(a.q_fold)


def gemma_rules(fold_q_into_weight: bool) -> tuple[TensorRule, ...]:
    """The Gemma 2/3 layout (HF names from Gemma2ForCausalLM / Gemma3ForCausalLM)."""
    q_fold: dict[str, Any] = dict(to_canon=_fold, from_canon=_unfold) if fold_q_into_weight else {}
    return (
        TensorRule("model.embed_tokens.weight", "token_embd.weight", lambda a: (a.vocab, a.hidden)),
        _norm("model.norm.weight", "output_norm.weight"),
        _norm(_L + "input_layernorm.weight", "blk.{i}.attn_norm.weight"),
        TensorRule(_L + "self_attn.q_proj.weight", "blk.{i}.attn_q.weight", lambda a: (a.q_rows, a.hidden), **q_fold),
        TensorRule(_L + "self_attn.k_proj.weight", "blk.{i}.attn_k.weight", lambda a: (a.kv_rows, a.hidden)),
        TensorRule(_L + "self_attn.v_proj.weight", "blk.{i}.attn_v.weight", lambda a: (a.kv_rows, a.hidden)),
        TensorRule(_L + "self_attn.o_proj.weight", "blk.{i}.attn_output.weight", lambda a: (a.hidden, a.q_rows)),
        _norm(_L + "post_attention_layernorm.weight", "blk.{i}.post_attention_norm.weight"),
        _norm(_L + "pre_feedforward_layernorm.weight", "blk.{i}.ffn_norm.weight"),
        _norm(_L + "post_feedforward_layernorm.weight", "blk.{i}.post_ffw_norm.weight"),
        TensorRule(_L + "mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight", lambda a: (a.ffn, a.hidden)),
        TensorRule(_L + "mlp.up_proj.weight", "blk.{i}.ffn_up.weight", lambda a: (a.ffn, a.hidden)),
        TensorRule(_L + "mlp.down_proj.weight", "blk.{i}.ffn_down.weight", lambda a: (a.hidden, a.ffn)),
    )


def attn_spec(a: GemmaArgs, i: int) -> AttnSpec:
    if a.swa_layers[i]:
        return AttnSpec(a.heads, a.kv_heads, a.head_dim, a.llama_scale, a.rope_local_theta, None,
                        window=a.sliding_window, softcap=a.attn_softcap)
    return AttnSpec(a.heads, a.kv_heads, a.head_dim, a.llama_scale, a.rope_theta, a.rope_scaling,
                    softcap=a.attn_softcap)


def block(ops: Ops[Any], a: GemmaArgs, i: int, w: dict[str, np.ndarray], h: Any, delta: Any) -> tuple[Any, Any]:
    """Gemma 2 and 3: pre and post norms around attention and MLP; Gemma 3 adds per-head q/k norms."""
    x, h = ops.add_norm(h, delta, w["attn_norm.weight"], a.eps, f"layers.{i}.input_layernorm")
    q, k, v = ops.linear(x, f"layers.{i}.attn.qkv_proj", [w["attn_q.weight"], w["attn_k.weight"], w["attn_v.weight"]])
    if "attn_q_norm.weight" in w:
        q = ops.head_norm(q, w["attn_q_norm.weight"], a.eps, a.heads, f"layers.{i}.attn.q_norm")
        k = ops.head_norm(k, w["attn_k_norm.weight"], a.eps, a.kv_heads, f"layers.{i}.attn.k_norm")
    attn = ops.attention(i, q, k, v, attn_spec(a, i))
    (o,) = ops.linear(attn, f"layers.{i}.attn.o_proj", [w["attn_output.weight"]])
    o = ops.norm(o, w["post_attention_norm.weight"], a.eps, f"layers.{i}.post_attention_layernorm")
    x, h = ops.add_norm(h, o, w["ffn_norm.weight"], a.eps, f"layers.{i}.pre_feedforward_layernorm")
    gate, up = ops.linear(x, f"layers.{i}.mlp.gate_up_proj", [w["ffn_gate.weight"], w["ffn_up.weight"]])
    (down,) = ops.linear(ops.gated(gate, up, "gelu_tanh"), f"layers.{i}.mlp.down_proj", [w["ffn_down.weight"]])
    return h, ops.norm(down, w["post_ffw_norm.weight"], a.eps, f"layers.{i}.post_feedforward_layernorm")


def gguf_metadata(writer: Any, a: GemmaArgs) -> None:
    if a.head_dim == a.hidden // a.heads:     # the common writer adds them only when they differ
        writer.add_key_length(a.head_dim)
        writer.add_value_length(a.head_dim)
    if a.sliding_window:
        writer.add_sliding_window(a.sliding_window)
        writer.add_sliding_window_pattern(list(a.swa_layers))
        writer.add_rope_freq_base_swa(a.rope_local_theta)
    if a.attn_softcap:
        writer.add_attn_logit_softcapping(float(a.attn_softcap))
    if a.final_softcap:
        writer.add_final_logit_softcapping(float(a.final_softcap))


def hf_config(key: Any, cfg: dict[str, Any], local_theta: float | None = None) -> dict[str, Any]:
    """Gemma keys rebuilt from GGUF metadata (the query scale is folded into the weights: scalar = llama's).
    local_theta: llama.cpp's RoPE base for sliding layers when the file has no rope.freq_base_swa (Gemma 2:
    the global base; Gemma 3: 10000)."""
    layers, hidden, heads = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"]
    big = layers == 46 if cfg["model_type"] == "gemma2" else layers == 62
    out: dict[str, Any] = {"hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
                           "query_pre_attn_scalar": hidden // heads if big else cfg["head_dim"],
                           "attn_logit_softcapping": key("attn_logit_softcapping", None),
                           "final_logit_softcapping": key("final_logit_softcapping", None),
                           "tie_word_embeddings": True}
    window = key("attention.sliding_window", None)
    if window:
        pattern = key("attention.sliding_window_pattern", None)
        out["sliding_window"] = int(window)
        if isinstance(pattern, (list, tuple)):
            out["layer_types"] = ["sliding_attention" if p else "full_attention" for p in pattern]
        out["rope_local_base_freq"] = float(key("rope.freq_base_swa", local_theta or cfg["rope_theta"]))
    return out


GEMMA2 = Family("gemma2", ("Gemma2ForCausalLM",), "gemma2", "gemma2", parse, lambda a: gemma_rules(True), block,
                gguf_metadata=gguf_metadata, hf_config=hf_config, embed_scale=lambda a: math.sqrt(a.hidden),
                final_softcap=lambda a: a.final_softcap, swa_period=SWA_PERIOD)
FAMILIES = (GEMMA2,)
