"""llama.cpp's own row quantizer, called directly: `ggml_quantize_chunk` from libggml-base (shipped inside
llama-cpp-python), so edgellm starts from exactly the block headers (scales, mins, sub-block scales) llama.cpp's
quantizer picks for a tensor, with or without an importance matrix (per-column weights, one float per input
column: llama.cpp's imatrix entry for that tensor).

    size_t ggml_quantize_chunk(enum ggml_type type, const float * src, void * dst,
                               int64_t start, int64_t nrows, int64_t n_per_row, const float * imatrix);
"""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, QuantizationError

_LIB: Any = None
_LIB_LOCK = threading.Lock()


def _lib() -> Any:
    global _LIB
    with _LIB_LOCK:
        if _LIB is None:
            try:
                import llama_cpp
            except ImportError as exc:  # pragma: no cover - core dependency
                raise BackendUnavailableError(f"llama-cpp-python cannot be imported ({exc})",
                                              "pip install llama-cpp-python") from None
            libdir = Path(llama_cpp.__file__).parent / "lib"
            found = sorted(libdir.glob("libggml-base.*")) or sorted(libdir.glob("ggml-base.*"))
            if not found:
                raise BackendUnavailableError(f"libggml-base is not in {libdir}",
                                              "reinstall llama-cpp-python (it ships the ggml libraries)")
            lib = ctypes.CDLL(str(found[0]))
            lib.ggml_quantize_chunk.restype = ctypes.c_size_t
            lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
            lib.ggml_row_size.restype = ctypes.c_size_t
            lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
            lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
            lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
            _LIB = lib
        return _LIB


def _type_id(ggml_type: str) -> int:
    import gguf

    try:
        return int(gguf.GGMLQuantizationType[ggml_type.upper()])
    except KeyError:
        raise QuantizationError(f"unknown GGML type {ggml_type!r}") from None


def row_bytes(ggml_type: str, n_per_row: int) -> int:
    return int(_lib().ggml_row_size(_type_id(ggml_type), n_per_row))


def ggml_quantize(w: np.ndarray, ggml_type: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Rows of float weights [N, K] -> llama.cpp's bytes of `ggml_type` [N, row_bytes] (uint8).
    imatrix: float [K] per-column importance (required by the IQ1/IQ2/IQ3_XXS types)."""
    lib = _lib()
    t = _type_id(ggml_type)
    src = np.ascontiguousarray(w, dtype=np.float32)
    if src.ndim != 2:
        raise QuantizationError(f"ggml_quantize takes [rows, columns], got shape {src.shape}")
    n, k = src.shape
    import gguf

    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t)][0]
    if k % block:
        raise QuantizationError(f"{ggml_type} needs rows that are a multiple of {block} values, got {k}")
    if imatrix is None and bool(lib.ggml_quantize_requires_imatrix(t)):
        raise QuantizationError(f"{ggml_type} needs an importance matrix")
    imat = None
    if imatrix is not None:
        imat = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
        if imat.size != k:
            raise QuantizationError(f"importance vector has {imat.size} entries for {k} columns")
    rb = int(lib.ggml_row_size(t, k))
    out = np.zeros((n, rb), np.uint8)
    written = lib.ggml_quantize_chunk(t, src.ctypes.data, out.ctypes.data, 0, n, k,
                                      None if imat is None else imat.ctypes.data)
    if int(written) != out.nbytes:
        raise QuantizationError(f"ggml_quantize_chunk wrote {written} bytes, expected {out.nbytes}")
    return out
