"""Weight-only quantization for the ONNX path: int4/int8 block-wise (MatMulNBits layout), fp16, fp32.

Three ways to pick block-wise integers:
- ``rtn``: plain round-to-nearest over each block's full [min, max] (or [-absmax, absmax]) range;
- ``mse``: per block, a grid search over range shrink factors keeps the clipping that minimises the
  block's squared reconstruction error (outliers get clipped when that lowers the total error);
- ``gptq``: calibrated; each column's rounding error is compensated on the columns not yet quantized so
  that the layer's *output* error on calibration activations is low (converters/gptq.py).
All produce the same bytes per weight, so the choice is free at inference time.

Tied embeddings can share the LM head's quantized weights (GatherBlockQuantized reads the same
initializers MatMulNBits does) when both roles have the same spec: the table is then stored once.

Quantization policy is data: a `Recipe` maps (tensor role, shape) to a `QuantSpec`; the named recipes
double as the CLI's choices (`ONNX_QUANTS` in converters/onnx.py).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from ..errors import QuantizationError

Kind = Literal["int4", "int8", "fp16", "fp32"]
Method = Literal["rtn", "mse", "gptq"]
Role = Literal["weight", "lm_head", "embeddings"]

# Shrink factors tried by the MSE search (1.0 = the plain RTN range).
MSE_GRID: tuple[float, ...] = tuple(np.round(np.linspace(1.0, 0.6, 11), 4).tolist())


@dataclass(frozen=True)
class QuantSpec:
    kind: Kind
    method: Method = "rtn"
    block_size: int = 32
    symmetric: bool = False

    @property
    def bits(self) -> int:
        return {"int4": 4, "int8": 8}.get(self.kind, 0)

    @property
    def label(self) -> str:
        if self.bits:
            return f"{self.kind}-{self.method}-b{self.block_size}{'-sym' if self.symmetric else ''}"
        return self.kind


@dataclass(frozen=True)
class Recipe:
    """Named quantization policy: one spec for the linear weights, one for the LM head, one for embeddings."""
    name: str
    weight: QuantSpec
    lm_head: QuantSpec
    embeddings: QuantSpec
    # (linear name suffix, spec) pairs that replace `weight` for matching linears, e.g. ("mlp.down_proj", ...)
    overrides: tuple[tuple[str, QuantSpec], ...] = ()

    def spec_for_linear(self, name: str) -> QuantSpec:
        """The spec of a decoder linear such as "layers.3.mlp.down_proj"."""
        return next((spec for suffix, spec in self.overrides if name.endswith(suffix)), self.weight)

    @property
    def weights_label(self) -> str:
        extra = "".join(f", {suffix}: {spec.label}" for suffix, spec in self.overrides)
        return self.weight.label + extra

    def spec_for(self, role: Role) -> QuantSpec:
        return {"weight": self.weight, "lm_head": self.lm_head, "embeddings": self.embeddings}[role]

    @property
    def calibrated(self) -> bool:
        """True when some role is quantized with GPTQ (the converter then runs a calibration pass)."""
        specs = (self.weight, self.lm_head, *(spec for _, spec in self.overrides))
        return any(spec.method == "gptq" for spec in specs)

    def shares_embeddings(self, tied: bool) -> bool:
        """Tied embeddings read the LM head's quantized weights (one stored table)."""
        return tied and bool(self.embeddings.bits) and self.embeddings == self.lm_head

    def with_options(self, *, block_size: int | None = None, symmetric: bool | None = None,
                     lm_head: str | None = None, embeddings: str | None = None) -> "Recipe":
        """A copy with the CLI's overrides applied (block size and symmetry apply to every integer spec).

        embeddings="shared" stores them as the LM head is stored (one table when the model ties them)."""
        def adjust(spec: QuantSpec) -> QuantSpec:
            changes: dict[str, Any] = {}
            if block_size is not None:
                changes["block_size"] = block_size
            if symmetric is not None:
                changes["symmetric"] = symmetric
            return replace(spec, **changes) if spec.bits else spec

        head = adjust(self.lm_head if lm_head is None else _spec_from_name(lm_head, self.weight))
        was_shared = self.embeddings.bits and self.embeddings == self.lm_head
        if embeddings == "shared" or (embeddings is None and was_shared):
            emb = head
        else:
            emb = adjust(self.embeddings if embeddings is None else _spec_from_name(embeddings, self.weight))
        if emb.method == "gptq" and emb != head:
            raise QuantizationError("GPTQ embeddings are only possible as a table shared with the LM head",
                                    "pass --embeddings shared, or an rtn precision such as int8-rtn")
        overrides = tuple((suffix, adjust(spec)) for suffix, spec in self.overrides)
        return Recipe(self.name, adjust(self.weight), head, emb, overrides)


