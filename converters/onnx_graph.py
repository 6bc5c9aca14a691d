"""The decoder graph for the Llama block layout (Llama, Mistral, Qwen2), in onnxruntime-genai's I/O names.

Inputs:  input_ids [batch, seq] int64, attention_mask [batch, total_seq] int64, position_ids [batch, seq]
         int64, past_key_values.{i}.key/value [batch, kv_heads, past_seq, head_dim] float32.
Outputs: logits [batch, seq, vocab] float32, present.{i}.key/value [batch, kv_heads, total_seq, head_dim].

Two variants share every weight decision:
- fused: onnxruntime contrib ops (MatMulNBits, GroupQueryAttention with do_rotary, SimplifiedLayerNormalization,
  SkipSimplifiedLayerNormalization). GroupQueryAttention may share the past and present buffers.
- standard: ai.onnx ops only (blocked DequantizeLinear + MatMul, explicit RoPE, causal mask, softmax).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from onnx import TensorProto, helper

from ..errors import ModelFormatError
from .architectures import Architecture
from .hf import HFModel, ModelConfig
from .calibration import CalibrationSet, Calibrator, LayerWeights
from .gptq import gptq_quantize
from .onnx_ops import (MS_DOMAIN, GraphWriter, linear, quantized_gather, rms_norm, rope_caches, rope_tables,
                       skip_rms_norm, store_nbits)
from .quant import BlockQuant, Recipe, quantize_blocks


@dataclass(frozen=True)
class GraphOptions:
    recipe: Recipe
    fused: bool = True
    accuracy_level: int = 4
    max_positions: int = 4096   # rows of the RoPE tables = the longest context the graph supports
    calibration: CalibrationSet | None = None   # token ids for GPTQ (required when the recipe is calibrated)
    progress: bool = False                       # a per-layer progress bar on stderr


def _weight(model: HFModel, name: str, shape: tuple[int, ...]) -> np.ndarray:
    return model.tensor(name, expect_shape=shape)


class _Shapes:
    """Dynamic sizes computed once per graph."""

    def __init__(self, g: GraphWriter) -> None:
        self.seq = g.op("Shape", "input_ids", start=1, end=2)               # [1] = S
        self.total = g.op("Shape", "attention_mask", start=1, end=2)        # [1] = T (past + S)
        self.total_scalar = g.op("Squeeze", self.total, g.const([0]))


def _declare_io(g: GraphWriter, c: ModelConfig) -> None:
    kv_shape = ["batch_size", c.num_kv_heads, "past_sequence_length", c.head_dim]
    present_shape = ["batch_size", c.num_kv_heads, "total_sequence_length", c.head_dim]
    g.inputs += [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    g.outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                   ["batch_size", "sequence_length", c.vocab_size]))
    for i in range(c.num_layers):
        for kind in ("key", "value"):
            g.inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, kv_shape))
            g.outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT, present_shape))


def _rotate(g: GraphWriter, x: str, cos: str, sin: str, half: int) -> str:
    """x * cos + rotate_half(x) * sin, rotate_half(x) = concat(-x2, x1) along the last axis."""
    x1 = g.op("Slice", x, g.const([0]), g.const([half]), g.const([-1]))
    x2 = g.op("Slice", x, g.const([half]), g.const([2 * half]), g.const([-1]))
    rot = g.op("Concat", g.op("Neg", x2), x1, axis=-1)
    return g.op("Add", g.op("Mul", x, cos), g.op("Mul", rot, sin))


class _StandardAttention:
    """Grouped-query attention from ai.onnx ops; the mask and the RoPE rows are shared by every layer."""

    def __init__(self, g: GraphWriter, c: ModelConfig, shapes: _Shapes, cos: str, sin: str) -> None:
        self.g, self.c = g, c
        half = c.head_dim // 2
        cos_rows = g.op("Gather", cos, "position_ids")                 # [B, S, hd/2]
        sin_rows = g.op("Gather", sin, "position_ids")
        cos_full = g.op("Concat", cos_rows, cos_rows, axis=-1)          # [B, S, hd]
        sin_full = g.op("Concat", sin_rows, sin_rows, axis=-1)
        self.cos_q = g.op("Unsqueeze", cos_full, g.const([1, 2]))      # [B, 1, 1, S, hd]
        self.sin_q = g.op("Unsqueeze", sin_full, g.const([1, 2]))
        self.cos_k = g.op("Unsqueeze", cos_full, g.const([1]))          # [B, 1, S, hd]
        self.sin_k = g.op("Unsqueeze", sin_full, g.const([1]))
        self.half = half
        # causal + padding mask, [B, 1, 1, S, T]: key j is visible to query i when j <= past + i
        start = g.op("Squeeze", g.op("Sub", shapes.total, shapes.seq), g.const([0]))
        one = g.const(1)
        k_pos = g.op("Unsqueeze", g.op("Range", g.const(0), shapes.total_scalar, one), g.const([0]))   # [1, T]
        q_pos = g.op("Unsqueeze", g.op("Range", start, shapes.total_scalar, one), g.const([1]))        # [S, 1]
        causal = g.op("LessOrEqual", k_pos, q_pos)                                                   # [S, T]
        pad = g.op("Unsqueeze", g.op("Cast", "attention_mask", to=TensorProto.BOOL), g.const([1, 2, 3]))
        self.allowed = g.op("And", causal, pad)
        self.neg = g.const(-1e30, np.float32)
        self.scale = g.const(1.0 / np.sqrt(c.head_dim), np.float32)

    def __call__(self, layer: int, q: str, k: str, v: str) -> str:
        g, c = self.g, self.c
        groups = c.num_heads // c.num_kv_heads
        # HF repeat_kv: query head n reads kv head n // groups, so split heads as [kv, groups]
        q = g.op("Transpose", g.op("Reshape", q, g.const([0, 0, c.num_kv_heads, groups, c.head_dim])),
                 perm=[0, 2, 3, 1, 4])                                                  # [B, kv, g, S, hd]
        k = g.op("Transpose", g.op("Reshape", k, g.const([0, 0, c.num_kv_heads, c.head_dim])), perm=[0, 2, 1, 3])
        v = g.op("Transpose", g.op("Reshape", v, g.const([0, 0, c.num_kv_heads, c.head_dim])), perm=[0, 2, 1, 3])
        q = _rotate(g, q, self.cos_q, self.sin_q, self.half)
        k = _rotate(g, k, self.cos_k, self.sin_k, self.half)
        pk = g.output("Concat", [f"past_key_values.{layer}.key", k], f"present.{layer}.key", axis=2)
        pv = g.output("Concat", [f"past_key_values.{layer}.value", v], f"present.{layer}.value", axis=2)
        k_t = g.op("Transpose", g.op("Unsqueeze", pk, g.const([2])), perm=[0, 1, 2, 4, 3])  # [B, kv, 1, hd, T]
        scores = g.op("Mul", g.op("MatMul", q, k_t), self.scale)                          # [B, kv, g, S, T]
        probs = g.op("Softmax", g.op("Where", self.allowed, scores, self.neg), axis=-1)
        ctx = g.op("MatMul", probs, g.op("Unsqueeze", pv, g.const([2])))                  # [B, kv, g, S, hd]
        ctx = g.op("Transpose", ctx, perm=[0, 3, 1, 2, 4])
        return g.op("Reshape", ctx, g.const([0, 0, c.num_heads * c.head_dim]))


class _FusedAttention:
    """GroupQueryAttention on packed QKV with rotary inside the op."""

    def __init__(self, g: GraphWriter, c: ModelConfig, shapes: _Shapes, cos: str, sin: str) -> None:
        self.g, self.c, self.cos, self.sin = g, c, cos, sin
        lengths = g.op("ReduceSum", "attention_mask", g.const([1]), keepdims=0)
        self.seqlens_k = g.op("Cast", g.op("Sub", lengths, g.const(1)), to=TensorProto.INT32)   # [B]
        self.total = g.op("Cast", shapes.total_scalar, to=TensorProto.INT32)                    # scalar

    def __call__(self, layer: int, qkv: str) -> str:
        g, c = self.g, self.c
        name = g.fresh(f"layers.{layer}.attn/GroupQueryAttention")
        out = f"{name}/out"
        g.nodes.append(helper.make_node(
            "GroupQueryAttention",
            [qkv, "", "", f"past_key_values.{layer}.key", f"past_key_values.{layer}.value", self.seqlens_k,
             self.total, self.cos, self.sin, "position_ids"],
            [out, f"present.{layer}.key", f"present.{layer}.value"], name=name, domain=MS_DOMAIN,
            num_heads=c.num_heads, kv_num_heads=c.num_kv_heads, scale=float(1.0 / np.sqrt(c.head_dim)),
            do_rotary=1, rotary_interleaved=0))
        return out


def build_decoder(model: HFModel, arch: Architecture, g: GraphWriter, opts: GraphOptions) -> None:
    """Add every node and initializer of the decoder to `g`, one layer's weights at a time."""
    c = model.config
    recipe, fused = opts.recipe, opts.fused
    hd, h, kv = c.head_dim, c.num_heads, c.num_kv_heads
    _declare_io(g, c)
    shapes = _Shapes(g)
    cos, sin = rope_caches(g, hd, c.rope_theta, opts.max_positions, c.rope_scaling)
    attention = (_FusedAttention if fused else _StandardAttention)(g, c, shapes, cos, sin)

    embed = _weight(model, "model.embed_tokens.weight", (c.vocab_size, c.hidden_size))
    hidden = _embeddings(g, embed, recipe, c.tie_word_embeddings, fused)
    calib = _calibrator(c, recipe, opts)
    if calib is not None:
        calib.embed(embed)
    spec = recipe.spec_for_linear
    eps = c.rms_norm_eps
    residual, pending = hidden, None    # pending: output of the previous block, not yet added to residual
    from tqdm import tqdm

    desc = "ONNX layers (GPTQ-calibrated)" if calib is not None else "ONNX layers"
    for i in tqdm(range(c.num_layers), desc=desc, unit="layer", disable=not opts.progress, leave=False):
        p, p_attn, p_mlp = f"model.layers.{i}.", f"layers.{i}.attn.", f"layers.{i}.mlp."
        ln1 = _weight(model, p + "input_layernorm.weight", (c.hidden_size,))
        if pending is None:
            x = rms_norm(g, residual, ln1, eps, f"layers.{i}.input_layernorm", fused)
        else:
            x, residual = skip_rms_norm(g, pending, residual, ln1, eps, f"layers.{i}.input_layernorm", fused)
        qkv_w = np.concatenate([_weight(model, p + "self_attn.q_proj.weight", (h * hd, c.hidden_size)),
                                _weight(model, p + "self_attn.k_proj.weight", (kv * hd, c.hidden_size)),
                                _weight(model, p + "self_attn.v_proj.weight", (kv * hd, c.hidden_size))])
        bias = None
        if arch.qkv_bias:
            bias = np.concatenate([_weight(model, p + "self_attn.q_proj.bias", (h * hd,)),
                                   _weight(model, p + "self_attn.k_proj.bias", (kv * hd,)),
                                   _weight(model, p + "self_attn.v_proj.bias", (kv * hd,))])
        o_w = _weight(model, p + "self_attn.o_proj.weight", (c.hidden_size, h * hd))
        ln2 = _weight(model, p + "post_attention_layernorm.weight", (c.hidden_size,))
        ff = c.intermediate_size
        gu_w = np.concatenate([_weight(model, p + "mlp.gate_proj.weight", (ff, c.hidden_size)),
                               _weight(model, p + "mlp.up_proj.weight", (ff, c.hidden_size))])
        down_w = _weight(model, p + "mlp.down_proj.weight", (c.hidden_size, ff))
        bqs: dict[str, BlockQuant] = {}
        if calib is not None:
            bqs = calib.layer(i, LayerWeights(*(None if a is None else np.asarray(a, np.float32)
                                                for a in (ln1, qkv_w, bias, o_w, ln2, gu_w, down_w))))
        qkv = linear(g, x, qkv_w, spec(p_attn + "qkv_proj"), p_attn + "qkv_proj", fused, opts.accuracy_level, bias,
                     bqs.get("qkv"))
        if fused:
            attn = attention(i, qkv)  # type: ignore[call-arg]
        else:
            q, k, v = g.node("Split", [qkv, g.const([h * hd, kv * hd, kv * hd])], 3, axis=-1)
            attn = attention(i, q, k, v)  # type: ignore[call-arg]
        attn_out = linear(g, attn, o_w, spec(p_attn + "o_proj"), p_attn + "o_proj", fused, opts.accuracy_level,
                          bq=bqs.get("o"))
        x, residual = skip_rms_norm(g, attn_out, residual, ln2, eps, f"layers.{i}.post_attention_layernorm", fused)
        gate_up = linear(g, x, gu_w, spec(p_mlp + "gate_up_proj"), p_mlp + "gate_up_proj", fused, opts.accuracy_level,
                         bq=bqs.get("gate_up"))
        gate, up = g.node("Split", [gate_up, g.const([ff, ff])], 2, axis=-1)
        act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up, base=f"layers.{i}.mlp/SwiGLU")
        pending = linear(g, act, down_w, spec(p_mlp + "down_proj"), p_mlp + "down_proj", fused, opts.accuracy_level,
                         bq=bqs.get("down"))

    norm_w = _weight(model, "model.norm.weight", (c.hidden_size,))
    if pending is None:
        raise ModelFormatError("the model has no layers (num_hidden_layers = 0)")
    x, _ = skip_rms_norm(g, pending, residual, norm_w, eps, "norm", fused)
    if not c.tie_word_embeddings:
        head = _weight(model, "lm_head.weight", (c.vocab_size, c.hidden_size))
    else:
        head = embed
    head_spec = recipe.spec_for("lm_head")
    head_bq = None
    if head_spec.method == "gptq":
        assert calib is not None
        head_bq = gptq_quantize(head, calib.final_hessian(np.asarray(norm_w, np.float32)), head_spec, "lm_head")
    logits = linear(g, x, head, head_spec, "lm_head", fused, opts.accuracy_level, bq=head_bq)
    g.output("Identity", [logits], "logits")


