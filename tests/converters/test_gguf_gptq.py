"""GPTQ rounding in llama.cpp block layouts (converters/gguf_gptq.py, convert_to_gguf(rounding="gptq")): it lowers
the calibration output error against llama.cpp's own rounding with the same headers, the encoded tensors reach
the file byte for byte (llama.cpp copies a tensor already in its target type), and llama.cpp's logits on the file
agree with edgellm's numpy forward pass over the same dequantized weights."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import gguf
import numpy as np
import pytest

from edgellm.converters.families.weights import reference_logits
from edgellm.converters.gguf import convert_to_gguf
from edgellm.converters.gguf_blocks import LAYOUTS, layout
from edgellm.converters.gguf_gptq import calibrate_gptq, encode_gptq
from edgellm.converters.gguf_to_hf import gguf_to_hf
from edgellm.converters.quant_plan import gguf_layout
from edgellm.errors import QuantizationError
from tests.converters.test_families import agreement, llama_cpp_logits
from tests.fixtures.tiny import make_tiny_model

TOKENS = 512          # calibration tokens (one sequence): enough for a 2-layer model
IDS = [1, 17, 42, 99, 5, 230, 64, 12, 7, 150, 88, 3, 61, 200, 33, 9]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # hidden 256: the K-quants apply to every matrix (no 32-block fallbacks)
    return make_tiny_model(tmp_path_factory.mktemp("gptq") / "m", hidden=256, heads=4, kv_heads=2, ffn=512,
                           layers=2)


def _correlated(k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, k)).astype(np.float32) * np.exp(rng.standard_normal(k)).astype(np.float32)
    x = rng.standard_normal((2048, k)).astype(np.float32) @ a / np.sqrt(k)
    return (x.T @ x).astype(np.float64) / len(x)


@pytest.mark.parametrize("ggml_type", list(LAYOUTS))
def test_gptq_lowers_the_output_error_with_llama_cpp_headers(ggml_type: str) -> None:
    h = _correlated(512)
    w = np.random.default_rng(2).standard_normal((64, 512)).astype(np.float32) * 0.05
    enc, values = encode_gptq(w, ggml_type, h, measure=True)
    assert enc.error_gptq < 0.8 * enc.error_rtn, (enc.error_gptq, enc.error_rtn)
    deq = gguf.quants.dequantize(enc.raw, gguf.GGMLQuantizationType[ggml_type])
    assert np.array_equal(deq, values)
    # same header bits as llama.cpp's own encoding (only the codes moved)
    from edgellm.converters.ggml_quantize import ggml_quantize

    lay = layout(ggml_type)
    own = ggml_quantize(w, ggml_type, np.diag(h).astype(np.float32))
    bits = lambda r: np.unpackbits(r.reshape(r.shape[0], -1, lay.nbytes), axis=-1, bitorder="little")  # noqa: E731
    assert np.array_equal(bits(enc.raw)[..., ~lay.code_mask()], bits(own)[..., ~lay.code_mask()])


@pytest.mark.parametrize("ggml_type", ["Q4_0", "IQ4_NL"])
def test_scale_refit_lowers_the_error_of_fixed_codes(ggml_type: str) -> None:
    from edgellm.converters.gguf_gptq import _output_error, grid_gptq, refit_scales
    from edgellm.converters.gguf_blocks import pack, parse
    from edgellm.converters.ggml_quantize import ggml_quantize
    from edgellm.converters.gptq import prepare

    h = _correlated(256, seed=4)
    w = np.random.default_rng(6).standard_normal((32, 256)).astype(np.float32) * 0.05
    blocks = parse(ggml_type, ggml_quantize(w, ggml_type, np.diag(h).astype(np.float32)))
    codes = grid_gptq(w, blocks, prepare(h, True))
    fitted = refit_scales(w, blocks, codes, h)
    assert np.array_equal(parse(ggml_type, pack(fitted, codes)).codes, codes)
    assert np.array_equal(fitted.raw[:, 2:18], blocks.raw[:, 2:18])             # only the float16 scales moved
    assert _output_error(w, fitted.values(codes), h) < _output_error(w, blocks.values(codes), h)
    with pytest.raises(QuantizationError, match="not implemented"):
        refit_scales(w, parse("Q4_1", ggml_quantize(w, "Q4_1")), codes, h)


@pytest.mark.parametrize("quant", ["Q4_0", "Q4_K_M"])
def test_gptq_file_is_what_edgellm_encoded_and_llama_cpp_agrees_with_numpy(quant: str, tiny: Path,
                                                                            tmp_path: Path) -> None:
    res = convert_to_gguf(tiny, tmp_path / "out", quant, imatrix=True, rounding="gptq", calibration_tokens=TOKENS,
                          mix="off")
    manifest = json.loads(res.manifest_path.read_text())
    record = manifest["extra"]["rounding"]
    assert record["method"] == "gptq" and sum(record["tensors"].values()) == 2 * 7
    # the types are the ones quant_plan predicts for a quantizer that has an importance matrix
    planned = Counter(t.type for t in gguf_layout(tiny).types(quant, imatrix=True))
    assert Counter(res.tensor_types) == planned
    # llama.cpp copied every encoded tensor byte for byte (deterministic pass: encode again and compare)
    types = {t.name: t.type for t in gguf_layout(tiny).types(quant, imatrix=True)}
    again = calibrate_gptq(tiny, types, tokens=TOKENS)
    reader = gguf.GGUFReader(res.path)
    stored = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert set(again.tensors) <= set(stored)
    for name, enc in again.tensors.items():
        assert np.array_equal(stored[name].reshape(-1), enc.raw.reshape(-1)), name
    # llama.cpp's logits on the file vs numpy over the file's dequantized weights (folder rebuilt from the GGUF)
    back = gguf_to_hf(res.path, tmp_path / "deq", dtype="F32", overwrite=True)
    got = llama_cpp_logits(res.path, IDS)
    same = agreement(got, reference_logits(back, IDS).astype(np.float64))
    unquantized = agreement(got, reference_logits(tiny, IDS).astype(np.float64))
    print(quant, "llama.cpp vs numpy (dequantized, float):", same, unquantized)
    assert same[0] >= 0.8 and same[1] < 0.05, same
    assert same[1] < 0.5 * unquantized[1], (same, unquantized)   # much closer to its own weights than to the float
    assert same[0] >= unquantized[0]


def test_rounding_is_checked_before_any_work(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match="needs the calibration pass"):
        convert_to_gguf(tiny, tmp_path / "a", "Q4_0", imatrix=False, rounding="gptq")
    with pytest.raises(QuantizationError, match="unknown rounding"):
        convert_to_gguf(tiny, tmp_path / "b", "Q4_0", rounding="nearest")  # type: ignore[arg-type]  # a bad value on purpose
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_llama_rounding_is_recorded(tiny: Path, tmp_path: Path) -> None:
    res = convert_to_gguf(tiny, tmp_path / "out", "Q4_0", imatrix=True, rounding="llama", calibration_tokens=TOKENS)
    assert json.loads(res.manifest_path.read_text())["extra"]["rounding"] == {"method": "llama"}


@pytest.mark.slow
def test_gptq_lowers_output_error_on_a_real_matrix() -> None:
    """SmolLM2's layer-0 query and gate weights against the Hessian of their real input (prose through the
    embedding and the first norm): GPTQ's codes beat llama.cpp's rounding with the same headers. (Not Q4_1: the
    folder is rebuilt from a Q4_1 GGUF, so its weights already lie on a Q4_1 grid and both roundings are exact.)"""
    from edgellm.converters.families.numpy_ops import hessian, rms
    from edgellm.converters.hf import read_hf_model
    from tests.fixtures.smollm2 import smollm2_hf_dir
    from tests.fixtures.texts import PROSE
    from tokenizers import Tokenizer

    folder = smollm2_hf_dir()
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(PROSE).ids[:512]
    with read_hf_model(folder) as m:
        embed = np.asarray(m.tensor("model.embed_tokens.weight"), np.float32)
        norm = np.asarray(m.tensor("model.layers.0.input_layernorm.weight"), np.float32)
        wq = np.asarray(m.tensor("model.layers.0.self_attn.q_proj.weight"), np.float32)
        norm2 = np.asarray(m.tensor("model.layers.0.post_attention_layernorm.weight"), np.float32)
        wg = np.asarray(m.tensor("model.layers.0.mlp.gate_proj.weight"), np.float32)
    h = hessian(rms(embed[ids], norm, 1e-5))
    for t in ("Q4_0", "Q5_0", "IQ4_NL"):
        enc, _ = encode_gptq(wq, t, h, measure=True)
        assert enc.error_gptq < 0.7 * enc.error_rtn, (t, enc.error_gptq, enc.error_rtn)
    h2 = hessian(rms(embed[ids], norm2, 1e-5))
    enc, _ = encode_gptq(wg, "Q4_0", h2, measure=True)
    assert enc.error_gptq < 0.7 * enc.error_rtn
