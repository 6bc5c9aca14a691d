"""llama.cpp block layouts as data: where each element's integer code lives in a block's bytes, and how the block
header (d, dmin, sub-block scales) turns codes into values.

Every supported type reads as: value = scale[group] * levels[code] + offset[group], with `group` a run of
`group_size` consecutive elements of a row (a block for the 32-element types, a sub-block for the K-quants).
`parse` splits a quantized tensor's raw bytes [rows, row_bytes] into those arrays; `pack` writes new codes into
the same bytes, leaving every header byte untouched, so the result is a valid tensor of the same type that
llama.cpp runs with its own kernels. Layouts follow ggml-quants.c (block_q4_0 ... block_q6_K).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import QuantizationError

QK_K = 256
_IQ4_NL_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


def _f16(raw: np.ndarray, at: int) -> np.ndarray:
    """float16 at byte `at` of each block, as float32 [rows, blocks]."""
    return np.ascontiguousarray(raw[..., at:at + 2]).view(np.float16)[..., 0].astype(np.float32)


def _nibbles(base: int, e: np.ndarray, half: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Low-nibble/high-nibble packing: element e's 4 code bits in byte base + e % half, nibble e // half."""
    return [(base + e % half, 4 * (e // half) + b) for b in range(4)]


def _kquant_scales(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K 6-bit sub-block scales and mins (get_scale_min_k4), each [rows, blocks, 8]."""
    s = raw[..., 4:16].astype(np.uint8)
    d, m, md = s[..., 0:4], s[..., 4:8], s[..., 8:12]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _plain(has_min: bool) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def header(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = _f16(raw, 0)
        return d, (_f16(raw, 2) if has_min else np.zeros_like(d))
    return header


def _k4(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d, dmin = _f16(raw, 0), _f16(raw, 2)
    sc, mn = _kquant_scales(raw)
    return (d[..., None] * sc).reshape(*raw.shape[:-2], -1), (-(dmin[..., None] * mn)).reshape(*raw.shape[:-2], -1)


def _q6k(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = _f16(raw, 208)
    sc = np.ascontiguousarray(raw[..., 192:208]).view(np.int8).astype(np.float32)
    scale = (d[..., None] * sc).reshape(*raw.shape[:-2], -1)
    return scale, np.zeros_like(scale)


@dataclass(frozen=True)
class Layout:
    name: str
    block: int                 # elements per block
    nbytes: int                # bytes per block
    group: int                 # elements sharing one (scale, offset)
    levels: np.ndarray         # float32 [2**bits]: the level each code stands for
    bit_byte: np.ndarray       # int [block, bits]: byte of code bit b of element e
    bit_pos: np.ndarray        # int [block, bits]: bit within that byte
    header: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]   # raw [rows, blocks, nbytes] -> scale, offset

    @property
    def bits(self) -> int:
        return int(self.bit_byte.shape[1])

    def code_mask(self) -> np.ndarray:
        """bool [nbytes * 8]: the block's bits that hold codes (the rest is header, kept as is)."""
        mask = np.zeros(self.nbytes * 8, bool)
        mask[self.bit_byte * 8 + self.bit_pos] = True
        return mask


def _layout(name: str, block: int, nbytes: int, group: int, levels: np.ndarray,
            bits: Callable[[np.ndarray], list[tuple[np.ndarray, np.ndarray]]],
            header: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> Layout:
    e = np.arange(block)
    pairs = bits(e)
    return Layout(name, block, nbytes, group, np.asarray(levels, np.float32),
                  np.stack([p[0] for p in pairs], 1), np.stack([p[1] for p in pairs], 1), header)


def _q5_bits(qs: int, qh: int) -> Callable[[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    return lambda e: _nibbles(qs, e, 16) + [(qh + e // 8, e % 8)]


def _q4k_bits(base: int) -> Callable[[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    # 4 chunks of 64 elements, 32 bytes each: element 64j + r in byte base + 32j + r % 32, nibble r // 32
    return lambda e: [(base + 32 * (e // 64) + (e % 64) % 32, 4 * ((e % 64) // 32) + b) for b in range(4)]


def _q5k_bits(e: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    return _q4k_bits(48)(e) + [(16 + e % 32, e // 32)]


def _q6k_bits(e: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    h, r = e // 128, e % 128
    low = [(64 * h + r % 64, 4 * (r // 64) + b) for b in range(4)]
    high = [(128 + 32 * h + r % 32, 2 * (r // 32) + b) for b in range(2)]
    return low + high


LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (
    _layout("Q4_0", 32, 18, 32, np.arange(16) - 8, lambda e: _nibbles(2, e, 16), _plain(False)),
    _layout("Q4_1", 32, 20, 32, np.arange(16), lambda e: _nibbles(4, e, 16), _plain(True)),
    _layout("Q5_0", 32, 22, 32, np.arange(32) - 16, _q5_bits(6, 2), _plain(False)),
    _layout("Q5_1", 32, 24, 32, np.arange(32), _q5_bits(8, 4), _plain(True)),
    _layout("Q8_0", 32, 34, 32, np.arange(256).astype(np.uint8).view(np.int8),
            lambda e: [(2 + e, np.full_like(e, b)) for b in range(8)], _plain(False)),
    _layout("IQ4_NL", 32, 18, 32, np.asarray(_IQ4_NL_VALUES), lambda e: _nibbles(2, e, 16), _plain(False)),
    _layout("Q4_K", QK_K, 144, 32, np.arange(16), _q4k_bits(16), _k4),
    _layout("Q5_K", QK_K, 176, 32, np.arange(32), _q5k_bits, _k4),
    _layout("Q6_K", QK_K, 210, 16, np.arange(64) - 32, _q6k_bits, _q6k),
)}


def layout(ggml_type: str) -> Layout:
    try:
        return LAYOUTS[ggml_type.upper()]
    except KeyError:
        raise QuantizationError(f"edgellm has no block layout for {ggml_type}",
                                f"supported: {', '.join(LAYOUTS)}") from None


@dataclass
class Blocks:
    """A quantized tensor split into what its values are made of."""
    type: str
    raw: np.ndarray        # uint8 [rows, row_bytes]: the original bytes (headers come from here)
    scale: np.ndarray      # float32 [rows, groups]
    offset: np.ndarray     # float32 [rows, groups]
    codes: np.ndarray      # uint8 [rows, K]

    @property
    def layout(self) -> Layout:
        return layout(self.type)

    def values(self, codes: np.ndarray | None = None) -> np.ndarray:
        """float32 [rows, K] the block types dequantizes to (the stored codes, or `codes` with these headers)."""
        lay = self.layout
        c = self.codes if codes is None else codes
        n, k = c.shape
        lev = lay.levels[c].reshape(n, -1, lay.group)
        return (self.scale[..., None] * lev + self.offset[..., None]).reshape(n, k)


def parse(ggml_type: str, raw: np.ndarray) -> Blocks:
    """Raw bytes [rows, row_bytes] of a `ggml_type` tensor -> Blocks."""
    lay = layout(ggml_type)
    raw = np.ascontiguousarray(raw, np.uint8)
    if raw.ndim != 2 or raw.shape[1] % lay.nbytes:
        raise QuantizationError(f"{ggml_type}: row bytes {raw.shape[-1]} are not a multiple of {lay.nbytes}")
    n, nb = raw.shape[0], raw.shape[1] // lay.nbytes
    blocks = raw.reshape(n, nb, lay.nbytes)
    scale, offset = lay.header(blocks)
    codes = np.zeros((n, nb, lay.block), np.uint8)
    for b in range(lay.bits):
        codes |= ((blocks[:, :, lay.bit_byte[:, b]] >> lay.bit_pos[:, b].astype(np.uint8)) & 1) << np.uint8(b)
    return Blocks(lay.name, raw, scale.astype(np.float32), offset.astype(np.float32), codes.reshape(n, -1))


def pack(blocks: Blocks, codes: np.ndarray) -> np.ndarray:
    """The tensor's bytes with `codes` [rows, K] in place of the stored ones; header bytes unchanged."""
    lay = blocks.layout
    n = blocks.raw.shape[0]
    nb = blocks.raw.shape[1] // lay.nbytes
    c = np.asarray(codes, np.uint8).reshape(n, nb, lay.block)
    if c.size != blocks.codes.size:
        raise QuantizationError(f"{lay.name}: {c.size} codes for a tensor of {blocks.codes.size} values")
    bits = np.unpackbits(blocks.raw.reshape(n, nb, lay.nbytes), axis=-1, bitorder="little")
    where = lay.bit_byte * 8 + lay.bit_pos                        # [block, bits]
    for b in range(lay.bits):
        bits[:, :, where[:, b]] = (c >> np.uint8(b)) & 1
    return np.packbits(bits, axis=-1, bitorder="little").reshape(n, -1)


def nearest_codes(lay: Layout) -> Callable[[np.ndarray], np.ndarray]:
    """t (values in level units) -> the code of the nearest level (ties to the lower level)."""
    order = np.argsort(lay.levels, kind="stable")
    sorted_levels = lay.levels[order]
    mids = (sorted_levels[1:] + sorted_levels[:-1]) / 2
    codes = order.astype(np.uint8)
    return lambda t: codes[np.searchsorted(mids, t)]
