"""Per-step analysis of one generation: latency histogram and percentiles, where the time went
(prefill, decode, detokenization, the rest), and outliers: the first decode step after prefill,
slow steps, and the cache-growth trend (step latency against position in the context).

Sampling is not reported separately: llama.cpp samples inside its step, so it is part of "decode".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .metrics import Metrics


@dataclass(frozen=True)
class Bin:
    lo_ms: float
    hi_ms: float
    count: int


@dataclass(frozen=True)
class StepAnalysis:
    steps: int                                  # decode steps (inter-token gaps)
    percentiles_ms: dict[str, float]            # p50, p90, p95, p99, max, mean
    histogram: tuple[Bin, ...]
    time_share: dict[str, float]                # prefill, decode, detokenization, other -> fraction of wall time
    time_s: dict[str, float]                    # the same in seconds
    first_step_ms: float | None                 # the first decode step after prefill
    first_step_ratio: float | None              # first_step_ms / median step
    slow_steps: tuple[tuple[int, float], ...]   # (decode step index, ms) above slow_factor x median
    slope_ms_per_1k_tokens: float | None        # fitted latency growth per 1000 tokens of context
    growth_over_run: float | None               # fitted latency at the last step / at the first - 1
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps, "percentiles_ms": self.percentiles_ms,
            "histogram": [[b.lo_ms, b.hi_ms, b.count] for b in self.histogram],
            "time_share": self.time_share, "time_s": self.time_s, "first_step_ms": self.first_step_ms,
            "first_step_ratio": self.first_step_ratio, "slow_steps": [list(s) for s in self.slow_steps],
            "slope_ms_per_1k_tokens": self.slope_ms_per_1k_tokens, "growth_over_run": self.growth_over_run,
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        p = self.percentiles_ms
        share = ", ".join(f"{k} {v * 100:.1f}%" for k, v in self.time_share.items())
        lines = [f"{self.steps} decode steps: p50 {p.get('p50', float('nan')):.2f} ms, "
                 f"p90 {p.get('p90', float('nan')):.2f}, p99 {p.get('p99', float('nan')):.2f}, "
                 f"max {p.get('max', float('nan')):.2f}", f"time: {share}"]
        lines.extend(self.notes)
        return "\n".join(lines)


def histogram(values_ms: np.ndarray, bins: int = 20) -> tuple[Bin, ...]:
    if values_ms.size == 0:
        return ()
    counts, edges = np.histogram(values_ms, bins=bins)
    return tuple(Bin(float(a), float(b), int(c)) for a, b, c in zip(edges, edges[1:], counts))


def analyze(metrics: Metrics, *, bins: int = 20, slow_factor: float = 2.0) -> StepAnalysis:
    """Analyse the per-token record of one generation (`result.metrics` or `model.last_metrics`)."""
    gaps = np.asarray(metrics.token_latency_ms.values, dtype=np.float64)
    notes: list[str] = []
    pct: dict[str, float] = {}
    if gaps.size:
        for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
            pct[name] = float(np.percentile(gaps, q))
        pct["max"], pct["mean"] = float(gaps.max()), float(gaps.mean())

    wall = metrics.wall_s
    prefill = metrics.ttft_s or 0.0
    if metrics.runtime_s is not None:
        decode = max(0.0, metrics.runtime_s - prefill)
    else:  # no per-step runtime record: everything after the first token counts as decode
        decode = max(0.0, wall - prefill - metrics.detok_s)
        notes.append("no per-step runtime times recorded; loop overhead is counted as decode")
    detok = metrics.detok_s
    other = max(0.0, wall - prefill - decode - detok)
    time_s = {"prefill": prefill, "decode": decode, "detokenization": detok, "other": other}
    total = sum(time_s.values()) or 1.0
    share = {k: v / total for k, v in time_s.items()}

    first = ratio = slope = growth = None
    slow: tuple[tuple[int, float], ...] = ()
    if gaps.size:
        median = float(np.median(gaps))
        first = float(gaps[0])
        ratio = first / median if median > 0 else None
        if ratio is not None and ratio > slow_factor:
            notes.append(f"the first decode step took {ratio:.1f}x the median (warm-up after prefill)")
        slow = tuple((int(i), float(g)) for i, g in enumerate(gaps) if median > 0 and g > slow_factor * median)
        if slow:
            notes.append(f"{len(slow)} of {gaps.size} steps were slower than {slow_factor:g}x the median "
                         f"({median:.2f} ms)")
    if gaps.size >= 8:
        # position of each decode step in the context: prompt + tokens already generated
        pos = metrics.prompt_tokens + 1 + np.arange(gaps.size, dtype=np.float64)
        body = gaps[1:] if gaps.size > 8 else gaps  # leave the warm-up step out of the fit
        x = pos[1:] if gaps.size > 8 else pos
        # a robust-ish fit: clip the slow outliers to the 95th percentile first
        b, a = np.polyfit(x, np.minimum(body, np.percentile(body, 95)), 1)
        slope = float(b * 1000.0)
        start, end = a + b * x[0], a + b * x[-1]
        growth = float(end / start - 1.0) if start > 0 else None
        if growth is not None and growth > 0.1:
            notes.append(f"step latency grew {growth * 100:.0f}% from position {int(x[0])} to {int(x[-1])} "
                         f"({slope:.2f} ms per 1000 tokens of context): attention over a growing KV cache")
    return StepAnalysis(steps=int(gaps.size), percentiles_ms=pct, histogram=histogram(gaps, bins),
                        time_share=share, time_s=time_s, first_step_ms=first, first_step_ratio=ratio,
                        slow_steps=slow, slope_ms_per_1k_tokens=slope, growth_over_run=growth, notes=tuple(notes))
