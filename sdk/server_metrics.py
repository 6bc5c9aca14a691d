"""The server's counters in Prometheus' text exposition format (no client library: a few dozen lines)."""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def render(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        lines, running = [], 0
        for bound, count in zip(self.buckets, self.counts):
            running += count
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        suffix = f"{{{labels}}}" if labels else ""
        lines += [f"{name}_sum{suffix} {self.total:.6f}", f"{name}_count{suffix} {self.n}"]
        return lines


class ServerMetrics:
    """Thread-safe: observed from generation threads, rendered from the event loop."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.energy_j = 0.0
        self.cancelled = 0
        self.queue_depth = 0
        self.busy = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.token_latency = Histogram(TOKEN_BUCKETS)
        self.request_seconds = Histogram(REQUEST_BUCKETS)

    def count_request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1

    def observe_generation(self, metrics: object, seconds: float, cancelled: bool) -> None:
        with self._lock:
            self.prompt_tokens += int(getattr(metrics, "prompt_tokens", 0) or 0)
            self.completion_tokens += int(getattr(metrics, "generated_tokens", 0) or 0)
            self.energy_j += float(getattr(metrics, "energy_j", 0.0) or 0.0)
            self.cancelled += int(cancelled)
            ttft = getattr(metrics, "ttft_s", None)
            if ttft is not None:
                self.ttft.observe(ttft)
            for ms in getattr(metrics, "token_latency_ms", None) or ():
                self.token_latency.observe(ms / 1000.0)
            self.request_seconds.observe(seconds)

    def set_load(self, queue_depth: int, busy: int) -> None:
        with self._lock:
            self.queue_depth, self.busy = queue_depth, busy

    def render(self) -> str:
        m = f'model="{self.model}"'
        with self._lock:
            lines = ["# HELP edgellm_requests_total Requests answered, by endpoint and HTTP status.",
                     "# TYPE edgellm_requests_total counter"]
            lines += [f'edgellm_requests_total{{{m},endpoint="{e}",status="{s}"}} {n}'
                      for (e, s), n in sorted(self.requests.items())]
            for name, kind, value, text in (
                    ("edgellm_queue_depth", "gauge", self.queue_depth, "Requests waiting for a model slot."),
                    ("edgellm_busy_slots", "gauge", self.busy, "Model slots generating now."),
                    ("edgellm_prompt_tokens_total", "counter", self.prompt_tokens, "Prompt tokens prefilled."),
                    ("edgellm_completion_tokens_total", "counter", self.completion_tokens, "Tokens generated."),
                    ("edgellm_cancelled_total", "counter", self.cancelled, "Generations stopped by a disconnect."),
                    ("edgellm_energy_joules_total", "counter", round(self.energy_j, 6),
                     "Energy of all generations (measured or estimated, see each response's timings).")):
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name}{{{m}}} {value}"]
            for name, hist, text in (("edgellm_ttft_seconds", self.ttft, "Time to first token."),
                                     ("edgellm_token_latency_seconds", self.token_latency, "Per-token decode latency."),
                                     ("edgellm_request_seconds", self.request_seconds, "Generation wall time.")):
                lines += [f"# HELP {name} {text}", f"# TYPE {name} histogram", *hist.render(name, m)]
        return "\n".join(lines) + "\n"
