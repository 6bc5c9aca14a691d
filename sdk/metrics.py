"""The one place where raw counters become numbers: tokens/s, TTFT, latency percentiles, memory, energy.

Runtimes and the generation loop record raw counters (`RawCounters`); `compute_metrics` turns them
into a `Metrics`. Nothing else computes these numbers.
"""
from __future__ import annotations

import os
import re
import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Inter-token latencies of the decode phase, in milliseconds."""
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    mean: float | None
    values: tuple[float, ...] = field(repr=False, default=())

    @classmethod
    def from_values(cls, values_ms: list[float]) -> "LatencyStats":
        if not values_ms:
            return cls(None, None, None, None, None, ())
        a = np.asarray(values_ms, dtype=np.float64)
        p50, p90, p99 = (float(x) for x in np.percentile(a, [50, 90, 99]))
        return cls(p50, p90, p99, float(a.max()), float(a.mean()), tuple(float(x) for x in a))


@dataclass(frozen=True)
class Metrics:
    backend: str
    device: str
    threads: int | None
    load_s: float
    ttft_s: float | None
    prompt_tokens: int
    prefill_tps: float | None
    generated_tokens: int
    decode_tps: float | None
    token_latency_ms: LatencyStats
    peak_rss_bytes: int | None
    rss_delta_bytes: int | None
    cpu_s: float
    wall_s: float
    energy_j: float | None = None
    energy_per_token_j: float | None = None
    energy_method: str = "unavailable"
    detok_s: float = 0.0
    energy_prefill_j: float | None = None          # from start to the first token (prompt processing)
    energy_decode_j: float | None = None           # from the first token to the end
    energy_per_decode_token_j: float | None = None  # energy_decode_j / (generated_tokens - 1)
    runtime_s: float | None = None                 # time spent inside the runtime (prefill + decode + sampling)
    # peak_rss_bytes is the process's peak so far (the load's included: what a plan budgets for); this is the
    # peak during this call alone (None where the kernel's mark cannot be reset)
    call_peak_rss_bytes: int | None = None

    def to_dict(self, with_latencies: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["token_latency_ms"]["values"] = list(self.token_latency_ms.values) if with_latencies else None
        return d

    def summary(self) -> str:
        def f(x: float | None, fmt: str) -> str:
            return "n/a" if x is None else format(x, fmt)

        lat = self.token_latency_ms
        mem = "n/a" if self.peak_rss_bytes is None else f"{self.peak_rss_bytes / 2**20:.0f} MiB"
        energy = "n/a" if self.energy_per_token_j is None else f"{self.energy_per_token_j:.3f} J/tok ({self.energy_method})"
        if self.energy_prefill_j is not None and self.energy_decode_j is not None:
            energy += f" = prefill {self.energy_prefill_j:.2f} J + decode {self.energy_decode_j:.2f} J"
        return (f"[{self.backend} on {self.device}, {self.threads} threads] load {self.load_s:.2f}s | "
                f"TTFT {f(self.ttft_s and self.ttft_s * 1000, '.0f')} ms | prefill {f(self.prefill_tps, '.1f')} tok/s "
                f"({self.prompt_tokens} tok) | decode {f(self.decode_tps, '.1f')} tok/s ({self.generated_tokens} tok) | "
                f"latency p50 {f(lat.p50, '.1f')} p90 {f(lat.p90, '.1f')} p99 {f(lat.p99, '.1f')} ms | "
                f"peak RSS {mem} | CPU {self.cpu_s:.2f}s | energy {energy}")


_HWM = re.compile(rb"VmHWM:\s+(\d+) kB")
_RSS = re.compile(rb"VmRSS:\s+(\d+) kB")


def _status_kb(pattern: re.Pattern[bytes]) -> int | None:
    try:
        with open("/proc/self/status", "rb") as f:
            m = pattern.search(f.read())
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


# The process's peak RSS before the last reset of the kernel's mark: load peaks (mapping, repacking, session
# creation) happen before a generation resets it, and a plan budgets for them.
_PEAK_BEFORE_RESET = 0


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark for this process (Linux: write 5 to clear_refs), remembering the peak
    so far (process_peak_rss() keeps reporting it)."""
    global _PEAK_BEFORE_RESET
    before = peak_rss()
    if before:
        _PEAK_BEFORE_RESET = max(_PEAK_BEFORE_RESET, before)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss() -> int | None:
    rss = _status_kb(_RSS)
    if rss is None:
        try:
            import psutil

            rss = int(psutil.Process().memory_info().rss)
        except Exception:  # noqa: BLE001
            return None
    return rss


