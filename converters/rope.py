"""Rotary-embedding frequencies for the RoPE variants HF configs name (shared by the GGUF and ONNX writers)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConversionError

SUPPORTED_ROPE = ("default", "linear", "llama3")      # what every family handles
ALL_ROPE = SUPPORTED_ROPE + ("longrope",)             # longrope: families that declare it (Phi-3)


def rope_kind(scaling: dict[str, Any] | None, allowed: tuple[str, ...] = SUPPORTED_ROPE) -> str:
    kind = str((scaling or {}).get("rope_type", (scaling or {}).get("type", "default")) or "default")
    if kind == "su":
        kind = "longrope"
    if kind not in allowed:
        raise ConversionError(f"rope scaling {kind!r} is not supported for this family; supported: "
                              f"{', '.join(allowed)}",
                              "convert a model without this rope scaling, or open an issue naming the model")
    return kind


def longrope_factors(scaling: dict[str, Any], seq_len: int | None) -> np.ndarray:
    """Phi-3's per-frequency divisors, as HF picks them: the long ones while the sequence (past + new tokens)
    is longer than original_max_position_embeddings, else the short ones. seq_len None: the short ones."""
    long = seq_len is not None and seq_len > int(scaling["original_max_position_embeddings"])
    return np.asarray(scaling["long_factor" if long else "short_factor"], np.float64)


def rope_mscale(scaling: dict[str, Any] | None) -> float:
    """The factor cos and sin are multiplied by (longrope's attention factor; 1 otherwise)."""
    if rope_kind(scaling, ALL_ROPE) != "longrope":
        return 1.0
    return float(scaling["attention_factor"])  # type: ignore[index]  # checked in limits.py


def rope_inv_freq(head_dim: int, theta: float, scaling: dict[str, Any] | None,
                  seq_len: int | None = None) -> np.ndarray:
    """Inverse frequencies, shape (head_dim/2,), float64, after any scaling (HF rotate-half convention).
    seq_len matters for longrope only (see longrope_factors)."""
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    kind = rope_kind(scaling, ALL_ROPE)
    if kind == "longrope":
        return inv / longrope_factors(scaling, seq_len)  # type: ignore[arg-type]  # checked in limits.py
    if kind == "linear":
        return inv / float(scaling["factor"])  # type: ignore[index]  # checked in limits.py
    if kind == "llama3":
        s = scaling or {}
        try:
            factor, lo, hi = float(s["factor"]), float(s["low_freq_factor"]), float(s["high_freq_factor"])
            old = float(s["original_max_position_embeddings"])
        except (KeyError, TypeError, ValueError):
            raise ConversionError("llama3 rope scaling needs factor, low_freq_factor, high_freq_factor and "
                                  "original_max_position_embeddings") from None
        wavelen = 2 * np.pi / inv
        smooth = np.clip((old / wavelen - lo) / (hi - lo), 0.0, 1.0)
        return np.where(wavelen > old / lo, inv / factor,
                        np.where(wavelen < old / hi, inv, (1 - smooth) * inv / factor + smooth * inv))
    return inv


def llama_cpp_freq_factors(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> np.ndarray | None:
    """llama.cpp's `rope_freqs.weight` (it divides each base frequency by its factor), or None when the
    scaling is expressed with metadata keys instead (default, linear)."""
    if rope_kind(scaling, ALL_ROPE) != "llama3":
        return None
    base = rope_inv_freq(head_dim, theta, None)
    return (base / rope_inv_freq(head_dim, theta, scaling)).astype(np.float32)
