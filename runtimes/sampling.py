"""A numpy sampler for runtimes that return logits (onnxruntime): llama.cpp's order of operations.

repeat penalty -> (temperature 0: argmax) -> top-k -> temperature -> softmax -> top-p -> min-p -> draw.
The seed makes a run reproducible; `seed=None` draws from fresh entropy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import GenerationError
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


def _top_prefix(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Indices of the smallest prefix, in (probability desc, index asc) order, whose mass reaches `top_p`.

    Looks at the best `m` candidates first (argpartition, O(n)) and sorts only those, doubling `m` until the
    prefix closes inside them: the same set a full stable argsort gives, without sorting the whole vocabulary."""
    n = probs.shape[-1]
    m = min(n, 64)
    while True:
        if m < n:
            thresh = probs[np.argpartition(probs, n - m)[n - m]]
            cand = np.flatnonzero(probs >= thresh)       # ties at the boundary all come along
        else:
            cand = np.arange(n)
        order = cand[np.lexsort((cand, -probs[cand]))]
        cum = np.cumsum(probs[order])
        cut = int(np.searchsorted(cum, top_p)) + 1        # smallest prefix reaching top_p
        if cut <= len(order) or m >= n:                  # reached inside the candidates, or they are all
            return order[:cut]
        m = min(n, m * 4)


_BIG = 1e300


def _finite(logits: np.ndarray) -> np.ndarray:
    """Logits as float64 with NaN as -inf and +inf as a huge finite value; GenerationError when nothing is left
    (a model with corrupt weights can produce all-NaN rows; sampling must not index past its arrays)."""
    x = np.nan_to_num(np.asarray(logits, dtype=np.float64), nan=-np.inf, posinf=_BIG, neginf=-np.inf)
    if x.size == 0 or not np.isfinite(x).any():
        raise GenerationError("the model produced no finite logits (NaN or -inf everywhere)",
                              "the artifact's weights are corrupt; rebuild or re-download it")
    return x


class Sampler:
    """Chooses the next token from a logits row [vocab].

    Greedy is one argmax. Otherwise the work runs on the kept candidates only: top-k picks them with
    argpartition (no full sort), top-p sorts only the head of the distribution, and the draw is
    `Generator.choice`'s own rule (cumulative sum, one uniform, searchsorted) over the survivors in index order,
    so a seed draws what a draw over the full [vocab] distribution would."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def _kept(self, logits: np.ndarray, history: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ascending token ids, their float64 probabilities summing to 1) after every filter."""
        p = self.params
        x = apply_repeat_penalty(_finite(logits), history, p.repeat_penalty, p.repeat_last_n)
        n = x.shape[-1]
        if p.temperature == 0:
            return np.array([int(np.argmax(x))]), np.ones(1)
        if 0 < p.top_k < n:
            kth = x[np.argpartition(x, n - p.top_k)[n - p.top_k]]
            idx = np.flatnonzero(x >= kth)                 # ties with the k-th are kept, as before
        else:
            idx = np.arange(n)
        # a tiny temperature may overflow to inf: keep it finite so the softmax below stays defined
        with np.errstate(over="ignore"):
            z = np.nan_to_num(x[idx] / p.temperature, nan=-np.inf, posinf=_BIG, neginf=-np.inf)
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        if p.top_p < 1.0:
            sel = np.sort(_top_prefix(probs, p.top_p))
            idx, probs = idx[sel], probs[sel]
        if p.min_p > 0.0:
            sel = probs >= p.min_p * probs.max()
            idx, probs = idx[sel], probs[sel]
        return idx, probs / probs.sum()

    def probabilities(self, logits: np.ndarray, history: Sequence[int] = ()) -> np.ndarray:
        """The distribution the next draw uses (float64 [vocab], zeros outside the kept set)."""
        idx, probs = self._kept(logits, history)
        out = np.zeros(np.shape(logits)[-1], dtype=np.float64)
        out[idx] = probs
        return out

    def __call__(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        p = self.params
        if p.temperature == 0:
            x = apply_repeat_penalty(_finite(logits), history, p.repeat_penalty, p.repeat_last_n)
            return int(np.argmax(x))
        idx, probs = self._kept(logits, history)
        if len(idx) == 1:
            self.rng.random()                              # keep the seed's stream in step with a real draw
            return int(idx[0])
        cdf = np.cumsum(probs)
        cdf /= cdf[-1]
        return int(idx[int(np.searchsorted(cdf, self.rng.random(), side="right"))])


def token_logprobs(row: np.ndarray, token: int, top: int) -> tuple[float, tuple[tuple[int, float], ...]]:
    """Log-probability of `token` under the model's distribution `row` (raw logits, before temperature and the
    sampler's filters) and the `top` most likely tokens with theirs, most likely first."""
    x = np.asarray(row, dtype=np.float64)
    x = np.where(np.isnan(x), -np.inf, x)
    peak = float(x.max())
    lp = x - (peak + float(np.log(np.exp(x - peak).sum())))
    best: tuple[tuple[int, float], ...] = ()
    if top > 0:
        idx = np.argpartition(-lp, min(top, lp.size) - 1)[:top]
        idx = idx[np.argsort(-lp[idx], kind="stable")]
        best = tuple((int(i), float(lp[i])) for i in idx)
    return float(lp[token]), best
