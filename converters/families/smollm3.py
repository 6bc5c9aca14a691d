"""SmolLM3 (SmolLM3ForCausalLM): the Llama block where some layers use no positional encoding (NoPE):
`no_rope_layers[i]` is 1 where layer i applies RoPE. llama.cpp (`smollm3`) hard-codes every 4th layer as
NoPE, so a GGUF is written only when the config's pattern is that one."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...errors import ConfigError, ConversionError
from ..hf import ModelConfig
from .base import Args, Family, Ops
from .llama import attn_spec, llama_rules

LLAMA_CPP_NOPE_STEP = 4   # llama.cpp: layer i skips RoPE when (i + 1) % 4 == 0


@dataclass(frozen=True)
class SmolLM3Args(Args):
    rope_layers: tuple[bool, ...] = ()     # True where the layer applies RoPE


def parse(c: ModelConfig) -> SmolLM3Args:
    raw = c.raw
    flags = raw.get("no_rope_layers")
    if flags is None:
        step = int(raw.get("no_rope_layer_interval") or LLAMA_CPP_NOPE_STEP)
        flags = [int((i + 1) % step != 0) for i in range(c.num_layers)]
    if not isinstance(flags, list) or len(flags) != c.num_layers:
        raise ConfigError(f"no_rope_layers must list {c.num_layers} flags (1 = the layer uses RoPE)")
    return SmolLM3Args(**Args.common(c), rope_layers=tuple(bool(f) for f in flags))


def block(ops: Ops[Any], a: SmolLM3Args, i: int, w: dict[str, np.ndarray], h: Any, delta: Any) -> tuple[Any, Any]:
    x, h = ops.add_norm(h, delta, w["attn_norm.weight"], a.eps, f"layers.{i}.input_layernorm")
    q, k, v = ops.linear(x, f"layers.{i}.attn.qkv_proj", [w["attn_q.weight"], w["attn_k.weight"], w["attn_v.weight"]])
    spec = attn_spec(a) if a.rope_layers[i] else replace(attn_spec(a), rope_theta=None)
    attn = ops.attention(i, q, k, v, spec)
    (o,) = ops.linear(attn, f"layers.{i}.attn.o_proj", [w["attn_output.weight"]])
    x, h = ops.add_norm(h, o, w["ffn_norm.weight"], a.eps, f"layers.{i}.post_attention_layernorm")
    gate, up = ops.linear(x, f"layers.{i}.mlp.gate_up_proj", [w["ffn_gate.weight"], w["ffn_up.weight"]])
    (down,) = ops.linear(ops.gated(gate, up, "silu"), f"layers.{i}.mlp.down_proj", [w["ffn_down.weight"]])
    return h, down


def gguf_metadata(writer: Any, a: SmolLM3Args) -> None:
    fixed = tuple((i + 1) % LLAMA_CPP_NOPE_STEP != 0 for i in range(a.layers))
    if a.rope_layers != fixed:
        raise ConversionError("this SmolLM3 config places its NoPE layers differently from llama.cpp's fixed "
                              "pattern (every 4th layer)", "convert it to ONNX instead, which follows the config")


def hf_config(key: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    n = cfg["num_hidden_layers"]
    return {"no_rope_layers": [int((i + 1) % LLAMA_CPP_NOPE_STEP != 0) for i in range(n)],
            "no_rope_layer_interval": LLAMA_CPP_NOPE_STEP}


SMOLLM3 = Family("smollm3", ("SmolLM3ForCausalLM",), "smollm3", "smollm3", parse, lambda a: llama_rules(permute=True),
                 block, gguf_metadata=gguf_metadata, hf_config=hf_config)
FAMILIES = (SMOLLM3,)
