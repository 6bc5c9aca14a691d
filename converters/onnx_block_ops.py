"""The block ops that emit ONNX nodes (the graph side of families/base.Ops).

Two variants share every weight decision:
- fused: onnxruntime contrib ops (MatMulNBits, GroupQueryAttention with do_rotary, SimplifiedLayerNormalization,
  SkipSimplifiedLayerNormalization). q, k, v that come straight from one fused projection reach
  GroupQueryAttention packed (the Split is never emitted).
- standard: ai.onnx ops only (blocked DequantizeLinear + MatMul, explicit RoPE, causal/window mask, softmax).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper

from ..errors import ConversionError
from .families.base import AttnSpec, Ops
from .onnx_ops import MS_DOMAIN, GraphWriter, linear, rms_norm, rope_caches, skip_rms_norm
from .quant import BlockQuant, Recipe


class Shapes:
    """Dynamic sizes computed once per graph."""

    def __init__(self, g: GraphWriter) -> None:
        self.seq = g.op("Shape", "input_ids", start=1, end=2)               # [1] = S
        self.total = g.op("Shape", "attention_mask", start=1, end=2)        # [1] = T (past + S)
        self.total_scalar = g.op("Squeeze", self.total, g.const([0]))


def _rotate(g: GraphWriter, x: str, cos: str, sin: str, half: int, head_dim: int) -> str:
    """x * cos + rotate_half(x) * sin on the first 2*half dims of the last axis (the rest pass through)."""
    rot = x if 2 * half == head_dim else g.op("Slice", x, g.const([0]), g.const([2 * half]), g.const([-1]))
    x1 = g.op("Slice", rot, g.const([0]), g.const([half]), g.const([-1]))
    x2 = g.op("Slice", rot, g.const([half]), g.const([2 * half]), g.const([-1]))
    turned = g.op("Concat", g.op("Neg", x2), x1, axis=-1)
    out = g.op("Add", g.op("Mul", rot, cos), g.op("Mul", turned, sin))
    if 2 * half == head_dim:
        return out
    rest = g.op("Slice", x, g.const([2 * half]), g.const([head_dim]), g.const([-1]))
    return g.op("Concat", out, rest, axis=-1)


def _longrope(spec: AttnSpec) -> bool:
    return spec.rope_scaling is not None and spec.rope_scaling.get("rope_type") == "longrope"


class OnnxOps(Ops[str]):
    """Emits nodes into `g`. Set `quantized` to a layer's GPTQ results before emitting that layer."""

    def __init__(self, g: GraphWriter, recipe: Recipe, fused: bool, accuracy_level: int, max_positions: int) -> None:
        self.g, self.recipe, self.fused, self.accuracy_level = g, recipe, fused, accuracy_level
        self.max_positions = max_positions
        self.shapes = Shapes(g)
        self.quantized: dict[str, BlockQuant] = {}
        self._pending: dict[str, tuple[str, list[str], list[int]]] = {}   # split output -> (packed, outs, sizes)
        self._caches: dict[tuple[Any, ...], tuple[str, str]] = {}
        self._rows: dict[tuple[Any, ...], tuple[str, str, str, str]] = {}
        self._masks: dict[int | None, str] = {}
        self._fused_inputs: tuple[str, str] | None = None

    # -- helpers -------------------------------------------------------------------------------------
    def _need(self, *names: str) -> None:
        """Emit the Split a name comes from, if it has not been emitted yet."""
        for name in names:
            entry = self._pending.get(name)
            if entry is None:
                continue
            packed, outs, sizes = entry
            for o in outs:
                self._pending.pop(o, None)
            self.g.nodes.append(helper.make_node("Split", [packed, self.g.const(sizes)], outs,
                                                 name=self.g.fresh("Split"), axis=-1))

    def _cache(self, spec: AttnSpec, long: bool = False) -> tuple[str, str]:
        """cos/sin caches [max_positions, rotary_dim/2]; long: longrope's long-context factors."""
        key = (spec.rope_theta, repr(spec.rope_scaling), spec.rotary_dim, long)
        if key not in self._caches:
            prefix = "rope" if not self._caches else f"rope{len(self._caches)}"
            seq_len = self.max_positions if long else None
            self._caches[key] = rope_caches(self.g, spec.rotary_dim, float(spec.rope_theta or 0), self.max_positions,
                                            spec.rope_scaling, prefix, seq_len)
        return self._caches[key]

    # -- Ops -----------------------------------------------------------------------------------------
    def linear(self, x: str, name: str, weights: list[np.ndarray], biases: list[np.ndarray | None] | None = None
               ) -> list[str]:
        self._need(x)
        w = np.concatenate([np.asarray(a, np.float32) for a in weights]) if len(weights) > 1 else weights[0]
        bias = None
        if biases is not None and any(b is not None for b in biases):
            bias = np.concatenate([np.zeros(a.shape[0], np.float32) if b is None else np.asarray(b, np.float32)
                                   for a, b in zip(weights, biases)])
        y = linear(self.g, x, w, self.recipe.spec_for_linear(name), name, self.fused, self.accuracy_level, bias,
                   self.quantized.get(name))
        if len(weights) == 1:
            return [y]
        split = self.g.fresh(name + "/Split")
        outs = [f"{split}/out{i}" for i in range(len(weights))]
        for o in outs:
            self._pending[o] = (y, outs, [int(a.shape[0]) for a in weights])
        return outs

    def norm(self, x: str, weight: np.ndarray, eps: float, name: str) -> str:
        self._need(x)
        return rms_norm(self.g, x, weight, eps, name, self.fused)

    def add_norm(self, residual: str, delta: str | None, weight: np.ndarray, eps: float, name: str) -> tuple[str, str]:
        self._need(residual, *(() if delta is None else (delta,)))
        if delta is None:
            return rms_norm(self.g, residual, weight, eps, name, self.fused), residual
        return skip_rms_norm(self.g, delta, residual, weight, eps, name, self.fused)

    def add(self, a: str, b: str) -> str:
        self._need(a, b)
        return self.g.op("Add", a, b)

    def head_norm(self, x: str, weight: np.ndarray, eps: float, heads: int, name: str) -> str:
        self._need(x)
        g = self.g
        hd = int(np.asarray(weight).shape[0])
        per_head = g.op("Reshape", x, g.const([0, 0, heads, hd]))
        normed = rms_norm(g, per_head, weight, eps, name, self.fused)
        return g.op("Reshape", normed, g.const([0, 0, heads * hd]))

    def gated(self, gate: str, up: str, act: str) -> str:
        self._need(gate, up)
        g = self.g
        if act == "silu":
            a = g.op("Mul", gate, g.op("Sigmoid", gate))
        elif act == "gelu_tanh":
            a = g.op("Gelu", gate, approximate="tanh")
        else:
            raise ValueError(f"unknown activation {act!r}")
        return g.op("Mul", a, up)

    def softcap(self, x: str, cap: float) -> str:
        g = self.g
        return g.op("Mul", g.op("Tanh", g.op("Mul", x, g.const(1.0 / cap, np.float32))), g.const(cap, np.float32))

    def mul(self, a: str, b: str) -> str:
        self._need(a, b)
        return self.g.op("Mul", a, b)

    def causal_conv(self, x: str, weight: np.ndarray, name: str) -> str:
        raise ConversionError("short convolutions need a state cache the ONNX graph does not have yet",
                              "convert this model to GGUF")

    def scale(self, x: str, factor: float) -> str:
        self._need(x)
        return self.g.op("Mul", x, self.g.const(factor, np.float32))

    def attention(self, layer: int, q: str, k: str, v: str, spec: AttnSpec) -> str:
        if self.fused:
            return self._gqa(layer, q, k, v, spec)
        self._need(q, k, v)
        return self._standard(layer, q, k, v, spec)

    # -- fused attention -----------------------------------------------------------------------------
    def _gqa(self, layer: int, q: str, k: str, v: str, spec: AttnSpec) -> str:
        g = self.g
        if self._fused_inputs is None:
            lengths = g.op("ReduceSum", "attention_mask", g.const([1]), keepdims=0)
            seqlens_k = g.op("Cast", g.op("Sub", lengths, g.const(1)), to=TensorProto.INT32)     # [B]
            total = g.op("Cast", self.shapes.total_scalar, to=TensorProto.INT32)                 # scalar
            self._fused_inputs = (seqlens_k, total)
        seqlens_k, total = self._fused_inputs
        entry = self._pending.get(q)
        if entry is not None and entry[1] == [q, k, v]:
            qkv_in = [entry[0], "", ""]                       # packed: the Split is never emitted
            for o in entry[1]:
                self._pending.pop(o, None)
        else:
            self._need(q, k, v)
            qkv_in = [q, k, v]
        rope = spec.rope_theta is not None
        if rope and ((spec.rotary_dim // 2) % 8 or _longrope(spec)):
            # GroupQueryAttention rotates only when rotary_dim/2 is a multiple of 8, with one fixed cache: rotate
            # outside it otherwise, and for longrope (its factors switch with the sequence length)
            self._need(*(n for n in qkv_in if n))
            if qkv_in[1] == "":
                qkv_in = self.linear_split(qkv_in[0], [spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim,
                                                       spec.kv_heads * spec.head_dim])
            qkv_in = [self._rotate_flat(qkv_in[0], spec.heads, spec), self._rotate_flat(qkv_in[1], spec.kv_heads, spec),
                      qkv_in[2]]
            rope = False
        cos, sin = self._cache(spec) if rope else ("", "")
        attrs: dict[str, Any] = dict(num_heads=spec.heads, kv_num_heads=spec.kv_heads, scale=float(spec.scale),
                                     do_rotary=int(rope), rotary_interleaved=0)
        if spec.window is not None:
            attrs["local_window_size"] = int(spec.window)   # W keys counting the query itself, as HF and llama.cpp
        if spec.softcap:
            attrs["softcap"] = float(spec.softcap)
        name = g.fresh(f"layers.{layer}.attn/GroupQueryAttention")
        out = f"{name}/out"
        g.nodes.append(helper.make_node(
            "GroupQueryAttention",
            qkv_in + [f"past_key_values.{layer}.key", f"past_key_values.{layer}.value", seqlens_k, total, cos, sin,
                      "position_ids" if rope else ""],
            [out, f"present.{layer}.key", f"present.{layer}.value"], name=name, domain=MS_DOMAIN, **attrs))
        return out

    def linear_split(self, packed: str, sizes: list[int]) -> list[str]:
        return self.g.node("Split", [packed, self.g.const(sizes)], len(sizes), axis=-1)

    def _rotate_flat(self, x: str, heads: int, spec: AttnSpec) -> str:
        """RoPE on x [B, S, heads*hd] (first rotary_dim dims of each head) with ai.onnx ops."""
        g = self.g
        cos_q, sin_q, _, _ = self._rope_rows(spec)                         # [B, 1, 1, S, rot]
        cos = g.op("Squeeze", cos_q, g.const([1]))                          # [B, 1, S, rot]
        sin = g.op("Squeeze", sin_q, g.const([1]))
        per_head = g.op("Transpose", g.op("Reshape", x, g.const([0, 0, heads, spec.head_dim])), perm=[0, 2, 1, 3])
        turned = _rotate(g, per_head, cos, sin, spec.rotary_dim // 2, spec.head_dim)    # [B, heads, S, hd]
        return g.op("Reshape", g.op("Transpose", turned, perm=[0, 2, 1, 3]), g.const([0, 0, heads * spec.head_dim]))

    # -- standard attention --------------------------------------------------------------------------
    def _rope_rows(self, spec: AttnSpec) -> tuple[str, str, str, str]:
        key = (spec.rope_theta, repr(spec.rope_scaling), spec.rotary_dim)
        if key not in self._rows:
            g = self.g
            cos, sin = self._cache(spec)
            cos_rows = g.op("Gather", cos, "position_ids")                 # [B, S, rot/2]
            sin_rows = g.op("Gather", sin, "position_ids")
            if _longrope(spec):   # HF: the long factors while past + new tokens exceed the original context
                assert spec.rope_scaling is not None
                long_cos, long_sin = self._cache(spec, long=True)
                orig = int(spec.rope_scaling["original_max_position_embeddings"])
                is_long = g.op("Greater", self.shapes.total_scalar, g.const(orig))
                cos_rows = g.op("Where", is_long, g.op("Gather", long_cos, "position_ids"), cos_rows)
                sin_rows = g.op("Where", is_long, g.op("Gather", long_sin, "position_ids"), sin_rows)
            cos_full = g.op("Concat", cos_rows, cos_rows, axis=-1)          # [B, S, rot]
            sin_full = g.op("Concat", sin_rows, sin_rows, axis=-1)
            self._rows[key] = (g.op("Unsqueeze", cos_full, g.const([1, 2])),   # q: [B, 1, 1, S, rot]
                               g.op("Unsqueeze", sin_full, g.const([1, 2])),
                               g.op("Unsqueeze", cos_full, g.const([1])),      # k: [B, 1, S, rot]
                               g.op("Unsqueeze", sin_full, g.const([1])))
        return self._rows[key]

    def _mask(self, window: int | None) -> str:
        """[B, 1, 1, S, T] bool: key j visible to query i when j <= past + i (and past + i - j < window)."""
        if window not in self._masks:
            g, sh = self.g, self.shapes
            start = g.op("Squeeze", g.op("Sub", sh.total, sh.seq), g.const([0]))
            one = g.const(1)
            k_pos = g.op("Unsqueeze", g.op("Range", g.const(0), sh.total_scalar, one), g.const([0]))   # [1, T]
            q_pos = g.op("Unsqueeze", g.op("Range", start, sh.total_scalar, one), g.const([1]))        # [S, 1]
            allowed = g.op("LessOrEqual", k_pos, q_pos)                                               # [S, T]
            if window is not None:
                allowed = g.op("And", allowed, g.op("Less", g.op("Sub", q_pos, k_pos), g.const(int(window))))
            pad = g.op("Unsqueeze", g.op("Cast", "attention_mask", to=TensorProto.BOOL), g.const([1, 2, 3]))
            self._masks[window] = g.op("And", allowed, pad)
        return self._masks[window]

    def _standard(self, layer: int, q: str, k: str, v: str, spec: AttnSpec) -> str:
        g = self.g
        h, kv, hd = spec.heads, spec.kv_heads, spec.head_dim
        groups = h // kv
        # HF repeat_kv: query head n reads kv head n // groups, so split heads as [kv, groups]
        q = g.op("Transpose", g.op("Reshape", q, g.const([0, 0, kv, groups, hd])), perm=[0, 2, 3, 1, 4])  # [B,kv,g,S,hd]
        k = g.op("Transpose", g.op("Reshape", k, g.const([0, 0, kv, hd])), perm=[0, 2, 1, 3])           # [B,kv,S,hd]
        v = g.op("Transpose", g.op("Reshape", v, g.const([0, 0, kv, hd])), perm=[0, 2, 1, 3])
        if spec.rope_theta is not None:
            cos_q, sin_q, cos_k, sin_k = self._rope_rows(spec)
            half = spec.rotary_dim // 2
            q = _rotate(g, q, cos_q, sin_q, half, hd)
            k = _rotate(g, k, cos_k, sin_k, half, hd)
        pk = g.output("Concat", [f"past_key_values.{layer}.key", k], f"present.{layer}.key", axis=2)
        pv = g.output("Concat", [f"past_key_values.{layer}.value", v], f"present.{layer}.value", axis=2)
        k_t = g.op("Transpose", g.op("Unsqueeze", pk, g.const([2])), perm=[0, 1, 2, 4, 3])  # [B, kv, 1, hd, T]
        scores = g.op("Mul", g.op("MatMul", q, k_t), g.const(float(spec.scale), np.float32))  # [B, kv, g, S, T]
        if spec.softcap:
            scores = self.softcap(scores, spec.softcap)
        probs = g.op("Softmax", g.op("Where", self._mask(spec.window), scores, g.const(-1e30, np.float32)), axis=-1)
        ctx = g.op("MatMul", probs, g.op("Unsqueeze", pv, g.const([2])))                  # [B, kv, g, S, hd]
        ctx = g.op("Transpose", ctx, perm=[0, 3, 1, 2, 4])
        return g.op("Reshape", ctx, g.const([0, 0, h * hd]))