def _spec_from_name(name: str, like: QuantSpec) -> QuantSpec:
    if name in ("fp16", "fp32"):
        return QuantSpec(name)  # type: ignore[arg-type]  # checked above
    if name in ("int4", "int8"):
        return QuantSpec(name, like.method, like.block_size, like.symmetric)  # type: ignore[arg-type]  # checked above
    if name in ("int4-rtn", "int4-mse", "int4-gptq", "int8-rtn", "int8-mse", "int8-gptq"):
        kind, method = name.split("-")
        return QuantSpec(kind, method, like.block_size, like.symmetric)  # type: ignore[arg-type]  # checked above
    raise QuantizationError(f"unknown precision {name!r}", "choose int4, int8, fp16 or fp32 (or int4-gptq, ...)")


_GPTQ4 = QuantSpec("int4", "gptq")
# The down projection's long input rows (the MLP width) tolerate 64-wide blocks best; that pays for the
# zero points of every other int4 block, so the calibrated recipe is no larger than plain symmetric int4.
_DOWN64 = (("mlp.down_proj", QuantSpec("int4", "gptq", 64)),)
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    # name, linear weights, LM head, embeddings[, per-linear overrides]
    Recipe("int4", _GPTQ4, _GPTQ4, _GPTQ4, _DOWN64),       # calibrated; one int4 table for head + embeddings
    Recipe("int4-gptq", _GPTQ4, _GPTQ4, _GPTQ4, _DOWN64),
    Recipe("int4-mse", QuantSpec("int4", "mse"), QuantSpec("int8", "rtn"), QuantSpec("fp16")),
    Recipe("int4-rtn", QuantSpec("int4", "rtn"), QuantSpec("int8", "rtn"), QuantSpec("fp16")),
    Recipe("int8", QuantSpec("int8", "rtn"), QuantSpec("int8", "rtn"), QuantSpec("fp16")),
    Recipe("fp16", QuantSpec("fp16"), QuantSpec("fp16"), QuantSpec("fp16")),
    Recipe("fp32", QuantSpec("fp32"), QuantSpec("fp32"), QuantSpec("fp32")),
)}


def get_recipe(name: str) -> Recipe:
    recipe = RECIPES.get(name.lower())
    if recipe is None:
        raise QuantizationError(f"unknown ONNX quant {name!r}; choose one of {', '.join(RECIPES)}")
    return recipe


@dataclass(frozen=True)
class BlockQuant:
    """Block-wise quantized [N, K] weight (quantized along K, the input dimension)."""
    values: np.ndarray        # uint8 [N, n_blocks, block]: unsigned codes in [0, 2**bits)
    scales: np.ndarray        # float32 [N, n_blocks]
    zero_points: np.ndarray   # uint8 [N, n_blocks] (2**(bits-1) everywhere when symmetric)
    bits: int
    block_size: int
    symmetric: bool

    @property
    def shape(self) -> tuple[int, int]:
        n, nb, bs = self.values.shape
        return n, nb * bs

    def dequantize(self) -> np.ndarray:
        """float32 [N, K]."""
        q = self.values.astype(np.float32) - self.zero_points[..., None].astype(np.float32)
        return (q * self.scales[..., None]).reshape(self.shape)

    def packed(self) -> np.ndarray:
        """MatMulNBits B: uint8 [N, n_blocks, block*bits/8]; 4-bit values two per byte, low nibble first."""
        if self.bits == 8:
            return np.ascontiguousarray(self.values)
        return pack_uint4(self.values)

    def packed_zero_points(self) -> np.ndarray:
        """MatMulNBits zero_points: uint8 [N * ceil(n_blocks*bits/8)], each row padded to whole bytes."""
        if self.bits == 8:
            return np.ascontiguousarray(self.zero_points).reshape(-1)
        zp = self.zero_points
        if zp.shape[1] % 2:
            zp = np.concatenate([zp, np.full((zp.shape[0], 1), 8, np.uint8)], axis=1)
        return pack_uint4(zp).reshape(-1)


def pack_uint4(values: np.ndarray) -> np.ndarray:
    """Pairs along the last axis (even length) -> one byte each: element 2i in the low nibble."""
    v = values.astype(np.uint8)
    return (v[..., 0::2] & 0x0F) | ((v[..., 1::2] & 0x0F) << 4)


