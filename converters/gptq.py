"""GPTQ for block-wise int4/int8 weights (MatMulNBits layout), in numpy.

GPTQ (Frantar et al., 2022) quantizes a linear layer's weight one input column at a time and spreads each
column's rounding error over the columns not yet quantized, weighted by the inverse Hessian of the layer's
inputs, H = X^T X over calibration activations. The output error ||X W^T - X Q^T|| is what it lowers, not the
weight error, so it needs a calibration pass (converters/calibration.py) but nothing at inference time:
the codes, scales and zero points have exactly the layout round-to-nearest produces.

Each block's scale and zero point are chosen when the block's first column is reached, from the weights as
updated so far (with the per-block MSE clipping search of converters/quant.py when the spec asks for it).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from ..errors import QuantizationError
from .quant import BlockQuant, QuantSpec, check_blocks, quantize_blocks

DAMP = 0.10      # fraction of the mean Hessian diagonal added to its diagonal (0.10 generalised best, see docs)
LAZY = 128       # columns updated together before the rest of the matrix is touched
BLOCK_SEARCH: Literal["rtn", "mse"] = "mse"   # how each block's scale is picked from the updated weights: "rtn" or "mse"


def _inverse_cholesky(h: np.ndarray) -> np.ndarray:
    """Upper-triangular U with U^T U = H^-1 (float64), retrying with more damping if H is not positive."""
    k = h.shape[0]
    mean_diag = float(np.mean(np.diag(h))) or 1.0
    damp = DAMP
    diag = np.arange(k)
    for _ in range(6):
        try:
            # the same values as h + eye * damp, without a second K x K temporary (float64: 512 MB at K = 8192);
            # each intermediate is dropped as soon as the next exists
            hd = h.copy()
            hd[diag, diag] += damp * mean_diag
            low = np.linalg.cholesky(hd)
            del hd
            inv = np.linalg.inv(low)                             # L^-1, with H = L L^T
            del low
            hinv = inv.T @ inv                                   # H^-1 = L^-T L^-1
            del inv
            return np.linalg.cholesky(hinv).T
        except np.linalg.LinAlgError:
            damp *= 10
    raise QuantizationError("GPTQ: the calibration Hessian is not positive definite even with damping",
                            "use more calibration text, or a non-calibrated recipe such as int4-mse")


@dataclass(frozen=True)
class Prepared:
    """What GPTQ derives from a Hessian alone (shared by every row slice of the weights it quantizes)."""
    dead: np.ndarray      # bool [K]: inputs never seen in calibration
    perm: np.ndarray      # int [K]: column visiting order
    u: np.ndarray         # float32 [K, K]: upper Cholesky factor of the (permuted, damped) inverse Hessian


def prepare(hessian: np.ndarray, act_order: bool = True) -> Prepared:
    k = hessian.shape[0]
    h = np.array(hessian, dtype=np.float64)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(k)
    if act_order:
        h = h[np.ix_(perm, perm)]
    u = _inverse_cholesky(h)
    del h
    return Prepared(dead, perm, u.astype(np.float32))


def gptq_quantize(w: np.ndarray, hessian: np.ndarray, spec: QuantSpec, name: str = "tensor", *,
                  act_order: bool = True, prepared: Prepared | None = None) -> BlockQuant:
    """Quantize a float [N, K] weight along K with `spec`, lowering the error on inputs whose X^T X is `hessian`.

    act_order: visit columns by decreasing Hessian diagonal (largest inputs first); block scales are then
    fixed up front from the original weights ("static groups"), so the stored layout is unchanged."""
    if not spec.bits:
        raise QuantizationError(f"{spec.kind} is not a block-wise integer type")
    check_blocks(name, tuple(w.shape), spec.block_size)
    n, k = w.shape
    if hessian.shape != (k, k):
        raise QuantizationError(f"GPTQ: {name} has {k} inputs but its Hessian is {hessian.shape}")
    bs = spec.block_size
    block_spec = replace(spec, method=BLOCK_SEARCH)
    p = prepared if prepared is not None else prepare(hessian, act_order)
    dead, perm, u = p.dead, p.perm, p.u
    weights = np.array(w, dtype=np.float32)
    weights[:, dead] = 0.0
    qmax = (1 << spec.bits) - 1
    # the column loop works on transposed arrays, so every column it touches is a contiguous row
    s_t = np.zeros((k // bs, n), np.float32)                    # block scales and zero points, [blocks, N]
    z_t = np.zeros((k // bs, n), np.float32)
    if act_order:
        static = quantize_blocks(weights, block_spec, name)
        s_t, z_t = np.ascontiguousarray(static.scales.T), np.ascontiguousarray(static.zero_points.T, np.float32)
        weights = weights[:, perm]
    wt = np.ascontiguousarray(weights.T)                        # [K, N]
    codes_t = np.zeros((k, n), np.uint8)
    inv_t = np.divide(1.0, s_t, out=np.zeros_like(s_t), where=s_t != 0)
    lazy = max(bs, (LAZY // bs) * bs)
    for i1 in range(0, k, lazy):
        i2 = min(i1 + lazy, k)
        w1 = wt[i1:i2].copy()
        err1 = np.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = int(perm[i1 + i])
            b = j // bs
            if not act_order and j % bs == 0:
                bq = quantize_blocks(np.ascontiguousarray(w1[i:i + bs].T), block_spec, name)
                s_t[b], z_t[b] = bq.scales[:, 0], bq.zero_points[:, 0]
                inv_t[b] = np.divide(1.0, s_t[b], out=np.zeros(n, np.float32), where=s_t[b] != 0)
            x = w1[i]
            q = np.clip(np.rint(x * inv_t[b]) + z_t[b], 0, qmax)
            codes_t[j] = q
            e = (x - (q - z_t[b]) * s_t[b]) / u1[i, i]
            w1[i:] -= np.outer(u1[i, i:], e)
            err1[i] = e
        wt[i2:] -= u[i1:i2, i2:].T @ err1
    return BlockQuant(values=np.ascontiguousarray(codes_t.T).reshape(n, k // bs, bs),
                      scales=np.ascontiguousarray(s_t.T), zero_points=np.ascontiguousarray(z_t.T).astype(np.uint8),
                      bits=spec.bits, block_size=bs, symmetric=spec.symmetric)
