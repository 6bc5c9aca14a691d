"""The ONNX artifact folder: files, manifest, genai config, ORT format, CLI options, and bad input."""
from __future__ import annotations

import argparse
import inspect
import json

import onnx
import pytest

import edgellm
from edgellm.converters.manifest import read_manifest
from edgellm.converters.onnx import ONNX_CLI_OPTIONS, ONNX_QUANTS, convert_to_onnx
from edgellm.errors import QuantizationError, UnsafePathError, UnsupportedArchitectureError


def test_artifact_files_manifest_and_genai_config(tiny_models, tmp_path):
    folder = tiny_models("Qwen2ForCausalLM", tied=False)
    res = convert_to_onnx(folder, tmp_path / "art", "int4")
    m = read_manifest(tmp_path / "art")
    assert (m.format, m.file, m.quant) == ("onnx", "model.onnx", "int4")
    for name in m.files:
        assert (tmp_path / "art" / name).is_file(), name
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "tokenizer_config.json"} <= set(m.files)
    assert m.extra["weights"] == "int4-gptq-b32, mlp.down_proj: int4-gptq-b64"
    assert m.extra["lm_head"] == m.extra["embeddings"] == "int4-gptq-b32"
    assert m.extra["shared_embeddings"] is False          # untied: the table is stored on its own
    assert m.extra["calibration"]["source"] == "edgellm-mix" and m.extra["calibration"]["tokens"] >= 512
    assert m.tensor_types["int4-gptq-b32"] == 2 * 3 + 2   # qkv, o, gate_up per layer; LM head; embeddings
    assert m.tensor_types["int4-gptq-b64"] == 2           # down per layer
    cfg = json.loads((tmp_path / "art" / "genai_config.json").read_text())
    dec = cfg["model"]["decoder"]
    assert (dec["num_hidden_layers"], dec["num_key_value_heads"], dec["head_size"]) == (2, 2, 16)
    assert dec["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert cfg["model"]["type"] == "qwen2" and cfg["search"]["past_present_share_buffer"] is True
    assert res.path == tmp_path / "art" / "model.onnx"
    assert not list(tmp_path.glob(".art.partial-*"))


def test_ort_format_and_required_operators(tiny_models, tmp_path):
    res = convert_to_onnx(tiny_models("LlamaForCausalLM"), tmp_path / "m", "int4", ort_format=True)
    assert (tmp_path / "m" / "model.ort").stat().st_size > 1000
    ops = (tmp_path / "m" / "required_operators.config").read_text()
    assert "com.microsoft;1;" in ops and "GroupQueryAttention" in ops and "MatMulNBits" in ops
    assert "model.ort" in res.files


def test_unsupported_architecture_leaves_nothing(tiny_models, tmp_path):
    folder = tiny_models("LlamaForCausalLM", config_overrides={"architectures": ["FalconForCausalLM"]})
    with pytest.raises(UnsupportedArchitectureError, match="FalconForCausalLM"):
        convert_to_onnx(folder, tmp_path / "out", "int4")
    assert list(tmp_path.iterdir()) == []


def test_block_size_not_dividing_is_typed_error(tiny_models, tmp_path):
    folder = tiny_models("LlamaForCausalLM", hidden=48, heads=4, kv_heads=2, ffn=96)
    with pytest.raises(QuantizationError, match=r"layers\.0\.attn\.qkv_proj.*48.*32"):
        convert_to_onnx(folder, tmp_path / "out", "int4", block_size=32)
    assert list(tmp_path.iterdir()) == []
    # fp16 needs no blocks: the same model converts
    assert convert_to_onnx(folder, tmp_path / "fp16", "fp16").path.is_file()


def test_tampered_external_data_location_is_refused(tiny_models, tmp_path):
    res = convert_to_onnx(tiny_models("LlamaForCausalLM"), tmp_path / "art", "fp32")
    proto = onnx.load(str(res.path), load_external_data=False)
    (tmp_path / "x").write_bytes(b"\0" * 1_000_000)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../x"
    res.path.write_bytes(proto.SerializeToString())
    with pytest.raises(UnsafePathError, match=r"\.\./x"):
        edgellm.load(tmp_path / "art")


def test_cli_options_are_convert_keywords():
    params = inspect.signature(convert_to_onnx).parameters
    parser = argparse.ArgumentParser()
    for flag, kwargs in ONNX_CLI_OPTIONS:
        assert flag.startswith("--") and kwargs["dest"] in params, flag
        parser.add_argument(flag, **kwargs)
    ns = parser.parse_args(["--block-size", "64", "--symmetric", "--standard-ops", "--lm-head", "fp16"])
    assert (ns.block_size, ns.symmetric, ns.fused, ns.lm_head) == (64, True, False, "fp16")
    assert {"int4", "int4-rtn", "int4-mse", "int8", "fp16", "fp32"} <= set(ONNX_QUANTS)