def unpack_uint4(packed: np.ndarray) -> np.ndarray:
    lo, hi = packed & 0x0F, packed >> 4
    return np.stack([lo, hi], axis=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


def check_blocks(name: str, shape: tuple[int, ...], block_size: int) -> None:
    if block_size < 16 or block_size > 256 or block_size & (block_size - 1):
        raise QuantizationError(f"block size {block_size} is not a power of two in [16, 256]",
                                "pass --block-size 16, 32, 64, 128 or 256")
    if len(shape) != 2 or shape[1] % block_size:
        raise QuantizationError(
            f"tensor {name} has shape {tuple(shape)}: its input dimension {shape[-1]} is not divisible by "
            f"block size {block_size}", f"pick a block size that divides {shape[-1]} (e.g. 32) or quant fp16")


def _codes(w: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int, symmetric: bool
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes, scales, zero points for blocks w [..., block] with ranges lo/hi [..., 1]."""
    qmax = (1 << bits) - 1
    if symmetric:
        mid = 1 << (bits - 1)
        # the signed extreme maps to -mid (llama.cpp Q4_0 style): codes -mid..mid-1 use the whole range
        scale = hi / -mid
        inv = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
        q = np.clip(np.rint(w * inv) + mid, 0, qmax)
        zp = np.full(scale.shape, mid, np.float32)
        return q, scale, zp  # a negative scale is fine: (q - zp) * scale
    scale = (hi - lo) / qmax
    inv = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    zp = np.clip(np.rint(-lo * inv), 0, qmax)
    q = np.clip(np.rint(w * inv) + zp, 0, qmax)
    return q, scale, zp


def _refit(w: np.ndarray, q: np.ndarray, s: np.ndarray, z: np.ndarray, bits: int, symmetric: bool
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One least-squares step: the scale (and offset) that best fit the chosen codes, then re-round."""
    qmax = (1 << bits) - 1
    if symmetric:
        c = q - z
        den = (c * c).sum(-1, keepdims=True)
        s2 = np.where(den > 0, (c * w).sum(-1, keepdims=True) / np.where(den > 0, den, 1), s)
        inv = np.divide(1.0, s2, out=np.zeros_like(s2), where=s2 != 0)
        return np.clip(np.rint(w * inv) + z, 0, qmax), s2, z
    n = w.shape[-1]
    sq, sw = q.sum(-1, keepdims=True), w.sum(-1, keepdims=True)
    den = n * (q * q).sum(-1, keepdims=True) - sq * sq
    ok = den > 0
    s2 = np.where(ok, (n * (q * w).sum(-1, keepdims=True) - sq * sw) / np.where(ok, den, 1), s)
    b = (sw - s2 * sq) / n                                     # w ~ s2 * q + b, and b = -zp * s2
    inv = np.divide(1.0, s2, out=np.zeros_like(s2), where=s2 != 0)
    z2 = np.clip(np.rint(-b * inv), 0, qmax)
    return np.clip(np.rint(w * inv) + z2, 0, qmax), s2, z2


CHUNK_ELEMENTS = 1 << 16     # weights per slice of rows quantized at once: the search's temporaries stay in cache


def quantize_blocks(w: np.ndarray, spec: QuantSpec, name: str = "tensor") -> BlockQuant:
    """Quantize a float [N, K] weight block-wise along K with `spec` (int4 or int8).

    Rows are independent, so they are quantized a slice of CHUNK_ELEMENTS at a time (the same bytes as all
    at once; the MSE search's dozen temporaries then stay in the CPU cache)."""
    if not spec.bits:
        raise QuantizationError(f"{spec.kind} is not a block-wise integer type")
    check_blocks(name, tuple(w.shape), spec.block_size)
    n, k = w.shape
    nb = k // spec.block_size
    blocks = np.asarray(w, dtype=np.float32).reshape(n, nb, spec.block_size)
    values = np.empty(blocks.shape, np.uint8)
    scales = np.empty((n, nb), np.float32)
    zeros = np.empty((n, nb), np.uint8)
    step = max(1, CHUNK_ELEMENTS // max(1, k))
    for lo in range(0, n, step):
        q, s, z = _search(blocks[lo:lo + step], spec)
        values[lo:lo + step], scales[lo:lo + step], zeros[lo:lo + step] = q, s[..., 0], z[..., 0]
    return BlockQuant(values=values, scales=scales, zero_points=zeros, bits=spec.bits, block_size=spec.block_size,
                      symmetric=spec.symmetric)


def _search(blocks: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, scales [..., 1], zero points [..., 1]) of blocks [rows, n_blocks, block], all float32."""
    if spec.symmetric:
        idx = np.abs(blocks).argmax(axis=-1)[..., None]
        base_hi = np.take_along_axis(blocks, idx, axis=-1)   # signed value of largest magnitude
        base_lo = base_hi
    else:
        base_lo = blocks.min(axis=-1, keepdims=True)
        base_hi = blocks.max(axis=-1, keepdims=True)
    grid = MSE_GRID if spec.method == "mse" else (1.0,)
    if len(grid) == 1:
        return _codes(blocks, base_lo, base_hi, spec.bits, spec.symmetric)
    best: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    best_err: np.ndarray | None = None
    for f in grid:
        q, s, z = _codes(blocks, base_lo * f, base_hi * f, spec.bits, spec.symmetric)
        for cand in ((q, s, z), _refit(blocks, q, s, z, spec.bits, spec.symmetric)):
            err = np.square((cand[0] - cand[2]) * cand[1] - blocks).sum(axis=-1, keepdims=True)
            if best is None or best_err is None:
                best, best_err = tuple(np.array(c) for c in cand), err   # type: ignore[assignment]  # three arrays
                continue
            better = err < best_err
            np.copyto(best_err, err, where=better)
            for old, new in zip(best, cand):
                np.copyto(old, new, where=better)
    assert best is not None
    return best
