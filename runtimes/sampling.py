"""A numpy sampler for runtimes that return logits (onnxruntime): llama.cpp's order of operations.

repeat penalty -> (temperature 0: argmax) -> top-k -> temperature -> softmax -> top-p -> min-p -> draw.
The seed makes a run reproducible; `seed=None` draws from fresh entropy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .base import SamplingParams


def apply_repeat_penalty(logits: np.ndarray, history: Sequence[int], penalty: float, last_n: int) -> np.ndarray:
    """llama.cpp's penalty: positive logits of recent tokens divided by `penalty`, negative ones multiplied."""
    if penalty == 1.0 or not history or last_n == 0:
        return logits
    recent = np.unique(np.asarray(history[-last_n:] if last_n > 0 else history, dtype=np.int64))
    recent = recent[(recent >= 0) & (recent < logits.shape[-1])]
    out = logits.copy()
    vals = out[recent]
    out[recent] = np.where(vals > 0, vals / penalty, vals * penalty)
    return out


class Sampler:
    """Chooses the next token from a logits row [vocab]."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def probabilities(self, logits: np.ndarray, history: Sequence[int] = ()) -> np.ndarray:
        """The distribution the next draw uses (float64 [vocab], zeros outside the kept set)."""
        p = self.params
        x = apply_repeat_penalty(np.asarray(logits, dtype=np.float64), history, p.repeat_penalty, p.repeat_last_n)
        if p.temperature == 0:
            probs = np.zeros_like(x)
            probs[int(np.argmax(x))] = 1.0
            return probs
        keep = np.ones(x.shape, dtype=bool)
        if 0 < p.top_k < x.shape[-1]:
            kth = np.partition(x, -p.top_k)[-p.top_k]
            keep &= x >= kth
        z = np.where(keep, x / p.temperature, -np.inf)
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cum = np.cumsum(probs[order])
            cut = int(np.searchsorted(cum, p.top_p)) + 1        # smallest prefix reaching top_p
            mask = np.zeros_like(keep)
            mask[order[:cut]] = True
            probs = np.where(mask, probs, 0.0)
        if p.min_p > 0.0:
            probs = np.where(probs >= p.min_p * probs.max(), probs, 0.0)
        return probs / probs.sum()

    def __call__(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        if self.params.temperature == 0:
            x = apply_repeat_penalty(np.asarray(logits, dtype=np.float32), history, self.params.repeat_penalty,
                                     self.params.repeat_last_n)
            return int(np.argmax(x))
        probs = self.probabilities(logits, history)
        return int(self.rng.choice(probs.shape[-1], p=probs))
