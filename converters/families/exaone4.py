"""EXAONE 4.0 (Exaone4ForCausalLM; the 1.2B is an on-device model): no norm before attention or MLP but
RMSNorms after them (as OLMo 2), per-head q/k RMSNorms (as Qwen3), and in the hybrid configs sliding-window
layers (`layer_types`) where only the sliding layers apply RoPE and the global ones use none (NoPE).
llama.cpp `exaone4`: NeoX-style RoPE (no permutation), llama3 RoPE factors as rope_freqs; it honours the
sliding windows only in the 64-layer 32B, so other hybrid configs are ONNX-only."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...errors import ConfigError, ConversionError
from ..hf import ModelConfig
from .base import Args, AttnSpec, Family, Ops, TensorRule
from .olmo2 import post_norm_rules


@dataclass(frozen=True)
class Exaone4Args(Args):
    sliding_window: int | None = None
    swa_layers: tuple[bool, ...] = ()


def parse(c: ModelConfig) -> Exaone4Args:
    r = c.raw
    window = r.get("sliding_window")
    swa: tuple[bool, ...] = tuple(False for _ in range(c.num_layers))
    if window:
        types, pattern = r.get("layer_types"), r.get("sliding_window_pattern")
        if isinstance(types, list) and len(types) == c.num_layers:
            swa = tuple(t == "sliding_attention" for t in types)
        elif isinstance(pattern, str) and pattern:          # e.g. "LLLG"
            swa = tuple(pattern[i % len(pattern)] == "L" for i in range(c.num_layers))
        elif isinstance(pattern, int) and pattern > 0:
            swa = tuple((i + 1) % pattern != 0 for i in range(c.num_layers))
        else:
            raise ConfigError("sliding_window is set but neither layer_types nor sliding_window_pattern says which "
                              "layers slide")
    return Exaone4Args(**Args.common(c), sliding_window=int(window) if window else None, swa_layers=swa)


def rules(a: Exaone4Args) -> tuple[TensorRule, ...]:
    return post_norm_rules(lambda a: (a.head_dim,), lambda a: (a.head_dim,))  # per-head q/k norms


def attn_spec(a: Exaone4Args, i: int) -> AttnSpec:
    spec = AttnSpec(a.heads, a.kv_heads, a.head_dim, a.head_dim ** -0.5, a.rope_theta, a.rope_scaling)
    if a.sliding_window is None:
        return spec
    if a.swa_layers[i]:
        return replace(spec, window=a.sliding_window)
    return replace(spec, rope_theta=None)          # global layers of hybrid configs: no positional encoding


def block(ops: Ops[Any], a: Exaone4Args, i: int, w: dict[str, np.ndarray], h: Any, delta: Any) -> tuple[Any, Any]:
    if delta is not None:
        h = ops.add(h, delta)
    q, k, v = ops.linear(h, f"layers.{i}.attn.qkv_proj", [w["attn_q.weight"], w["attn_k.weight"], w["attn_v.weight"]])
    q = ops.head_norm(q, w["attn_q_norm.weight"], a.eps, a.heads, f"layers.{i}.attn.q_norm")
    k = ops.head_norm(k, w["attn_k_norm.weight"], a.eps, a.kv_heads, f"layers.{i}.attn.k_norm")
    attn = ops.attention(i, q, k, v, attn_spec(a, i))
    (o,) = ops.linear(attn, f"layers.{i}.attn.o_proj", [w["attn_output.weight"]])
    h = ops.add(h, ops.norm(o, w["post_attention_norm.weight"], a.eps, f"layers.{i}.post_attention_layernorm"))
    gate, up = ops.linear(h, f"layers.{i}.mlp.gate_up_proj", [w["ffn_gate.weight"], w["ffn_up.weight"]])
    (down,) = ops.linear(ops.gated(gate, up, "silu"), f"layers.{i}.mlp.down_proj", [w["ffn_down.weight"]])
    return h, ops.norm(down, w["post_ffw_norm.weight"], a.eps, f"layers.{i}.post_feedforward_layernorm")


LLAMA_CPP_HYBRID_LAYERS = 64      # llama.cpp enables EXAONE 4.0's sliding windows for the 64-layer 32B only


def gguf_metadata(writer: Any, a: Exaone4Args) -> None:
    if a.sliding_window is not None and a.layers != LLAMA_CPP_HYBRID_LAYERS:
        raise ConversionError(f"llama.cpp runs EXAONE 4.0 sliding-window layers only in the {LLAMA_CPP_HYBRID_LAYERS}-"
                              f"layer model; this one has {a.layers}, so its GGUF would attend (and rotate) "
                              "differently", "convert it to ONNX instead, which follows config.json")
    if a.sliding_window is not None:
        writer.add_sliding_window(a.sliding_window)
        writer.add_sliding_window_pattern(list(a.swa_layers))


def hf_config(key: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    window = key("attention.sliding_window", None)
    pattern = key("attention.sliding_window_pattern", None)
    if not window or not isinstance(pattern, (list, tuple)):
        return {"sliding_window": None}
    return {"sliding_window": int(window),
            "layer_types": ["sliding_attention" if p else "full_attention" for p in pattern]}


EXAONE4 = Family("exaone4", ("Exaone4ForCausalLM",), "exaone4", "exaone4", parse, rules, block,
                 gguf_metadata=gguf_metadata, hf_config=hf_config)
FAMILIES = (EXAONE4,)
