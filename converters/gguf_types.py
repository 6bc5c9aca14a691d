"""GGUF output types as data: which we write ourselves and which llama.cpp's quantizer writes.

`QUANT_TYPES` doubles as the CLI's `--quant` choices for `--format gguf`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import QuantizationError


@dataclass(frozen=True)
class GGUFQuant:
    name: str              # as users write it, upper case: "Q4_K_M"
    file_type: int         # llama.cpp's llama_ftype (general.file_type)
    main_type: str         # the GGML type most weight matrices get
    native: bool           # written by edgellm itself (no llama.cpp quantizer involved)
    needs_imatrix: bool = False


def _q(name: str, file_type: int, main: str, native: bool = False, imatrix: bool = False) -> GGUFQuant:
    return GGUFQuant(name, file_type, main, native, imatrix)


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
