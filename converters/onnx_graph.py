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
from .gptq import gptq_quantize
from .hf import HFModel
from .onnx_block_ops import OnnxOps
from .onnx_ops import GraphWriter, linear, quantized_gather, store_nbits
from .quant import BlockQuant, Recipe, quantize_blocks


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

    embed = weights.need("token_embd.weight")
    hidden = _embeddings(g, embed, recipe, a.tied, fused)
    scale = family.embed_scale(a)
    if scale is not None:
        hidden = ops.scale(hidden, scale)
    calib = _calibrator(family, a, recipe, opts)
    if calib is not None:
        calib.embed(embed, scale)
    h, delta = hidden, None
    from tqdm import tqdm

    desc = "ONNX layers (GPTQ-calibrated)" if calib is not None else "ONNX layers"
    for i in tqdm(range(a.layers), desc=desc, unit="layer", disable=not opts.progress, leave=False):
        w = weights.layer(i)
        ops.quantized = calib.layer(i, w) if calib is not None else {}
        h, delta = family.block(ops, a, i, w, h, delta)

    norm_w = weights.need(family.final_norm)
    x, _ = ops.add_norm(h, delta, norm_w, a.eps, "norm")
    head = weights.get("output.weight")
    if a.tied or head is None:
        head = embed
    head_spec = recipe.spec_for("lm_head")
    head_bq = None
    if head_spec.method == "gptq":
        assert calib is not None
        head_bq = gptq_quantize(head, calib.final_hessian(np.asarray(norm_w, np.float32)), head_spec, "lm_head")
    logits = linear(g, x, head, head_spec, "lm_head", fused, opts.accuracy_level, bq=head_bq)
    factor = family.logit_scale(a)
    if factor is not None:
        logits = ops.scale(logits, factor)
    cap = family.final_softcap(a)
    if cap:
        logits = ops.softcap(logits, cap)
    g.output("Identity", [logits], "logits")


def _embeddings(g: GraphWriter, embed: np.ndarray, recipe: Recipe, tied: bool, fused: bool) -> str:
    """Hidden states [B, S, D] for input_ids: a float table, its own quantized table, or the LM head's."""
    spec = recipe.spec_for("embeddings")
    rows = embed.shape[0]
    if spec.bits:
        if not fused:
            raise ModelFormatError("quantized embeddings need onnxruntime's GatherBlockQuantized (fused graph)")
        if not recipe.shares_embeddings(tied):   # its own table: rows are read directly, so weight error counts
            table_spec = replace(spec, method="mse") if spec.method == "gptq" else spec
            store_nbits(g, "model.embed_tokens", spec, quantize_blocks(embed, table_spec, "model.embed_tokens"))
            return quantized_gather(g, "input_ids", "model.embed_tokens", spec, rows)
        return quantized_gather(g, "input_ids", "lm_head", spec, rows)   # stored with the head, below
    table = g.initializer("model.embed_tokens.weight",
                          embed.astype(np.float16 if spec.kind == "fp16" else np.float32), spec.kind)
    hidden = g.op("Gather", table, "input_ids", base="embed_tokens")
    return g.op("Cast", hidden, to=TensorProto.FLOAT) if spec.kind == "fp16" else hidden


def _calibrator(family: Family, a: Any, recipe: Recipe, opts: GraphOptions) -> Calibrator | None:
    if not recipe.calibrated:
        return None
    if opts.calibration is None:
        raise ModelFormatError(f"recipe {recipe.name} is calibrated (GPTQ) but no calibration tokens were given")

    def quantize(name: str, w: np.ndarray, hessian: np.ndarray) -> BlockQuant | None:
        wspec = recipe.spec_for_linear(name)
        if not wspec.bits:
            return None
        if wspec.method == "gptq":
            return gptq_quantize(w, hessian, wspec, name)
        return quantize_blocks(w, wspec, name)

    return Calibrator(family, a, opts.calibration, quantize)
