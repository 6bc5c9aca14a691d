"""LFM2 (Lfm2ForCausalLM), a hybrid: most layers are gated short convolutions (in_proj -> B, C, x;
y = out_proj(C * causal_conv(B * x)), a depthwise kernel of conv_L_cache taps), the rest grouped-query
attention with per-head q/k RMSNorms; every layer has a pre-norm (operator_norm) and a SwiGLU MLP
(feed_forward.w1/w3/w2) behind its own norm. The final norm is model.embedding_norm.

llama.cpp `lfm2` runs the convolution layers with a recurrent state (head_count_kv is 0 for them); the ONNX
graph has no state cache for them yet, so ONNX export is refused with the GGUF route named.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ConfigError
from ..hf import ModelConfig
from .base import Args, AttnSpec, Family, Ops, TensorRule

_L = "model.layers.{i}."


@dataclass(frozen=True)
class Lfm2Args(Args):
    conv_layers: tuple[bool, ...] = ()       # True where the layer is a short convolution
    l_cache: int = 3                         # convolution taps

    @property
    def gguf_kv_heads(self) -> list[int]:
        return [0 if conv else self.kv_heads for conv in self.conv_layers]


def parse(c: ModelConfig) -> Lfm2Args:
    r = c.raw
    types = r.get("layer_types")
    if not isinstance(types, list) or len(types) != c.num_layers:
        raise ConfigError(f"LFM2 config needs layer_types listing {c.num_layers} of 'conv'/'full_attention'")
    ffn = int(r.get("block_ff_dim") or c.intermediate_size)
    if r.get("block_auto_adjust_ff_dim"):
        ffn = int(2 * ffn / 3)
        if r.get("block_ffn_dim_multiplier") is not None:
            ffn = int(float(r["block_ffn_dim_multiplier"]) * ffn)
        multiple = int(r.get("block_multiple_of") or 1)
        ffn = multiple * ((ffn + multiple - 1) // multiple)
    common = {**Args.common(c), "ffn": ffn, "eps": float(r.get("norm_eps", c.rms_norm_eps))}
    if r.get("conv_bias"):
        raise ConfigError("LFM2 with conv_bias is not supported (llama.cpp has no convolution bias)")
    return Lfm2Args(**common, conv_layers=tuple(t == "conv" for t in types), l_cache=int(r.get("conv_L_cache", 3)))


def _conv(a: Lfm2Args) -> list[int]:
    return [i for i, c in enumerate(a.conv_layers) if c]


def _attn(a: Lfm2Args) -> list[int]:
    return [i for i, c in enumerate(a.conv_layers) if not c]


def rules(a: Lfm2Args) -> tuple[TensorRule, ...]:
    def attn(hf: str, gg: str, shape: Any) -> TensorRule:
        return TensorRule(_L + hf, gg, shape, layers=_attn)

    def conv(hf: str, gg: str, shape: Any, **kw: Any) -> TensorRule:
        return TensorRule(_L + hf, gg, shape, layers=_conv, **kw)

    return (
        TensorRule("model.embed_tokens.weight", "token_embd.weight", lambda a: (a.vocab, a.hidden)),
        TensorRule("model.embedding_norm.weight", "token_embd_norm.weight", lambda a: (a.hidden,)),
        TensorRule("lm_head.weight", "output.weight", lambda a: (a.vocab, a.hidden), optional=True),
        TensorRule(_L + "operator_norm.weight", "blk.{i}.attn_norm.weight", lambda a: (a.hidden,)),
        TensorRule(_L + "ffn_norm.weight", "blk.{i}.ffn_norm.weight", lambda a: (a.hidden,)),
        TensorRule(_L + "feed_forward.w1.weight", "blk.{i}.ffn_gate.weight", lambda a: (a.ffn, a.hidden)),
        TensorRule(_L + "feed_forward.w3.weight", "blk.{i}.ffn_up.weight", lambda a: (a.ffn, a.hidden)),
        TensorRule(_L + "feed_forward.w2.weight", "blk.{i}.ffn_down.weight", lambda a: (a.hidden, a.ffn)),
        attn("self_attn.q_proj.weight", "blk.{i}.attn_q.weight", lambda a: (a.q_rows, a.hidden)),
        attn("self_attn.k_proj.weight", "blk.{i}.attn_k.weight", lambda a: (a.kv_rows, a.hidden)),
        attn("self_attn.v_proj.weight", "blk.{i}.attn_v.weight", lambda a: (a.kv_rows, a.hidden)),
        attn("self_attn.out_proj.weight", "blk.{i}.attn_output.weight", lambda a: (a.hidden, a.q_rows)),
        attn("self_attn.q_layernorm.weight", "blk.{i}.attn_q_norm.weight", lambda a: (a.head_dim,)),
        attn("self_attn.k_layernorm.weight", "blk.{i}.attn_k_norm.weight", lambda a: (a.head_dim,)),
        # HF stores the depthwise kernel as Conv1d's [D, 1, L]; llama.cpp wants [D, L]
        # (F32 always: ggml_ssm_conv asserts a float kernel; llama.cpp's quantizer leaves it alone)
        conv("conv.conv.weight", "blk.{i}.shortconv.conv.weight", lambda a: (a.hidden, 1, a.l_cache), keep_f32=True,
             gguf_shape=lambda a: (a.hidden, a.l_cache),
             to_canon=lambda w, a: np.asarray(w).reshape(a.hidden, a.l_cache),
             from_canon=lambda w, a: np.asarray(w).reshape(a.hidden, 1, a.l_cache)),
        conv("conv.in_proj.weight", "blk.{i}.shortconv.in_proj.weight", lambda a: (3 * a.hidden, a.hidden)),
        conv("conv.out_proj.weight", "blk.{i}.shortconv.out_proj.weight", lambda a: (a.hidden, a.hidden)),
    )


def block(ops: Ops[Any], a: Lfm2Args, i: int, w: dict[str, np.ndarray], h: Any, delta: Any) -> tuple[Any, Any]:
    x, h = ops.add_norm(h, delta, w["attn_norm.weight"], a.eps, f"layers.{i}.operator_norm")
    if a.conv_layers[i]:
        b, c, v = ops.linear(x, f"layers.{i}.conv.in_proj", np.split(w["shortconv.in_proj.weight"], 3))
        conv = ops.causal_conv(ops.mul(b, v), w["shortconv.conv.weight"], f"layers.{i}.conv.conv")
        (o,) = ops.linear(ops.mul(c, conv), f"layers.{i}.conv.out_proj", [w["shortconv.out_proj.weight"]])
    else:
        q, k, v = ops.linear(x, f"layers.{i}.attn.qkv_proj",
                             [w["attn_q.weight"], w["attn_k.weight"], w["attn_v.weight"]])
        q = ops.head_norm(q, w["attn_q_norm.weight"], a.eps, a.heads, f"layers.{i}.attn.q_norm")
        k = ops.head_norm(k, w["attn_k_norm.weight"], a.eps, a.kv_heads, f"layers.{i}.attn.k_norm")
        spec = AttnSpec(a.heads, a.kv_heads, a.head_dim, a.head_dim ** -0.5, a.rope_theta, a.rope_scaling)
        (o,) = ops.linear(ops.attention(i, q, k, v, spec), f"layers.{i}.attn.o_proj", [w["attn_output.weight"]])
    x, h = ops.add_norm(h, o, w["ffn_norm.weight"], a.eps, f"layers.{i}.ffn_norm")
    gate, up = ops.linear(x, f"layers.{i}.mlp.gate_up_proj", [w["ffn_gate.weight"], w["ffn_up.weight"]])
    (down,) = ops.linear(ops.gated(gate, up, "silu"), f"layers.{i}.mlp.down_proj", [w["ffn_down.weight"]])
    return h, down


def gguf_metadata(writer: Any, a: Lfm2Args) -> None:
    writer.add_shortconv_l_cache(a.l_cache)


def hf_config(key: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    kv = key("attention.head_count_kv", None)
    per_layer = list(kv) if kv is not None and hasattr(kv, "__len__") else [1] * cfg["num_hidden_layers"]
    return {"layer_types": ["conv" if int(n) == 0 else "full_attention" for n in per_layer],
            "conv_L_cache": int(key("shortconv.l_cache", 3)), "block_auto_adjust_ff_dim": False,
            "block_ff_dim": cfg["intermediate_size"], "norm_eps": cfg["rms_norm_eps"], "conv_bias": False}


LFM2 = Family("lfm2", ("Lfm2ForCausalLM",), "lfm2", "lfm2", parse, rules, block, gguf_metadata=gguf_metadata,
              hf_config=hf_config,
              onnx_refusal="its short-convolution layers need a recurrent state cache the ONNX graph lacks",
              final_norm="token_embd_norm.weight")
FAMILIES = (LFM2,)
