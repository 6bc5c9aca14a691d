"""Tiny random models through the ONNX converter, fused and standard graphs, against the numpy reference."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from tokenizers import Tokenizer
import pytest

from edgellm.converters.onnx import convert_to_onnx
from edgellm.converters.quant import get_recipe, quantize_blocks
from tests.fixtures.texts import PROSE
from tests.fixtures.reference_llama import ReferenceLlama, kl_divergence

CASES = [("LlamaForCausalLM", True), ("MistralForCausalLM", False), ("Qwen2ForCausalLM", False),
         ("Qwen2ForCausalLM", True)]
IDS = [5, 17, 33, 2, 100, 7, 250, 9, 11, 12, 300, 42]


def run_session(path: Path, ids: list[int], layers: int = 2, kv: int = 2, hd: int = 16) -> np.ndarray:
    so = ort.SessionOptions()
    # basic level: no QDQ fusion that would quantize activations, so the graph's own math is checked
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    n = len(ids)
    feed = {"input_ids": np.array([ids]), "attention_mask": np.ones((1, n), np.int64),
            "position_ids": np.arange(n)[None]}
    for i in range(layers):
        for k in ("key", "value"):
            feed[f"past_key_values.{i}.{k}"] = np.zeros((1, kv, 0, hd), np.float32)
    return s.run(["logits"], feed)[0][0]


def reference_for(folder: Path, quant: str) -> ReferenceLlama:
    """The reference on the weights the artifact really holds (quantized then dequantized)."""
    ref = ReferenceLlama(folder)
    recipe = get_recipe(quant)

    def transform(name: str, w: np.ndarray) -> np.ndarray:
        role = "embeddings" if name == "model.embed_tokens.weight" else "lm_head" if name == "lm_head.weight" else "weight"
        spec = recipe.spec_for(role)
        if spec.bits:
            return quantize_blocks(w.astype(np.float32), spec, name).dequantize()
        return w.astype(np.float16).astype(np.float64) if spec.kind == "fp16" else w

    out = ref.with_weights(transform)
    if ref.c.tie_word_embeddings:  # tied: the LM head is quantized with the head's spec, the table with its own
        spec = recipe.spec_for("lm_head")
        e = ref.w["model.embed_tokens.weight"].astype(np.float32)
        out.w["lm_head.weight"] = (quantize_blocks(e, spec).dequantize() if spec.bits else
                                   e.astype(np.float16) if spec.kind == "fp16" else e).astype(np.float64)
    return out


@pytest.mark.parametrize("arch,tied", CASES)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "standard"])
@pytest.mark.parametrize("quant", ["fp32", "fp16", "int8", "int4-rtn"])
def test_graph_matches_reference(tiny_models, tmp_path, arch, tied, fused, quant):
    folder = tiny_models(arch, tied=tied)
    res = convert_to_onnx(folder, tmp_path / "out", quant, fused=fused, accuracy_level=1)
    got = run_session(res.path, IDS)
    want = reference_for(folder, quant).logits(IDS)
    kl = kl_divergence(want, got).mean()
    assert got.shape == (len(IDS), 384)
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9
    # fp32/fp16/quantized weights are reproduced exactly; what remains is float32 arithmetic
    assert kl < 1e-4, f"{arch} {quant} fused={fused}: KL {kl:.2e}"
    assert np.abs(got - want).max() < 5e-3 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("arch,tied", CASES)
def test_gptq_graph_computes_with_the_weights_it_stores(tiny_models, tmp_path, arch, tied):
    """The calibrated recipe (GPTQ weights, one int4 table for head and tied embeddings): the graph's logits
    equal the numpy reference run on the weights read back from the artifact's initializers."""
    folder = tiny_models(arch, tied=tied)
    res = convert_to_onnx(folder, tmp_path / "out", "int4", accuracy_level=1, calibration_tokens=512)
    proto = onnx.load(str(res.path), load_external_data=False)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("GatherBlockQuantized") == 1
    names = {t.name for t in proto.graph.initializer}
    assert ("model.embed_tokens.weight" in names) is False
    assert ("model.embed_tokens.qweight" in names) is (not tied)     # untied: its own int4 table
    got = run_session(res.path, IDS)
    ref = ReferenceLlama(folder).with_stored(res.path)
    if not tied:   # the separate embedding table: the same int4 layout, MSE-searched scales
        spec = replace(get_recipe("int4").spec_for("embeddings"), method="mse")
        ref.w["model.embed_tokens.weight"] = quantize_blocks(
            ReferenceLlama(folder).w["model.embed_tokens.weight"].astype(np.float32), spec).dequantize()
    kl = kl_divergence(ref.logits(IDS), got).mean()
    assert kl < 1e-4, f"{arch}: KL {kl:.2e}"
    m = json.loads((tmp_path / "out" / "edgellm.json").read_text())
    assert m["extra"]["calibration"]["tokens"] >= 512 and m["extra"]["shared_embeddings"] is tied


