"""The decoder graph of any family, in onnxruntime-genai's I/O names.

Inputs:  input_ids [batch, seq] int64, attention_mask [batch, total_seq] int64, position_ids [batch, seq]
         int64, past_key_values.{i}.key/value [batch, kv_heads, past_seq, head_dim] float32.
Outputs: logits [batch, seq, vocab] float32, present.{i}.key/value [batch, kv_heads, total_seq, head_dim].

The layers come from the family's one block function (families/), run with ops that emit nodes
(onnx_block_ops.py): fused (onnxruntime contrib ops) or standard (ai.onnx ops only).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from onnx import TensorProto, helper

from ..errors import ModelFormatError
from .calibration import CalibrationSet, Calibrator
from .families.base import Family
from .families.weights import Weights
from .gptq import gptq_quantize, prepare
from .hf import HFModel
from .onnx_block_ops import OnnxOps
from .onnx_ops import GraphWriter, linear, quantized_gather
from . import onnx_stream
from .onnx_stream import Source, quantize_parallel, table_source, store_float_streamed, store_nbits_streamed
from .quant import BlockQuant, QuantSpec, Recipe, quantize_blocks


@dataclass(frozen=True)
class GraphOptions:
    recipe: Recipe
    fused: bool = True
    accuracy_level: int = 4
    max_positions: int = 4096   # rows of the RoPE tables = the longest context the graph supports
    calibration: CalibrationSet | None = None   # token ids for GPTQ (required when the recipe is calibrated)
    progress: bool = False                       # a per-layer progress bar on stderr


def _declare_io(g: GraphWriter, a: Any) -> None:
    kv_shape = ["batch_size", a.kv_heads, "past_sequence_length", a.head_dim]
    present_shape = ["batch_size", a.kv_heads, "total_sequence_length", a.head_dim]
    g.inputs += [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    g.outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                   ["batch_size", "sequence_length", a.vocab]))
    for i in range(a.layers):
        for kind in ("key", "value"):
            g.inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, kv_shape))
            g.outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT, present_shape))


def build_decoder(model: HFModel, family: Family, g: GraphWriter, opts: GraphOptions) -> None:
    """Add every node and initializer of the decoder to `g`, one layer's weights at a time."""
    a = family.parse(model.config)
    recipe, fused = opts.recipe, opts.fused
    if a.layers < 1:
        raise ModelFormatError("the model has no layers (num_hidden_layers = 0)")
    _declare_io(g, a)
    ops = OnnxOps(g, recipe, fused, opts.accuracy_level, opts.max_positions)
    weights = Weights(model, family, a)

    embed = table_source(model, weights, "token_embd.weight")
    if embed is None:
        raise ModelFormatError("the model has no token embedding table (token_embd.weight)")
    hidden = _embeddings(g, embed, recipe, a.tied, fused)
    scale = family.embed_scale(a)
    if scale is not None:
        hidden = ops.scale(hidden, scale)
    calib = _calibrator(family, a, recipe, opts, g)
    if calib is not None:
        calib.embed(embed, scale)
    h, delta = hidden, None
    from tqdm import tqdm

    desc = "ONNX layers (GPTQ-calibrated)" if calib is not None else "ONNX layers"
    for i in tqdm(range(a.layers), desc=desc, unit="layer", disable=not opts.progress, leave=False):
        w = weights.layer(i)
        ops.quantized = calib.layer(i, w) if calib is not None else {}
        h, delta = family.block(ops, a, i, w, h, delta)
        del w
        ops.quantized = {}
        for hf, _ in (weights.rules[gg] for gg in weights.rules if gg.startswith(f"blk.{i}.")):
            model.release(hf)      # the layer's mapped pages leave the resident set (they stay in the page cache)

    norm_w = weights.need(family.final_norm)
    x, _ = ops.add_norm(h, delta, norm_w, a.eps, "norm")
    head = None if a.tied else table_source(model, weights, "output.weight", optional=True)
    if head is None:
        head = embed
    head_spec = recipe.spec_for("lm_head")
    head_quantize = None
    if head_spec.method == "gptq":
        assert calib is not None
        h_head = calib.final_hessian(np.asarray(norm_w, np.float32))
        prepared = prepare(h_head)

        def head_quantize(w: np.ndarray, spec: QuantSpec, name: str) -> BlockQuant:   # rows are independent
            return gptq_quantize(w, h_head, spec, name, prepared=prepared)
    logits = linear(g, x, head, head_spec, "lm_head", fused, opts.accuracy_level, quantize=head_quantize,
                    slice_elements=onnx_stream.GPTQ_ROWS * a.hidden if head_quantize is not None else None)
    factor = family.logit_scale(a)
    if factor is not None:
        logits = ops.scale(logits, factor)
    cap = family.final_softcap(a)
    if cap:
        logits = ops.softcap(logits, cap)
    g.output("Identity", [logits], "logits")




def _embeddings(g: GraphWriter, embed: Source, recipe: Recipe, tied: bool, fused: bool) -> str:
    """Hidden states [B, S, D] for input_ids: a float table, its own quantized table, or the LM head's."""
    spec = recipe.spec_for("embeddings")
    rows = embed.shape[0]
    if spec.bits:
        if not fused:
            raise ModelFormatError("quantized embeddings need onnxruntime's GatherBlockQuantized (fused graph)")
        if not recipe.shares_embeddings(tied):   # its own table: rows are read directly, so weight error counts
            table_spec = replace(spec, method="mse") if spec.method == "gptq" else spec
            store_nbits_streamed(g, "model.embed_tokens", spec, embed,
                                 lambda w, _s, name: quantize_blocks(w, table_spec, name))
            return quantized_gather(g, "input_ids", "model.embed_tokens", spec, rows)
        return quantized_gather(g, "input_ids", "lm_head", spec, rows)   # stored with the head, below
    table = store_float_streamed(g, "model.embed_tokens.weight", embed,
                                 np.float16 if spec.kind == "fp16" else np.float32, spec.kind)
    hidden = g.op("Gather", table, "input_ids", base="embed_tokens")
    return g.op("Cast", hidden, to=TensorProto.FLOAT) if spec.kind == "fp16" else hidden


def _calibrator(family: Family, a: Any, recipe: Recipe, opts: GraphOptions, g: GraphWriter) -> Calibrator | None:
    if not recipe.calibrated:
        return None
    if opts.calibration is None:
        raise ModelFormatError(f"recipe {recipe.name} is calibrated (GPTQ) but no calibration tokens were given")
    pool, threads = g.pool, g.threads

    def quantize(name: str, w: np.ndarray, hessian: np.ndarray) -> BlockQuant | None:
        wspec = recipe.spec_for_linear(name)
        if not wspec.bits:
            return None
        if wspec.method == "gptq":      # GPTQ works row by row against one Hessian: row slices in parallel
            p = prepare(hessian)
            return quantize_parallel(pool, w, wspec, name, threads=threads, min_rows=onnx_stream.GPTQ_ROWS,
                                     quantize=lambda x, sp, nm: gptq_quantize(x, hessian, sp, nm, prepared=p))
        return quantize_parallel(pool, w, wspec, name, quantize_blocks, threads)

    return Calibrator(family, a, opts.calibration, quantize)
