"""GGUF output types as data: which we write ourselves and which llama.cpp's quantizer writes.

`QUANT_TYPES` doubles as the CLI's `--quant` choices for `--format gguf`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import QuantizationError


@dataclass(frozen=True)
class GGUFQuant:
    name: str              # as users write it, upper case: "Q4_K_M"
    file_type: int         # llama.cpp's llama_ftype (general.file_type)
    main_type: str         # the GGML type most weight matrices get
    native: bool           # written by edgellm itself (no llama.cpp quantizer involved)
    needs_imatrix: bool = False   # llama.cpp refuses it without an importance matrix
    uses_imatrix: bool = False    # llama.cpp's quantizer weighs rounding error by the importance matrix


def _q(name: str, file_type: int, main: str, native: bool = False, imatrix: bool = False) -> GGUFQuant:
    # every type llama.cpp's quantizer writes takes the matrix (ggml_quantize_chunk's quant_weights), except
    # the ternary TQ types, which ignore it
    return GGUFQuant(name, file_type, main, native, imatrix, uses_imatrix=not native and not main.startswith("TQ"))


# llama_ftype numbers from llama.cpp's llama.h (mirrored by gguf-py's LlamaFileType).
QUANT_TYPES: dict[str, GGUFQuant] = {q.name: q for q in (
    _q("F32", 0, "F32", native=True), _q("F16", 1, "F16", native=True), _q("BF16", 32, "BF16", native=True),
    _q("Q8_0", 7, "Q8_0", native=True),
    _q("Q4_0", 2, "Q4_0"), _q("Q4_1", 3, "Q4_1"), _q("Q5_0", 8, "Q5_0"), _q("Q5_1", 9, "Q5_1"),
    _q("Q2_K", 10, "Q2_K"), _q("Q2_K_S", 21, "Q2_K", imatrix=True),
    _q("Q3_K_S", 11, "Q3_K"), _q("Q3_K_M", 12, "Q3_K"), _q("Q3_K_L", 13, "Q3_K"),
    _q("Q4_K_S", 14, "Q4_K"), _q("Q4_K_M", 15, "Q4_K"),
    _q("Q5_K_S", 16, "Q5_K"), _q("Q5_K_M", 17, "Q5_K"), _q("Q6_K", 18, "Q6_K"),
    _q("IQ4_NL", 25, "IQ4_NL"), _q("IQ4_XS", 30, "IQ4_XS"),
    _q("IQ3_S", 26, "IQ3_S"), _q("IQ3_M", 27, "IQ3_S"), _q("IQ3_XS", 22, "IQ3_XXS", imatrix=True),
    _q("IQ3_XXS", 23, "IQ3_XXS", imatrix=True),
    _q("IQ2_XXS", 19, "IQ2_XXS", imatrix=True), _q("IQ2_XS", 20, "IQ2_XS", imatrix=True),
    _q("IQ2_S", 28, "IQ2_S", imatrix=True), _q("IQ2_M", 29, "IQ2_S", imatrix=True),
    _q("IQ1_S", 24, "IQ1_S", imatrix=True), _q("IQ1_M", 31, "IQ1_M", imatrix=True),
    _q("TQ1_0", 36, "TQ1_0"), _q("TQ2_0", 37, "TQ2_0"),
)}


def get_quant(name: str) -> GGUFQuant:
    q = QUANT_TYPES.get(name.upper())
    if q is None:
        raise QuantizationError(f"unknown GGUF quant type {name!r}; known: {', '.join(QUANT_TYPES)}")
    return q


def block_size(ggml_type: str) -> int:
    import gguf

    return int(gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]][0])


def tensor_nbytes(ggml_type: str, shape: tuple[int, ...]) -> int:
    import gguf

    blck, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]]
    n = int(np.prod(shape)) if shape else 1
    return n // blck * size


def native_type_for(quant: GGUFQuant, name: str, shape: tuple[int, ...]) -> str:
    """Quantization policy for the types we write: (tensor name, numpy shape) -> GGML type.

    1-D tensors (norms, biases) stay F32, as llama.cpp expects; rows not divisible by the block fall
    back to F16.
    """
    if len(shape) < 2 or quant.main_type == "F32":
        return "F32"
    if quant.main_type == "Q8_0" and shape[-1] % 32:
        return "F16"
    return quant.main_type


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """Q8_0 blocks of 32: one f16 scale d = max|x|/127, then 32 int8 q = round(x/d). Returns raw bytes
    shaped (rows, cols/32*34) as GGUF stores them."""
    rows = x.reshape(-1, 32).astype(np.float32)
    amax = np.abs(rows).max(axis=1, keepdims=True)
    d = amax / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = np.clip(np.rint(rows * inv), -127, 127).astype(np.int8)   # (n_blocks, 32)
    out = np.empty((rows.shape[0], 34), dtype=np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8)
    out[:, 2:] = q.view(np.uint8)
    return out.reshape(*x.shape[:-1], x.shape[-1] // 32 * 34)


def encode(x: np.ndarray, ggml_type: str) -> np.ndarray:
    """float32 array -> the array GGUF stores for `ggml_type` (one of the native types)."""
    from .safetensors_io import f32_to_bf16

    if ggml_type == "F32":
        return np.ascontiguousarray(x, dtype=np.float32)
    if ggml_type == "F16":
        return np.ascontiguousarray(x, dtype=np.float16)
    if ggml_type == "BF16":
        return f32_to_bf16(x).view(np.uint8).reshape(*x.shape[:-1], x.shape[-1] * 2)
    if ggml_type == "Q8_0":
        return quantize_q8_0(x)
    raise QuantizationError(f"{ggml_type} is not written natively; llama.cpp's quantizer handles it")


# -- K-quant super-blocks (256 values), packed exactly as ggml's block_q4_K / block_q6_K -----------------------
QK_K = 256
Q4_K_BYTES, Q6_K_BYTES = 144, 210     # d f16, dmin f16, 12 bytes of 6-bit scales/mins, 128 nibbles | ql, qh, sc, d


def unpack_q4_k(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """[n, 144] uint8 -> d f16 [n], dmin f16 [n], scales [n, 8], mins [n, 8], codes [n, 256] (0..15);
    value = f32(d * scale) * code - f32(dmin * min) per sub-block of 32."""
    b = np.ascontiguousarray(blocks, np.uint8).reshape(-1, Q4_K_BYTES)
    d, dmin = b[:, 0:2].copy().view(np.float16)[:, 0], b[:, 2:4].copy().view(np.float16)[:, 0]
    s = b[:, 4:16].astype(np.uint8)
    sc = np.concatenate([s[:, 0:4] & 0x3F, (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 2) & 0x30)], axis=1)
    mn = np.concatenate([s[:, 4:8] & 0x3F, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 2) & 0x30)], axis=1)
    qs = b[:, 16:].reshape(-1, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    return d, dmin, sc, mn, (qs & 0x0F).reshape(-1, QK_K)


def pack_q4_k(d: np.ndarray, dmin: np.ndarray, sc: np.ndarray, mn: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The inverse of unpack_q4_k (scales and mins < 64, codes < 16)."""
    n = q.reshape(-1, QK_K).shape[0]
    sc, mn = sc.astype(np.uint8).reshape(n, 8), mn.astype(np.uint8).reshape(n, 8)
    out = np.empty((n, Q4_K_BYTES), np.uint8)
    out[:, 0:2] = np.asarray(d, np.float16).reshape(n, 1).view(np.uint8)
    out[:, 2:4] = np.asarray(dmin, np.float16).reshape(n, 1).view(np.uint8)
    out[:, 4:8] = (sc[:, :4] & 0x3F) | ((sc[:, 4:] >> 4) << 6)
    out[:, 8:12] = (mn[:, :4] & 0x3F) | ((mn[:, 4:] >> 4) << 6)
    out[:, 12:16] = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    codes = q.astype(np.uint8).reshape(n, 4, 2, 32)
    out[:, 16:] = (codes[:, :, 0] | (codes[:, :, 1] << 4)).reshape(n, 128)
    return out