def test_gptq_lowers_output_error_against_rtn(tiny_models, tmp_path):
    """Same bytes, calibrated rounding: GPTQ's logits are closer to fp32 than round-to-nearest's."""
    folder = tiny_models("LlamaForCausalLM", tied=False)
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(PROSE).ids[:96]
    want = ReferenceLlama(folder).logits(ids)
    kls = {}
    for q in ("int4-rtn", "int4"):
        res = convert_to_onnx(folder, tmp_path / q, q, lm_head="int8", embeddings="fp32", accuracy_level=1,
                              calibration_tokens=1024)
        kls[q] = float(kl_divergence(want, run_session(res.path, ids)).mean())
    print(f"\ntiny Llama int4 KL vs fp32: RTN {kls['int4-rtn']:.4f}, GPTQ {kls['int4']:.4f}")
    assert kls["int4"] < 0.8 * kls["int4-rtn"]


def test_fused_and_standard_use_their_op_sets(tiny_models, tmp_path):
    folder = tiny_models("Qwen2ForCausalLM", tied=False)
    fused = onnx.load(str(convert_to_onnx(folder, tmp_path / "f", "int4").path), load_external_data=False)
    std = onnx.load(str(convert_to_onnx(folder, tmp_path / "s", "int4", fused=False).path), load_external_data=False)
    fused_ops = {(n.domain, n.op_type) for n in fused.graph.node}
    assert ("com.microsoft", "GroupQueryAttention") in fused_ops
    assert ("com.microsoft", "MatMulNBits") in fused_ops
    assert ("com.microsoft", "SkipSimplifiedLayerNormalization") in fused_ops
    assert all(n.domain in ("", "ai.onnx") for n in std.graph.node)
    assert {i.name for i in fused.graph.input} == {i.name for i in std.graph.input}
    assert [o.name for o in fused.graph.output][:3] == ["logits", "present.0.key", "present.0.value"]
    # weights live in the external data file, not inside the protobuf
    assert all(t.data_location == onnx.TensorProto.EXTERNAL or len(t.raw_data) <= 1024 for t in fused.graph.initializer)


def test_int4_symmetric_and_block_sizes(tiny_models, tmp_path):
    folder = tiny_models("LlamaForCausalLM")
    for block, sym in ((16, True), (64, False)):
        res = convert_to_onnx(folder, tmp_path / f"b{block}", "int4-rtn", block_size=block, symmetric=sym,
                              accuracy_level=1)
        got = run_session(res.path, IDS)
        recipe = get_recipe("int4-rtn").with_options(block_size=block, symmetric=sym)
        ref = ReferenceLlama(folder).with_weights(
            lambda n, w: w if n == "model.embed_tokens.weight" else
            quantize_blocks(w.astype(np.float32), recipe.spec_for("weight"), n).dequantize())
        ref.w["lm_head.weight"] = quantize_blocks(ReferenceLlama(folder).w["lm_head.weight"].astype(np.float32),
                                                  recipe.spec_for("lm_head")).dequantize().astype(np.float64)
        ref.w["model.embed_tokens.weight"] = ref.w["model.embed_tokens.weight"].astype(np.float16).astype(np.float64)
        assert kl_divergence(ref.logits(IDS), got).mean() < 1e-4
        has_zp = any(t.name.endswith(".qzeros") for t in onnx.load(str(res.path), load_external_data=False).graph.initializer)
        assert has_zp is (not sym)


@pytest.mark.parametrize("max_pos,scaling", [(2048, None), (131072, {"rope_type": "llama3", "factor": 32.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
                         (4096, {"rope_type": "longrope", "attention_factor": 1.19, "original_max_position_embeddings": 1024,
                                 "short_factor": [1.0 + i / 32 for i in range(32)],
                                 "long_factor": [2.0 + i / 8 for i in range(32)]})])
def test_rope_caches_are_float32_only_and_match_float64(tmp_path, max_pos, scaling):
    """The cos/sin caches come out of onnxruntime within 3e-7 of numpy's float64 table at every position, with
    no float64 tensor or op in the graph (older runtimes on edge targets have no float64 Cos/Sin)."""
    from onnx import TensorProto, helper
    from edgellm.converters.onnx_ops import GraphWriter, rope_caches
    from edgellm.converters.rope import rope_inv_freq, rope_mscale

    g = GraphWriter(tmp_path / "rope.data", "rope.data")
    cos, sin = rope_caches(g, 64, 500000.0, max_pos, scaling)
    g.outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in (cos, sin)]
    g.finish()
    model = g.model("rope", fused=False)
    assert all(t.data_type != TensorProto.DOUBLE for t in model.graph.initializer)
    path = tmp_path / "rope.onnx"
    onnx.save(model, str(path))
    got_cos, got_sin = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {})
    angles = np.arange(max_pos, dtype=np.float64)[:, None] * rope_inv_freq(64, 500000.0, scaling, None)[None, :]
    m = rope_mscale(scaling)
    assert got_cos.shape == got_sin.shape == (max_pos, 32) and got_cos.dtype == np.float32
    assert np.abs(got_cos - m * np.cos(angles)).max() < 3e-7 * max(m, 1.0)
    assert np.abs(got_sin - m * np.sin(angles)).max() < 3e-7 * max(m, 1.0)