def peak_rss() -> int | None:
    hwm = _status_kb(_HWM)
    if hwm is None:  # macOS reports bytes, Linux kB
        ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        hwm = ru if os.uname().sysname == "Darwin" else ru * 1024
    return hwm


def process_peak_rss() -> int | None:
    """The process's peak RSS since it started, load included, whatever resets happened in between."""
    now = peak_rss()
    if now is None:
        return _PEAK_BEFORE_RESET or None
    return max(now, _PEAK_BEFORE_RESET)


@dataclass
class RawCounters:
    """What the generation loop records; no arithmetic happens here."""
    start: float = field(default_factory=time.perf_counter)
    cpu_start: float = field(default_factory=time.process_time)
    rss_start: int | None = field(default_factory=current_rss)
    peak_reset: bool = field(default_factory=reset_peak_rss)
    prompt_tokens: int = 0
    token_times: list[float] = field(default_factory=list)
    step_runtime_s: list[float] = field(default_factory=list)  # per token: time inside the runtime's step
    detok_s: float = 0.0               # time spent turning tokens into text (incl. stop-string checks)
    end: float | None = None
    cpu_end: float | None = None
    rss_end: int | None = None
    peak: int | None = None            # peak since this call's reset (the call's own peak)
    process_peak: int | None = None    # the process's peak so far, the model's load included

    def stamp(self) -> None:
        self.token_times.append(time.perf_counter())

    def finish(self) -> None:
        self.end = time.perf_counter()
        self.cpu_end = time.process_time()
        self.rss_end = current_rss()
        self.peak = peak_rss()
        self.process_peak = process_peak_rss()


def _energy_parts(energy: Any) -> tuple[float | None, str, float | None, float | None]:
    """(total, method, prefill, decode) from a meter's `(joules, method)` tuple or an `EnergyReading`."""
    if energy is None:
        return None, "unavailable", None, None
    if isinstance(energy, tuple):
        return energy[0], energy[1], None, None
    return energy.total_j, energy.method, energy.prefill_j, energy.decode_j


def compute_metrics(c: RawCounters, *, backend: str, device: str, threads: int | None, load_s: float,
                    energy: Any = None) -> Metrics:
    """`energy`: None, a `(joules, method)` tuple, or an EnergyReading (total, prefill, decode, method)."""
    end = c.end if c.end is not None else time.perf_counter()
    times = c.token_times
    ttft = times[0] - c.start if times else None
    prefill_tps = c.prompt_tokens / ttft if ttft and c.prompt_tokens else None
    gaps_ms = [(b - a) * 1000.0 for a, b in zip(times, times[1:])]
    decode_tps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None
    energy_j, method, prefill_j, decode_j = _energy_parts(energy)
    n_decode = len(times) - 1
    return Metrics(
        backend=backend, device=device, threads=threads, load_s=load_s, ttft_s=ttft, prompt_tokens=c.prompt_tokens,
        prefill_tps=prefill_tps, generated_tokens=len(times), decode_tps=decode_tps,
        token_latency_ms=LatencyStats.from_values(gaps_ms),
        peak_rss_bytes=(c.process_peak or c.peak) if c.peak_reset or c.peak else None,
        call_peak_rss_bytes=c.peak if c.peak_reset else None,
        rss_delta_bytes=(c.rss_end - c.rss_start) if c.rss_end is not None and c.rss_start is not None else None,
        cpu_s=(c.cpu_end if c.cpu_end is not None else time.process_time()) - c.cpu_start, wall_s=end - c.start,
        energy_j=energy_j, energy_per_token_j=(energy_j / len(times)) if energy_j is not None and times else None,
        energy_method=method, detok_s=c.detok_s, energy_prefill_j=prefill_j, energy_decode_j=decode_j,
        energy_per_decode_token_j=(decode_j / n_decode) if decode_j is not None and n_decode > 0 else None,
        runtime_s=sum(c.step_runtime_s) if c.step_runtime_s else None,
    )
