"""GPTQ for block-wise int4/int8 weights (MatMulNBits layout), in numpy.

GPTQ (Frantar et al., 2022) quantizes a linear layer's weight one input column at a time and spreads each
column's rounding error over the columns not yet quantized, weighted by the inverse Hessian of the layer's
inputs, H = X^T X over calibration activations. The output error ||X W^T - X Q^T|| is what it lowers, not the
weight error, so it needs a calibration pass (converters/calibration.py) but nothing at inference time:
the codes, scales and zero points have exactly the layout round-to-nearest produces.

Each block's scale and zero point are chosen when the block's first column is reached, from the weights as
updated so far (with the per-block MSE clipping search of converters/quant.py when the spec asks for it).

The factor GPTQ needs is the upper-triangular U with U^T U = H^-1. With J the reversal (J x = x[::-1]) and
L = cholesky(J H J), H = (J L J)(J L J)^T with J L J upper triangular, so U = (J L J)^-1 = J L^-1 J: one
Cholesky and one triangular inverse, both blocked over BLAS matrix products in float32 (K^3/3 + 2K^3/3 flops
instead of the ~4.7 K^3 float64 of cholesky -> inv -> product -> cholesky). float32 is what the reference GPTQ
implementation factors in, with 1% damping; ours is 10% (DAMP), which bounds cond(H) by ~10 K, and the factor
agrees with the float64 one to ~1e-6 relative (tests/converters/test_gptq.py).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Literal

import numpy as np

from ..errors import QuantizationError
from .quant import BlockQuant, QuantSpec, check_blocks, quantize_blocks

DAMP = 0.10      # fraction of the mean Hessian diagonal added to its diagonal (0.10 generalised best, see docs)
LAZY = 128       # columns updated together before the rest of the matrix is touched
SUB = 16         # columns inside a LAZY block updated one by one before the block's other rows get them at once
BLOCK_SEARCH: Literal["rtn", "mse"] = "mse"   # how each block's scale is picked from the updated weights: "rtn" or "mse"
CHOL_BLOCK = 512  # diagonal block of the blocked Cholesky (a few BLAS products of this width per step)
TRI_BASE = 128    # the triangular inverse recurses down to blocks this wide


_pool: ThreadPoolExecutor | None = None
PARALLEL_MIN = 1024   # matrices at least this wide factor on every core (the halves and block columns are independent)


def _run(tasks: list[Callable[[], object]], parallel: bool) -> None:
    """Run independent tasks, on a small shared pool (one thread per core) when `parallel`."""
    global _pool
    if not parallel or len(tasks) < 2:
        for t in tasks:
            t()
        return
    if _pool is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:        # not Linux
            cores = os.cpu_count() or 1
        _pool = ThreadPoolExecutor(max(1, cores), thread_name_prefix="edgellm-gptq")
    for fut in [_pool.submit(t) for t in tasks]:
        fut.result()


def cholesky_lower(a: np.ndarray, block: int = CHOL_BLOCK) -> np.ndarray:
    """The lower Cholesky factor of a symmetric positive definite float32 matrix, computed in place (the upper
    triangle is zeroed) by blocks: each step factors one diagonal block and updates the lower trailing matrix
    with matrix products (one task per block column). LinAlgError when `a` is not positive definite."""
    n = a.shape[0]
    parallel = n >= PARALLEL_MIN
    for j in range(0, n, block):
        e = min(j + block, n)
        d = np.linalg.cholesky(a[j:e, j:e])
        a[j:e, j:e] = d
        a[j:e, e:] = 0.0
        if e == n:
            break
        panel = a[e:, j:e] @ invert_lower(d).T                   # L21 = A21 L11^-T, [n-e, block]
        a[e:, j:e] = panel

        def update(c: int, panel: np.ndarray = panel, e: int = e) -> None:   # A22 -= L21 L21^T, lower part
            ce = min(c + block, n)
            a[c:, c:ce] -= panel[c - e:] @ panel[c - e:ce - e].T
        _run([partial(update, c) for c in range(e, n, block)], parallel)
    return a


def invert_lower(a: np.ndarray, base: int = TRI_BASE, parallel: bool | None = None) -> np.ndarray:
    """The inverse of a lower-triangular matrix, in place: [[A, 0], [B, C]]^-1 = [[A^-1, 0], [-C^-1 B A^-1, C^-1]]
    by recursion on halves (matrix products; the halves and the rows of the products in parallel at the top),
    small diagonal blocks by np.linalg.inv."""
    n = a.shape[0]
    if n <= base:
        a[...] = np.tril(np.linalg.inv(a))
        return a
    par = n >= PARALLEL_MIN if parallel is None else parallel
    h = -(-(n // 2) // base) * base
    _run([lambda: invert_lower(a[:h, :h], base, False), lambda: invert_lower(a[h:, h:], base, False)], par)
    m = n - h
    rows = [(r, min(r + max(1, m // 2), m)) for r in range(0, m, max(1, m // 2))] if par else [(0, m)]
    t = np.empty((m, h), np.float32)

    def first(r0: int, r1: int) -> None:          # T = B A^-1, by rows of B
        t[r0:r1] = a[h + r0:h + r1, :h] @ a[:h, :h]

    def second(r0: int, r1: int) -> None:         # -C^-1 T, by rows of C^-1 (C^-1 is lower: T rows < r1 only)
        a[h + r0:h + r1, :h] = -(a[h + r0:h + r1, h:h + r1] @ t[:r1])
    _run([partial(first, *r) for r in rows], par)
    _run([partial(second, *r) for r in rows], par)
    return a


def _gather(h: np.ndarray, idx: np.ndarray, rows: int = 1024) -> np.ndarray:
    """float32 h[idx][:, idx], gathered a few rows at a time (no whole-matrix temporary in h's dtype)."""
    out = np.empty((len(idx), len(idx)), np.float32)
    for r in range(0, len(idx), rows):
        out[r:r + rows] = h[idx[r:r + rows]][:, idx]
    return out


def _reverse(a: np.ndarray) -> np.ndarray:
    """a[::-1, ::-1] in place (no second K x K array): each row reversed, then rows swapped pairwise."""
    k = a.shape[0]
    for r in range(k):
        a[r] = a[r, ::-1].copy()
    for r in range(k // 2):
        a[[r, k - 1 - r]] = a[[k - 1 - r, r]]
    return a


def _inverse_cholesky(h: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Upper-triangular U (float32) with U^T U = (H + damping)^-1, H taken in `order` (a permutation of its
    indices; None: as is), retrying with more damping if H is not positive definite."""
    k = h.shape[0]
    idx = (np.arange(k) if order is None else np.asarray(order))[::-1]     # J P^T H P J in one gather
    mean_diag = float(np.mean(np.diag(h), dtype=np.float64)) or 1.0
    damp = DAMP
    diag = np.arange(k)
    for _ in range(6):
        try:
            a = _gather(h, idx)                                              # a new float32 copy [K, K]
            a[diag, diag] += np.float32(damp * mean_diag)
            return _reverse(invert_lower(cholesky_lower(a)))                 # U = J L^-1 J, J H J = L L^T
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
    """The visiting order and inverse-Hessian factor of `hessian` (X^T X / tokens, [K, K], float32 or float64;
    it is not modified and no float64 copy of it is made)."""
    k = hessian.shape[0]
    diag = np.diag(hessian).astype(np.float64)
    dead = diag == 0
    if dead.any():                                       # dead inputs: H[j, j] = 1 (their weights become 0)
        h = np.array(hessian, np.float32)
        h[dead, dead] = 1.0
        diag[dead] = 1.0
    else:
        h = hessian
    perm = np.argsort(-diag, kind="stable") if act_order else np.arange(k)
    u = _inverse_cholesky(h, perm if act_order else None)
    return Prepared(dead, perm, u)


def column_loop(wt: np.ndarray, perm: np.ndarray, u: np.ndarray,
                quantize: Callable[[int, np.ndarray, np.ndarray], np.ndarray], *, lazy: int = LAZY,
                sub: int = SUB) -> None:
    """GPTQ's column loop, whatever the grid. wt [K, N]: the weights transposed, columns in visiting order
    (updated in place); perm[i]: the original index of visiting position i; u: the factor (U^T U = H^-1, in
    visiting order). For each column, `quantize(j, x, ahead)` records the codes of x [N] (original column j;
    `ahead` = this column and the rest of its lazy block, as updated so far) and returns their dequantized values;
    the error, over u's diagonal, goes to the next columns of the sub-block one by one, then to the rest of the
    lazy block and to the later columns with one matrix product each."""
    k = wt.shape[0]
    e = np.empty(wt.shape[1], np.float32)
    for i1 in range(0, k, lazy):
        i2 = min(i1 + lazy, k)
        w1 = wt[i1:i2]                                           # updated in place (a view of wt)
        err1 = np.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for s1 in range(0, i2 - i1, sub):
            s2 = min(s1 + sub, i2 - i1)
            for i in range(s1, s2):
                x = w1[i]
                np.subtract(x, quantize(int(perm[i1 + i]), x, w1[i:]), out=e)     # e = (x - y) / u_ii
                e /= u1[i, i]
                if i + 1 < s2:
                    w1[i + 1:s2] -= np.outer(u1[i, i + 1:s2], e)
                err1[i] = e
            if s2 < i2 - i1:                                     # the sub-block's errors on the rest of the block
                w1[s2:] -= u1[s1:s2, s2:].T @ err1[s1:s2]
        if i2 < k:
            wt[i2:] -= u[i1:i2, i2:].T @ err1


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
    qmax = np.float32((1 << spec.bits) - 1)
    # the column loop works on transposed arrays, so every column it touches is a contiguous row
    s_t = np.zeros((k // bs, n), np.float32)                    # block scales and zero points, [blocks, N]
    z_t = np.zeros((k // bs, n), np.float32)
    if act_order:
        static = quantize_blocks(weights, block_spec, name)
        s_t, z_t = np.ascontiguousarray(static.scales.T), np.ascontiguousarray(static.zero_points.T, np.float32)
        del static
        wt = np.ascontiguousarray(weights[:, perm].T)          # [K, N] in visiting order
    else:
        wt = np.ascontiguousarray(weights.T)
    del weights
    codes_t = np.zeros((k, n), np.uint8)
    inv_t = np.divide(1.0, s_t, out=np.zeros_like(s_t), where=s_t != 0)
    q = np.empty(n, np.float32)
    y = np.empty(n, np.float32)

    def column(j: int, x: np.ndarray, ahead: np.ndarray) -> np.ndarray:
        b = j // bs
        if not act_order and j % bs == 0:       # in-order columns: the block's scale from its updated weights
            bq = quantize_blocks(np.ascontiguousarray(ahead[:bs].T), block_spec, name)
            s_t[b], z_t[b] = bq.scales[:, 0], bq.zero_points[:, 0]
            inv_t[b] = np.divide(1.0, s_t[b], out=np.zeros(n, np.float32), where=s_t[b] != 0)
        np.multiply(x, inv_t[b], out=q)                  # q = clip(rint(x / s) + z, 0, qmax)
        np.rint(q, out=q)
        np.add(q, z_t[b], out=q)
        np.clip(q, 0, qmax, out=q)
        codes_t[j] = q
        np.subtract(q, z_t[b], out=y)                    # y = (q - z) s
        np.multiply(y, s_t[b], out=y)
        return y

    # lazy blocks hold whole quantization blocks and sub-blocks divide them, so a block's first column always
    # starts a sub-block, where every earlier column's error has reached it
    column_loop(wt, perm, u, column, lazy=max(bs, (LAZY // bs) * bs), sub=min(SUB, bs))
    return BlockQuant(values=np.ascontiguousarray(codes_t.T).reshape(n, k // bs, bs),
                      scales=np.ascontiguousarray(s_t.T), zero_points=np.ascontiguousarray(z_t.T).astype(np.uint8),
                      bits=spec.bits, block_size=bs, symmetric=spec.symmetric)
