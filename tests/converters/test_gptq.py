"""GPTQ and its calibration pass, on synthetic layers and on the default calibration text."""
from __future__ import annotations

import numpy as np
import pytest

from edgellm.converters.calibration import (CALIBRATION_MODULES, calibration_set, default_calibration_text)
from edgellm.converters.gptq import gptq_quantize
from edgellm.converters.quant import QuantSpec, quantize_blocks
from edgellm.errors import QuantizationError
from edgellm.evaluation import DEFAULT_TEXT_MODULES


def correlated_inputs(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Activations with a few large, correlated channels, as real layer inputs have."""
    base = rng.standard_normal((n, k // 4)).astype(np.float32)
    x = base @ rng.standard_normal((k // 4, k)).astype(np.float32) / np.sqrt(k / 4)
    x[:, : k // 16] *= 8.0
    return x + 0.1 * rng.standard_normal((n, k)).astype(np.float32)


@pytest.mark.parametrize("spec", [QuantSpec("int4", "gptq", 32), QuantSpec("int4", "gptq", 64, True),
                                  QuantSpec("int8", "gptq", 32)], ids=lambda s: s.label)
@pytest.mark.parametrize("act_order", [True, False], ids=["act-order", "in-order"])
def test_gptq_lowers_output_error_at_the_same_layout(spec, act_order):
    rng = np.random.default_rng(1)
    x = correlated_inputs(rng, 512, 128)
    w = rng.standard_normal((48, 128)).astype(np.float32)
    h = (x.T @ x).astype(np.float64) / len(x)
    g = gptq_quantize(w, h, spec, "w", act_order=act_order)
    r = quantize_blocks(w, QuantSpec(spec.kind, "rtn", spec.block_size, spec.symmetric))
    assert g.values.shape == r.values.shape and g.scales.shape == r.scales.shape
    assert g.values.max() < (1 << spec.bits) and g.symmetric is spec.symmetric
    err_g = np.square(x @ (w - g.dequantize()).T).mean()
    err_r = np.square(x @ (w - r.dequantize()).T).mean()
    print(f"\n{spec.label} act_order={act_order}: output MSE GPTQ {err_g:.3e} vs RTN {err_r:.3e}")
    assert err_g < 0.7 * err_r


def test_dead_inputs_and_bad_hessians():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    x = rng.standard_normal((100, 64)).astype(np.float32)
    x[:, 5] = 0.0                                              # an input that is never active
    q = gptq_quantize(w, x.T @ x, QuantSpec("int4", "gptq", 32), "w")
    assert np.isfinite(q.dequantize()).all() and q.dequantize()[:, 5].tolist() == [0.0] * 8
    with pytest.raises(QuantizationError, match="Hessian"):
        gptq_quantize(w, np.eye(32), QuantSpec("int4", "gptq", 32), "w")
    with pytest.raises(QuantizationError, match="divisible"):
        gptq_quantize(w[:, :48], np.eye(48), QuantSpec("int4", "gptq", 32), "w")


def test_calibration_text_is_disjoint_from_the_evaluation_text(tiny_models, tmp_path):
    assert set(CALIBRATION_MODULES).isdisjoint(DEFAULT_TEXT_MODULES)
    text = default_calibration_text(20000)
    assert len(text) >= 20000 and "User:" in text and "def " in text
    folder = tiny_models("LlamaForCausalLM")
    cs = calibration_set(folder, tokens=1024, seq_len=256)
    assert cs.ids.shape == (4, 256) and cs.source == "edgellm-mix" and cs.ids.max() < 384
    own = tmp_path / "calib.txt"
    own.write_text("short text")
    with pytest.raises(QuantizationError, match="tokens"):
        calibration_set(folder, own, tokens=512, seq_len=256)
    with pytest.raises(QuantizationError, match="cannot read"):
        calibration_set(folder, tmp_path / "missing.txt")


def test_blocked_factors_match_float64_lapack():
    """The blocked float32 Cholesky and triangular inverse (small blocks, so every code path runs) give the
    factor U (U^T U = H^-1 of the damped, permuted Hessian) of float64 LAPACK to ~1e-5."""
    from edgellm.converters import gptq

    rng = np.random.default_rng(3)
    x = correlated_inputs(rng, 400, 200)
    h = (x.T @ x) / len(x)
    a = (h + np.eye(200)).astype(np.float32)
    low = gptq.cholesky_lower(a.copy(), block=48)
    ref = np.linalg.cholesky(a.astype(np.float64))
    assert np.abs(np.triu(low, 1)).max() == 0 and np.abs(low - ref).max() < 1e-5 * np.abs(ref).max()
    inv = gptq.invert_lower(low, base=32)
    assert np.abs(inv - np.linalg.inv(ref)).max() < 1e-4 * np.abs(np.linalg.inv(ref)).max()
    for act_order in (True, False):
        p = gptq.prepare(h, act_order)
        hp = h[np.ix_(p.perm, p.perm)] + gptq.DAMP * np.mean(np.diag(h)) * np.eye(200)
        u64 = np.linalg.cholesky(np.linalg.inv(hp)).T
        assert p.u.dtype == np.float32 and np.abs(np.tril(p.u, -1)).max() == 0
        assert np.abs(p.u - u64).max() < 1e-4 * np.abs(u64).max()


def test_gptq_codes_follow_the_float64_reference():
    """The float32 factor and the sub-blocked column loop choose the codes of the textbook float64 GPTQ loop
    (one column at a time, the whole rest of the matrix updated after each) on all but a few weights."""
    from edgellm.converters import gptq

    rng = np.random.default_rng(4)
    k, n = 256, 40
    x = correlated_inputs(rng, 1024, k)
    w = rng.standard_normal((n, k)).astype(np.float32)
    h = (x.T @ x).astype(np.float64) / len(x)
    spec = QuantSpec("int4", "gptq", 32)
    got = gptq.gptq_quantize(w, h, spec, "w", act_order=False)
    hd = h + gptq.DAMP * np.mean(np.diag(h)) * np.eye(k)
    u = np.linalg.cholesky(np.linalg.inv(hd)).T
    ww = w.astype(np.float64).copy()
    codes = np.zeros((n, k), np.int64)
    for j in range(k):
        if j % 32 == 0:     # block scale from the updated weights, as gptq_quantize picks it
            bq = quantize_blocks(ww[:, j:j + 32].astype(np.float32), QuantSpec("int4", gptq.BLOCK_SEARCH, 32))
            s, z = bq.scales[:, 0].astype(np.float64), bq.zero_points[:, 0].astype(np.float64)
        codes[:, j] = np.clip(np.rint(ww[:, j] / np.where(s == 0, 1, s) * (s != 0)) + z, 0, 15)
        e = (ww[:, j] - (codes[:, j] - z) * s) / u[j, j]
        ww[:, j:] -= np.outer(e, u[j, j:])
    agree = (got.values.reshape(n, k) == codes).mean()
    assert agree > 0.99, agree
