"""The block ops computed in numpy (float32): the reference forward pass and the GPTQ calibration pass.

Sequences start at position 0 (no KV cache): [B, S, D] in, [B, S, D] out.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..quant import BlockQuant
from ..rope import rope_inv_freq, rope_mscale
from .base import AttnSpec, Ops

# (name, weight [N, K], X^T X [K, K]) -> its quantization, or None when the weight stays in float
Quantizer = Callable[[str, np.ndarray, np.ndarray], "BlockQuant | None"]


def hessian(x: np.ndarray) -> np.ndarray:
    """X^T X / tokens [K, K] float32 of the activations x [..., K] (one symmetric BLAS product, no copy of x)."""
    flat = np.asarray(x, np.float32).reshape(-1, x.shape[-1])
    h = flat.T @ flat
    h /= np.float32(flat.shape[0])
    return h


def rms(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight).astype(np.float32)


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"silu": _silu, "gelu_tanh": _gelu_tanh}


def rotate(x: np.ndarray, inv_freq: np.ndarray, mscale: float = 1.0) -> np.ndarray:
    """Rotate-half RoPE on the first 2*len(inv_freq) dims of x [B, H, S, hd] at positions 0..S-1."""
    s, rot = x.shape[2], 2 * len(inv_freq)
    ang = np.outer(np.arange(s, dtype=np.float64), inv_freq)                     # [S, rot/2]
    cos = (np.cos(np.concatenate([ang, ang], -1)) * mscale).astype(np.float32)
    sin = (np.sin(np.concatenate([ang, ang], -1)) * mscale).astype(np.float32)
    xr, rest = x[..., :rot], x[..., rot:]
    half = rot // 2
    turned = np.concatenate([-xr[..., half:], xr[..., :half]], -1)
    return np.concatenate([xr * cos + turned * sin, rest], -1)


class NumpyOps(Ops[np.ndarray]):
    """Computes. With a quantizer, each linear's weight is quantized against its input's Hessian first
    (GPTQ's sequential pass); the quantizations are collected in `quantized` by linear name."""

    def __init__(self, quantize: Quantizer | None = None) -> None:
        self.quantize = quantize
        self.quantized: dict[str, BlockQuant] = {}

    def linear(self, x: np.ndarray, name: str, weights: list[np.ndarray],
               biases: list[np.ndarray | None] | None = None) -> list[np.ndarray]:
        w = np.concatenate([np.asarray(a, np.float32) for a in weights]) if len(weights) > 1 else \
            np.asarray(weights[0], np.float32)
        if self.quantize is not None:
            bq = self.quantize(name, w, hessian(x))
            if bq is not None:
                self.quantized[name] = bq
                w = bq.dequantize()
        y = (x @ w.T).astype(np.float32)
        if biases is not None and any(b is not None for b in biases):
            y = y + np.concatenate([np.zeros(a.shape[0], np.float32) if b is None else np.asarray(b, np.float32)
                                    for a, b in zip(weights, biases)])
        cuts = np.cumsum([a.shape[0] for a in weights])[:-1]
        return list(np.split(y, cuts, axis=-1))

    def norm(self, x: np.ndarray, weight: np.ndarray, eps: float, name: str) -> np.ndarray:
        return rms(x, weight, eps)

    def add_norm(self, residual: np.ndarray, delta: np.ndarray | None, weight: np.ndarray, eps: float,
                 name: str) -> tuple[np.ndarray, np.ndarray]:
        total = residual if delta is None else (residual + delta).astype(np.float32)
        return rms(total, weight, eps), total

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a + b).astype(np.float32)

    def scale(self, x: np.ndarray, factor: float) -> np.ndarray:
        return (x * np.float32(factor)).astype(np.float32)

    def mul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).astype(np.float32)

    def causal_conv(self, x: np.ndarray, weight: np.ndarray, name: str) -> np.ndarray:
        b, s, d = x.shape
        taps = weight.shape[1]
        padded = np.concatenate([np.zeros((b, taps - 1, d), np.float32), x], axis=1)   # [B, L-1+S, D]
        out = np.zeros_like(x)
        for j in range(taps):
            out += padded[:, j:j + s] * weight[:, j].astype(np.float32)
        return out

    def head_norm(self, x: np.ndarray, weight: np.ndarray, eps: float, heads: int, name: str) -> np.ndarray:
        b, s, d = x.shape
        return rms(x.reshape(b, s, heads, d // heads), weight, eps).reshape(b, s, d)

    def gated(self, gate: np.ndarray, up: np.ndarray, act: str) -> np.ndarray:
        return (ACTIVATIONS[act](gate) * up).astype(np.float32)

    def attention(self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray, spec: AttnSpec) -> np.ndarray:
        b, s, _ = q.shape
        h, kv, hd = spec.heads, spec.kv_heads, spec.head_dim
        q = q.reshape(b, s, h, hd).transpose(0, 2, 1, 3)
        k = k.reshape(b, s, kv, hd).transpose(0, 2, 1, 3)
        v = v.reshape(b, s, kv, hd).transpose(0, 2, 1, 3)
        if spec.rope_theta is not None:
            inv = rope_inv_freq(spec.rotary_dim, spec.rope_theta, spec.rope_scaling, seq_len=s)
            m = rope_mscale(spec.rope_scaling)
            q, k = rotate(q, inv, m), rotate(k, inv, m)
        k = np.repeat(k, h // kv, axis=1)       # query head n reads kv head n // (h / kv)
        v = np.repeat(v, h // kv, axis=1)
        scores = (q @ k.transpose(0, 1, 3, 2)).astype(np.float32) * np.float32(spec.scale)    # [B, H, S, S]
        if spec.softcap:
            scores = np.tanh(scores / spec.softcap) * spec.softcap
        i, j = np.arange(s)[:, None], np.arange(s)[None, :]
        allowed = j <= i
        if spec.window is not None:
            allowed &= (i - j) < spec.window
        scores = np.where(allowed, scores, -np.inf)
        scores -= scores.max(-1, keepdims=True)
        p = np.exp(scores)
        p /= p.sum(-1, keepdims=True)
        return (p @ v).transpose(0, 2, 1, 3).reshape(b, s, h * hd).astype(np.float32)