def _embeddings(g: GraphWriter, embed: np.ndarray, recipe: Recipe, tied: bool, fused: bool) -> str:
    """Hidden states [B, S, D] for input_ids: a float table, its own quantized table, or the LM head's."""
    spec = recipe.spec_for("embeddings")
    rows = embed.shape[0]
    if spec.bits:
        if not fused:
            raise ModelFormatError("quantized embeddings need onnxruntime's GatherBlockQuantized (fused graph)")
        if not recipe.shares_embeddings(tied):   # its own table: rows are read directly, so weight error counts
            table = replace(spec, method="mse") if spec.method == "gptq" else spec
            store_nbits(g, "model.embed_tokens", spec, quantize_blocks(embed, table, "model.embed_tokens"))
            return quantized_gather(g, "input_ids", "model.embed_tokens", spec, rows)
        return quantized_gather(g, "input_ids", "lm_head", spec, rows)   # stored with the head, below
    table = g.initializer("model.embed_tokens.weight",
                          embed.astype(np.float16 if spec.kind == "fp16" else np.float32), spec.kind)
    hidden = g.op("Gather", table, "input_ids", base="embed_tokens")
    return g.op("Cast", hidden, to=TensorProto.FLOAT) if spec.kind == "fp16" else hidden


def _calibrator(c: ModelConfig, recipe: Recipe, opts: GraphOptions) -> Calibrator | None:
    if not recipe.calibrated:
        return None
    if opts.calibration is None:
        raise ModelFormatError(f"recipe {recipe.name} is calibrated (GPTQ) but no calibration tokens were given")
    cos, sin = rope_tables(c.head_dim, c.rope_theta, opts.calibration.ids.shape[1], c.rope_scaling)
    def quantize(name: str, w: np.ndarray, hessian: np.ndarray) -> BlockQuant | None:
        wspec = recipe.spec_for_linear(name)
        if not wspec.bits:
            return None
        if wspec.method == "gptq":
            return gptq_quantize(w, hessian, wspec, name)
        return quantize_blocks(w, wspec, name)

    return Calibrator(c, opts.calibration, cos, sin, quantize)
