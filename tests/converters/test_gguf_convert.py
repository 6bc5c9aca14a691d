"""HF -> GGUF on tiny random models: every architecture, tied/untied, sharded, every quant type, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgellm
from edgellm.converters.gguf import convert_to_gguf
from edgellm.converters.gguf_reading import field_value, open_gguf
from edgellm.converters.gguf_to_hf import gguf_to_hf
from edgellm.converters.gguf_types import QUANT_TYPES, quantize_q8_0
from edgellm.converters.hf import read_hf_model
from edgellm.converters.manifest import read_manifest, sha256_file
from edgellm.errors import (ConfigError, ConversionError, ModelFormatError, OutputPathError, QuantizationError, TokenizerError,
                            UnsupportedArchitectureError)

ARCHS = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tied", [True, False])
def test_f32_round_trip_through_gguf_is_exact(arch: str, tied: bool, tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    """HF -> GGUF F32 -> HF gives back every tensor bit for bit (names, Q/K permutation, biases, tying)."""
    src = tiny_models(arch, tied=tied)
    res = convert_to_gguf(src, tmp_path / "gguf", "F32")
    reader = open_gguf(res.path)
    names = {t.name for t in reader.tensors}
    assert ("output.weight" in names) == (not tied)
    assert ("blk.0.attn_q.bias" in names) == (arch == "Qwen2ForCausalLM")
    assert field_value(reader, "general.architecture") == ("qwen2" if arch == "Qwen2ForCausalLM" else "llama")
    back = gguf_to_hf(res.path, tmp_path / "back", dtype="F32")
    with read_hf_model(src) as a, read_hf_model(back) as b:
        assert b.config.tie_word_embeddings == tied
        assert set(a.tensor_infos()) == set(b.tensor_infos())
        for name in a.tensor_infos():
            assert np.array_equal(a.tensor(name), b.tensor(name)), name


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_loads_and_generates_in_llama_cpp(arch: str, tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    res = convert_to_gguf(tiny_models(arch), tmp_path / "a", "F16")
    with edgellm.load(tmp_path / "a", n_ctx=128) as model:
        out = model.generate("hello world", max_tokens=8, temperature=0.0)
        assert out.metrics.generated_tokens >= 1 and len(out.tokens) <= 8
        logits = model.logits(model.tokenize("the quick brown fox"))
        assert logits.shape[1] == 384 and np.isfinite(logits).all()
    assert res.path.name.endswith("-F16.gguf")


def test_sharded_and_single_file_give_identical_gguf(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    a = convert_to_gguf(tiny_models(shards=1), tmp_path / "one", "Q8_0")
    b = convert_to_gguf(tiny_models(shards=3), tmp_path / "three", "Q8_0")
    ra, rb = open_gguf(a.path), open_gguf(b.path)
    for ta, tb in zip(ra.tensors, rb.tensors):
        assert ta.name == tb.name and np.array_equal(ta.data, tb.data)


def test_our_q8_0_matches_gguf_py_reference() -> None:
    import gguf

    x = np.random.default_rng(1).normal(size=(8, 64)).astype(np.float32)
    ours = quantize_q8_0(x)
    ref = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
    assert ours.shape == ref.shape
    deq_ours = gguf.quants.dequantize(ours, gguf.GGMLQuantizationType.Q8_0)
    deq_ref = gguf.quants.dequantize(ref, gguf.GGMLQuantizationType.Q8_0)
    assert np.abs(deq_ours - deq_ref).max() <= np.abs(x).max() / 127 + 1e-6
    assert np.abs(deq_ours - x).max() <= np.abs(x).max() / 127


def test_manifest_records_what_was_written(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    res = convert_to_gguf(tiny_models(), tmp_path / "m", "Q8_0", context_length=256)
    m = read_manifest(tmp_path / "m")
    assert m.format == "gguf" and m.quant == "Q8_0" and m.file == res.path.name
    assert m.sha256 == sha256_file(res.path) and m.size_bytes == res.path.stat().st_size
    assert m.context_length == 256 and m.tokenizer["pre"] == "smollm" and m.tokenizer["vocab_size"] == 384
    assert m.tensor_types == {"F32": 5, "Q8_0": 15}
    assert field_value(open_gguf(res.path), "llama.context_length") == 256
    assert not list((tmp_path / "m").glob("*.partial"))


K_TINY = dict(hidden=256, heads=4, kv_heads=2, ffn=512)  # rows divisible by 256 so K-quants apply


@pytest.mark.parametrize("quant", [q for q, spec in QUANT_TYPES.items() if not spec.needs_imatrix])
def test_every_quant_type_converts_and_loads(quant: str, tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    res = convert_to_gguf(tiny_models(**K_TINY), tmp_path / quant, quant, threads=1)
    main = QUANT_TYPES[quant].main_type
    assert main in res.tensor_types, res.tensor_types
    assert field_value(open_gguf(res.path), "general.file_type") == QUANT_TYPES[quant].file_type
    with edgellm.load(res.path, n_ctx=64) as model:
        assert model.generate("hello", max_tokens=3, temperature=0.0).metrics.generated_tokens >= 1


def test_k_quant_fallbacks_are_reported(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    res = convert_to_gguf(tiny_models(hidden=96, heads=4, kv_heads=2, ffn=256), tmp_path / "k", "Q4_K_M")
    assert res.fallbacks, "96 columns are not divisible by 256: llama.cpp must fall back"
    assert all(f["wanted"] in ("Q4_K", "Q6_K", "Q5_K") for f in res.fallbacks)
    assert read_manifest(tmp_path / "k").fallbacks == res.fallbacks


@pytest.mark.parametrize("quant", ["IQ2_XXS", "IQ1_S"])
def test_imatrix_types_are_made_with_edgellms_matrix_and_refused_before_any_work_without(
        quant: str, tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    folder = tiny_models(**K_TINY)
    with pytest.raises(QuantizationError, match="importance matrix"):
        convert_to_gguf(folder, tmp_path / "off", quant, imatrix=False)
    assert not (tmp_path / "off").exists()
    res = convert_to_gguf(folder, tmp_path / "on", quant)
    manifest = read_manifest(tmp_path / "on")
    assert quant in res.tensor_types and (tmp_path / "on" / manifest.extra["imatrix"]["file"]).is_file()
    with edgellm.load(res.path, n_ctx=64) as model:
        assert model.generate("hello", max_tokens=2, temperature=0.0).metrics.generated_tokens >= 1


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_unknown_architecture_lists_supported(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    bad = _copy(tiny_models(), tmp_path / "bad")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["architectures"] = ["GPTNeoXForCausalLM"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedArchitectureError, match="LlamaForCausalLM"):
        convert_to_gguf(bad, tmp_path / "out", "F16")
    assert not (tmp_path / "out").exists()


def test_config_missing_keys_during_convert(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    bad = _copy(tiny_models(), tmp_path / "bad")
    cfg = json.loads((bad / "config.json").read_text())
    del cfg["num_attention_heads"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="num_attention_heads"):
        convert_to_gguf(bad, tmp_path / "out", "F16")
    assert not (tmp_path / "out").exists()


def test_truncated_weights_leave_no_artifact(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    bad = _copy(tiny_models(), tmp_path / "bad")
    f = bad / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-4096])
    with pytest.raises(ModelFormatError):
        convert_to_gguf(bad, tmp_path / "out", "Q4_K_M")
    assert not (tmp_path / "out").exists()


def test_shape_disagreeing_with_config(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    bad = _copy(tiny_models(), tmp_path / "bad")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["intermediate_size"] = 256
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="implies"):
        convert_to_gguf(bad, tmp_path / "out", "F16")


def test_unknown_pre_tokenizer_is_an_error_unless_overridden(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    bad = _copy(tiny_models(), tmp_path / "bad")
    tok = json.loads((bad / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {"type": "Whitespace"}
    (bad / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(TokenizerError, match="pre-tokenizer"):
        convert_to_gguf(bad, tmp_path / "out", "F16")
    assert not (tmp_path / "out").exists()
    res = convert_to_gguf(bad, tmp_path / "ok", "F16", pre_tokenizer="gpt-2")
    assert field_value(open_gguf(res.path), "tokenizer.ggml.pre") == "gpt-2"


def test_output_path_unwritable(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputPathError):
        convert_to_gguf(tiny_models(), blocker / "out", "F16")
    with pytest.raises(OutputPathError):
        convert_to_gguf(tiny_models(), "/proc/edgellm-out", "F16")
    assert blocker.read_text() == "not a folder"


LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}


def test_llama3_rope_scaling_becomes_rope_freqs_and_matches_the_reference(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    from edgellm.converters.rope import rope_inv_freq
    from tests.fixtures.reference_llama import ReferenceLlama, kl_divergence

    src = tiny_models(config_overrides={"rope_scaling": LLAMA3_ROPE, "rope_theta": 500000.0})
    res = convert_to_gguf(src, tmp_path / "l3", "F32")
    reader = open_gguf(res.path)
    freqs = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
    base = rope_inv_freq(16, 500000.0, None)
    assert np.allclose(np.asarray(freqs.data), base / rope_inv_freq(16, 500000.0, LLAMA3_ROPE), rtol=1e-6)
    ids = list(range(3, 120))  # past the original 64 positions, where the scaling matters
    with edgellm.load(res.path, n_ctx=256) as model:
        ours = model.logits(ids)
    ref = ReferenceLlama(src).logits(ids)
    assert float(kl_divergence(ref, ours).mean()) < 1e-3
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() > 0.95


def test_unsupported_rope_scaling_is_refused(tiny_models, tmp_path: Path) -> None:  # noqa: ANN001
    src = tiny_models(config_overrides={"rope_scaling": {"rope_type": "longrope", "factor": 4.0}})
    with pytest.raises(ConversionError, match="longrope"):
        convert_to_gguf(src, tmp_path / "x", "F16")
    assert not (tmp_path / "x").exists()
