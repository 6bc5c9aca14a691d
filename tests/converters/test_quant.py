"""Block-wise int4/int8 quantization: packing, error bounds, the MSE scale search, recipes."""
from __future__ import annotations

import numpy as np
import pytest

from edgellm.converters.quant import (RECIPES, QuantSpec, get_recipe, pack_uint4, quantize_blocks,
                                      unpack_uint4)
from edgellm.errors import QuantizationError


def heavy_tailed(n: int = 64, k: int = 256, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_t(3, size=(n, k)).astype(np.float32) * 0.02


def test_pack_low_nibble_first():
    assert pack_uint4(np.array([1, 2, 15, 0], np.uint8)).tolist() == [0x21, 0x0F]
    v = np.random.default_rng(1).integers(0, 16, (3, 4, 32)).astype(np.uint8)
    assert np.array_equal(unpack_uint4(pack_uint4(v)), v)


@pytest.mark.parametrize("kind,sym", [("int4", False), ("int4", True), ("int8", False), ("int8", True)])
def test_rtn_error_is_within_half_a_step(kind, sym):
    w = heavy_tailed()
    q = quantize_blocks(w, QuantSpec(kind, "rtn", 32, sym))
    err = np.abs(q.dequantize() - w).reshape(64, 8, 32)
    # asymmetric: half a step; symmetric: the side opposite the extreme may clip by up to one step
    assert (err <= np.abs(q.scales)[..., None] * (1.0 if sym else 0.5) + 1e-6).all()
    assert q.values.max() < (16 if kind == "int4" else 256)
    if sym:
        assert (q.zero_points == (8 if kind == "int4" else 128)).all()
    assert q.packed().shape == (64, 8, 16 if kind == "int4" else 32)


def test_int4_zero_point_packing_pads_odd_block_counts():
    q = quantize_blocks(heavy_tailed(4, 96), QuantSpec("int4", "rtn", 32))   # 3 blocks per row
    zp = q.packed_zero_points().reshape(4, 2)
    assert np.array_equal(zp[:, 0] & 0x0F, q.zero_points[:, 0]) and np.array_equal(zp[:, 1] & 0x0F, q.zero_points[:, 2])


def test_mse_search_beats_rtn_at_the_same_size():
    w = heavy_tailed(256, 512)
    rtn = quantize_blocks(w, QuantSpec("int4", "rtn", 32))
    mse = quantize_blocks(w, QuantSpec("int4", "mse", 32))
    e_rtn, e_mse = np.square(rtn.dequantize() - w).mean(), np.square(mse.dequantize() - w).mean()
    print(f"\nint4 b32 weight MSE: rtn {e_rtn:.3e}  mse-search {e_mse:.3e}  ({e_mse / e_rtn:.1%})")
    assert e_mse < 0.97 * e_rtn
    assert mse.packed().nbytes == rtn.packed().nbytes


def test_block_errors_name_the_tensor():
    with pytest.raises(QuantizationError, match="blk.w.*100.*32"):
        quantize_blocks(np.zeros((4, 100), np.float32), QuantSpec("int4", "rtn", 32), "blk.w")
    with pytest.raises(QuantizationError, match="power of two"):
        quantize_blocks(np.zeros((4, 96), np.float32), QuantSpec("int4", "rtn", 48), "blk.w")


def test_recipes_are_named_data():
    assert get_recipe("INT4-RTN").weight == QuantSpec("int4", "rtn")
    assert get_recipe("fp32").lm_head.kind == "fp32"
    r = get_recipe("int4").with_options(block_size=64, symmetric=True, lm_head="fp16")
    assert (r.weight.block_size, r.weight.symmetric, r.lm_head.kind) == (64, True, "fp16")
    with pytest.raises(QuantizationError):
        get_recipe("q4_k_m")
    int4 = get_recipe("int4")
    assert int4.calibrated and int4.shares_embeddings(tied=True) and not int4.shares_embeddings(tied=False)
    assert int4.spec_for_linear("layers.7.mlp.down_proj").block_size == 64
    assert int4.spec_for_linear("layers.7.mlp.gate_up_proj").block_size == 32
    assert int4.with_options(block_size=32).spec_for_linear("layers.0.mlp.down_proj").block_size == 32
    kept = int4.with_options(lm_head="int8")          # a shared table follows the head's precision
    assert kept.embeddings == kept.lm_head and kept.lm_head.bits == 8
    assert not get_recipe("int4-rtn").calibrated
    with pytest.raises(QuantizationError, match="shared"):
        int4.with_options(lm_head="int8", embeddings="int4-gptq")   # GPTQ table only as the shared head
    assert set(RECIPES) >= {"int4", "int8", "fp16", "fp32"}
