"""llama.cpp block layouts (converters/gguf_blocks.py): llama.cpp's own bytes (ggml_quantize_chunk) parse into
scale * level + offset exactly as gguf-py dequantizes them, re-pack byte for byte, and new codes packed into
the same headers dequantize (gguf-py) to the values edgellm intended."""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from edgellm.converters.ggml_quantize import ggml_quantize, row_bytes
from edgellm.converters.gguf_blocks import LAYOUTS, layout, nearest_codes, pack, parse
from edgellm.errors import QuantizationError

TYPES = list(LAYOUTS)


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 512)).astype(np.float32) * 0.02
    w[0, :64] *= 40          # an outlier run: big scales next to small ones
    w[1, 32:64] = 0.0        # an all-zero block
    return w


@pytest.mark.parametrize("ggml_type", TYPES)
@pytest.mark.parametrize("with_imatrix", [False, True])
def test_llama_cpp_bytes_parse_and_repack_exactly(ggml_type: str, with_imatrix: bool, weights: np.ndarray) -> None:
    imatrix = np.linspace(0.1, 3.0, weights.shape[1]).astype(np.float32) if with_imatrix else None
    raw = ggml_quantize(weights, ggml_type, imatrix)
    assert raw.shape == (weights.shape[0], row_bytes(ggml_type, weights.shape[1]))
    blocks = parse(ggml_type, raw)
    deq = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[ggml_type])
    assert np.array_equal(blocks.values(), deq)                      # bit-exact, not approximately
    assert np.array_equal(pack(blocks, blocks.codes), raw)           # byte-identical round trip
    assert np.abs(deq - weights).mean() < 0.2 * np.abs(weights).mean()   # and the values are the weights'


@pytest.mark.parametrize("ggml_type", TYPES)
def test_new_codes_dequantize_to_the_intended_values_with_headers_kept(ggml_type: str, weights: np.ndarray) -> None:
    raw = ggml_quantize(weights, ggml_type)
    blocks = parse(ggml_type, raw)
    lay = layout(ggml_type)
    codes = np.random.default_rng(5).integers(0, len(lay.levels), blocks.codes.shape).astype(np.uint8)
    new = pack(blocks, codes)
    assert not np.array_equal(new, raw)
    got = gguf.quants.dequantize(new, gguf.GGMLQuantizationType[ggml_type])
    assert np.array_equal(got, blocks.values(codes))
    # every header bit (d, dmin, sub-block scales) is untouched
    header = ~lay.code_mask()
    bits = lambda r: np.unpackbits(r.reshape(r.shape[0], -1, lay.nbytes), axis=-1, bitorder="little")  # noqa: E731
    assert np.array_equal(bits(new)[..., header], bits(raw)[..., header])
    assert np.array_equal(parse(ggml_type, new).codes, codes)


@pytest.mark.parametrize("ggml_type", ["Q4_0", "IQ4_NL", "Q8_0", "Q6_K"])
def test_nearest_code_is_the_nearest_level(ggml_type: str) -> None:
    lay = layout(ggml_type)
    t = np.random.default_rng(1).uniform(lay.levels.min() - 3, lay.levels.max() + 3, 4000).astype(np.float32)
    got = lay.levels[nearest_codes(lay)(t)]
    best = np.abs(t[:, None] - lay.levels[None, :]).min(axis=1)
    assert np.allclose(np.abs(t - got), best)


def test_layout_and_quantizer_errors_are_typed() -> None:
    with pytest.raises(QuantizationError, match="no block layout"):
        layout("IQ2_XXS")
    with pytest.raises(QuantizationError, match="multiple of 256"):
        ggml_quantize(np.zeros((2, 576), np.float32), "Q4_K")
    with pytest.raises(QuantizationError, match="importance matrix"):
        ggml_quantize(np.zeros((2, 256), np.float32), "IQ2_XXS")
    with pytest.raises(QuantizationError, match="row bytes"):
        parse("Q4_0", np.zeros((2, 17), np.uint8))
