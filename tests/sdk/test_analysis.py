"""Per-step analysis: synthetic counters through the real metrics code, then a real SmolLM2 generation."""
from __future__ import annotations

import pytest

from edgellm.analysis import analyze
from edgellm.metrics import RawCounters, compute_metrics


def _metrics(gaps_ms: list[float], prompt: int = 10, ttft: float = 0.5, detok: float = 0.01):
    c = RawCounters(prompt_tokens=prompt)
    t = c.start + ttft
    c.token_times = [t]
    c.step_runtime_s = [ttft]
    for g in gaps_ms:
        t += g / 1000
        c.token_times.append(t)
        c.step_runtime_s.append(g / 1000 * 0.9)  # 10 % of every step is spent outside the runtime
    c.detok_s = detok
    c.finish()
    c.end = t
    return compute_metrics(c, backend="test", device="cpu", threads=1, load_s=0.0)


def test_growing_latency_gives_positive_slope_and_outliers() -> None:
    gaps = [30.0] + [10.0 + 0.02 * i for i in range(200)]  # warm-up step, then +0.02 ms per token
    gaps[120] = 80.0
    a = analyze(_metrics(gaps))
    assert a.steps == 201
    assert a.first_step_ratio == pytest.approx(30.0 / 12.0, rel=0.05)
    assert [(i, round(ms, 3)) for i, ms in a.slow_steps] == [(0, 30.0), (120, 80.0)]
    assert a.slope_ms_per_1k_tokens == pytest.approx(20.0, rel=0.05)
    assert a.growth_over_run == pytest.approx(0.02 * 198 / 10.02, rel=0.1)
    assert any("grew" in n for n in a.notes)
    assert sum(b.count for b in a.histogram) == 201
    assert a.percentiles_ms["max"] == pytest.approx(80.0)


def test_flat_latency_has_no_growth_and_time_shares_add_up() -> None:
    a = analyze(_metrics([10.0] * 50, ttft=0.5, detok=0.02))
    assert abs(a.slope_ms_per_1k_tokens) < 1e-6 and not a.slow_steps
    assert sum(a.time_share.values()) == pytest.approx(1.0)
    assert a.time_s["prefill"] == pytest.approx(0.5)
    assert a.time_s["decode"] == pytest.approx(0.45, rel=1e-3)   # 90 % of 50 x 10 ms
    assert a.time_s["detokenization"] == pytest.approx(0.02)
    assert a.time_s["other"] == pytest.approx(0.03, abs=1e-3)


@pytest.mark.slow
def test_real_generation_breakdown(smollm2_gguf) -> None:
    import edgellm

    with edgellm.load(smollm2_gguf("Q4_0"), threads=1, n_ctx=512) as model:
        m = model.generate("Write a list of fruits:", max_tokens=40, temperature=0.0).metrics
    a = analyze(m)
    assert a.steps == m.generated_tokens - 1
    assert a.time_s["prefill"] > 0 and a.time_s["decode"] > a.time_s["detokenization"] > 0
    assert a.time_share["decode"] > 0.3
    assert sum(a.time_share.values()) == pytest.approx(1.0)
    assert "decode steps" in a.summary()