def unpack_q6_k(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[n, 210] uint8 -> d f16 [n], scales int8 [n, 16], codes int8 [n, 256] (-32..31);
    value = f32(d * scale) * code per sub-block of 16."""
    b = np.ascontiguousarray(blocks, np.uint8).reshape(-1, Q6_K_BYTES)
    ql = b[:, :128].reshape(-1, 2, 1, 64) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    qh = b[:, 128:192].reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    q = ((ql & 0x0F).reshape(-1, QK_K) | ((qh & 0x03).reshape(-1, QK_K) << 4)).astype(np.int8) - np.int8(32)
    return b[:, 208:210].copy().view(np.float16)[:, 0], b[:, 192:208].view(np.int8).copy(), q


def pack_q6_k(d: np.ndarray, sc: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The inverse of unpack_q6_k."""
    u = (q.astype(np.int16).reshape(-1, QK_K) + 32).astype(np.uint8)          # 0..63
    n = u.shape[0]
    lo, hi = (u & 0x0F).reshape(n, 2, 2, 64), (u >> 4).reshape(n, 2, 4, 32)
    out = np.empty((n, Q6_K_BYTES), np.uint8)
    out[:, :128] = (lo[:, :, 0] | (lo[:, :, 1] << 4)).reshape(n, 128)
    out[:, 128:192] = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(n, 64)
    out[:, 192:208] = np.asarray(sc, np.int8).reshape(n, 16).view(np.uint8)
    out[:, 208:210] = np.asarray(d, np.float16).reshape(n, 1).view(np.uint8)
    return out


def _solve_q4_k(x: np.ndarray, d: np.float32, dmin: np.float32) -> tuple[int, int, np.ndarray] | None:
    """(scale, min, codes) reproducing the 32 values x exactly under this super-block's d, dmin, if any."""
    steps = (d * np.arange(64, dtype=np.float32)).astype(np.float32)[:, None, None]      # [64, 1, 1]
    offs = (dmin * np.arange(64, dtype=np.float32)).astype(np.float32)[None, :, None]    # [1, 64, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.rint((x[None, None, :] + offs) / steps), 0, 15)
    q = np.nan_to_num(q)
    hit = np.argwhere(((steps * q).astype(np.float32) - offs == x[None, None, :]).all(axis=-1))
    return None if not len(hit) else (int(hit[0, 0]), int(hit[0, 1]), q[hit[0, 0], hit[0, 1]])


def _solve_q6_k(x: np.ndarray, d: np.float32) -> tuple[int, np.ndarray] | None:
    scales = np.arange(-128, 128, dtype=np.float32)
    steps = (d * scales).astype(np.float32)[:, None]                                     # [256, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.nan_to_num(np.clip(np.rint(x[None, :] / steps), -32, 31))
    hit = np.flatnonzero(((steps * q).astype(np.float32) == x[None, :]).all(axis=-1))
    return None if not len(hit) else (int(scales[hit[0]]), q[hit[0]])


def _d_candidates(x: np.ndarray, sub: int, top: int, d0: np.float16, signed: bool) -> list[np.float16]:
    """Super-block scales to try: the block's own, then f16(largest sub-block step / k) for the scales k the
    largest sub-block most likely got (llama.cpp maps the largest to `top`), and their f16 neighbours."""
    steps = [float(np.diff(u).min()) for u in map(np.unique, x.reshape(-1, sub)) if len(u) > 1]
    out = [np.float16(d0)]
    if not steps:
        return out
    for k in range(top, top - 8, -1):
        bits = int(np.array([np.float16(max(steps) / k)]).view(np.uint16)[0])
        for ulp in (0, 1, -1, 2, -2):
            c = np.array([bits + ulp], np.uint16).view(np.float16)[0]
            out += [c, -c] if signed else [c]
    return out


def _solve_all(solve: Any, x: np.ndarray, sub: int, *args: Any) -> list[Any] | None:
    """solve(sub-block values, *args) for every sub-block, stopping at the first without an exact solution."""
    out = []
    for j in range(0, x.size, sub):
        sol = solve(x[j:j + sub], *args)
        if sol is None:
            return None
        out.append(sol)
    return out


def _solve_block(ggml_type: str, x: np.ndarray, block: np.ndarray) -> np.ndarray | None:
    """One super-block [1, bytes] encoding the 256 values x exactly, or None."""
    if ggml_type == "Q4_K":
        if max(len(np.unique(p)) for p in x.reshape(8, 32)) > 16:     # 4-bit codes: at most 16 levels
            return None
        d, dmin, _, _, _ = unpack_q4_k(block)
        for dc in _d_candidates(x, 32, 63, d[0], signed=False):
            s4 = _solve_all(_solve_q4_k, x, 32, np.float32(dc), np.float32(dmin[0]))
            if s4 is not None:
                return pack_q4_k(np.array([dc]), dmin, np.array([s[0] for s in s4]), np.array([s[1] for s in s4]),
                                 np.concatenate([s[2] for s in s4]))
        return None
    if ggml_type == "Q6_K":
        d6, _, _ = unpack_q6_k(block)
        for dc in _d_candidates(x, 16, 128, d6[0], signed=True):
            s6 = _solve_all(_solve_q6_k, x, 16, np.float32(dc))
            if s6 is not None:
                return pack_q6_k(np.array([dc]), np.array([s[0] for s in s6]), np.concatenate([s[1] for s in s6]))
        return None
    raise QuantizationError(f"restore_grid_blocks: {ggml_type} is not a K-quant edgellm packs")


def restore_grid_blocks(ggml_type: str, target: np.ndarray, blocks: np.ndarray) -> tuple[np.ndarray, int]:
    """Super-blocks whose values differ from `target` [n, 256] although `target` lies on a grid of the type
    (a folder unpacked from a quantized GGUF): re-encoded with the block's own d (and dmin), each sub-block's
    scale (and min) searched so the values come back exactly. Returns (blocks, how many were replaced);
    a block with no exact solution is left as llama.cpp wrote it."""
    import gguf

    qtype = gguf.GGMLQuantizationType[ggml_type]
    got = gguf.quants.dequantize(blocks, qtype).reshape(-1, QK_K)
    bad = np.flatnonzero((got != target).any(axis=1))
    out, fixed = blocks.copy(), 0
    for i in bad:
        x = target[i].astype(np.float32)
        new = _solve_block(ggml_type, x, blocks[i:i + 1])
        if new is not None and np.array_equal(gguf.quants.dequantize(new, qtype).reshape(-1), x):
            out[i] = new[0]
            fixed += 1
    return out, fixed
