"""The bench report: one self-contained HTML file with inline SVG plots (no plotting dependency).

Plots: decode tokens/s against threads (one line per artifact), the per-token latency histogram of each
artifact, and size against quality (KLD vs the reference) with decode speed written on every point.
"""
from __future__ import annotations

import html
import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from .benchmark import BenchResult, BenchRow, to_markdown

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
W, H, L, R, T, B = 520, 300, 60, 20, 30, 45  # canvas and margins


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 2) if start + i * step <= hi + 1e-9]


class _Axes:
    def __init__(self, title: str, xlabel: str, ylabel: str, xs: Sequence[float], ys: Sequence[float],
                 y0: bool = True) -> None:
        self.x0, self.x1 = min(xs), max(xs)
        if self.x0 == self.x1:
            self.x0, self.x1 = self.x0 - 1, self.x1 + 1
        self.y0, self.y1 = (0.0 if y0 else min(ys)), max(ys) * 1.1 or 1.0
        self.parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
                      f'font-size="11"><text x="{W / 2}" y="16" text-anchor="middle" font-size="13">'
                      f'{html.escape(title)}</text>',
                      f'<text x="{W / 2}" y="{H - 6}" text-anchor="middle">{html.escape(xlabel)}</text>',
                      f'<text x="14" y="{H / 2}" text-anchor="middle" transform="rotate(-90 14 {H / 2})">'
                      f'{html.escape(ylabel)}</text>',
                      f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#999"/>']
        for v in _ticks(self.y0, self.y1):
            if self.y0 <= v <= self.y1:
                y = self.py(v)
                self.parts.append(f'<line x1="{L}" x2="{W - R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                                  f'<text x="{L - 4}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')

    def xticks(self, values: Sequence[float], fmt: str = "g") -> None:
        for v in values:
            self.parts.append(f'<text x="{self.px(v):.1f}" y="{H - B + 14}" text-anchor="middle">{v:{fmt}}</text>')

    def px(self, x: float) -> float:
        return L + (x - self.x0) / (self.x1 - self.x0) * (W - L - R)

    def py(self, y: float) -> float:
        return H - B - (y - self.y0) / (self.y1 - self.y0) * (H - T - B)

    def legend(self, names: Sequence[str]) -> None:
        for i, n in enumerate(names):
            self.parts.append(f'<rect x="{L + 8}" y="{T + 6 + 14 * i}" width="10" height="10" '
                              f'fill="{_COLORS[i % len(_COLORS)]}"/><text x="{L + 22}" y="{T + 15 + 14 * i}">'
                              f'{html.escape(n)}</text>')

    def svg(self) -> str:
        return "".join(self.parts) + "</svg>"


def _series_name(r: BenchRow) -> str:
    return r.name + (f" ({r.label})" if r.label else "")


def plot_threads(rows: Sequence[BenchRow]) -> str:
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        if r.decode_tps is not None:
            series[_series_name(r)].append((r.threads, r.decode_tps))
    if not series:
        return ""
    pts = [p for s in series.values() for p in s]
    ax = _Axes("decode tokens/s vs threads", "threads", "tokens/s", [p[0] for p in pts], [p[1] for p in pts])
    ax.xticks(sorted({p[0] for p in pts}), "d")
    for i, s in enumerate(series.values()):
        by_t: dict[int, list[float]] = defaultdict(list)
        for t, v in s:
            by_t[t].append(v)
        line = sorted((t, float(np.mean(v))) for t, v in by_t.items())
        c = _COLORS[i % len(_COLORS)]
        ax.parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (
            c, " ".join(f"{ax.px(t):.1f},{ax.py(v):.1f}" for t, v in line)))
        ax.parts.extend(f'<circle cx="{ax.px(t):.1f}" cy="{ax.py(v):.1f}" r="3" fill="{c}"/>' for t, v in line)
    ax.legend(list(series))
    return ax.svg()


def plot_histogram(name: str, latencies_ms: Sequence[float], bins: int = 30) -> str:
    if not latencies_ms:
        return ""
    a = np.asarray(latencies_ms)
    hi = float(np.percentile(a, 99.5))
    counts, edges = np.histogram(np.minimum(a, hi), bins=bins)
    ax = _Axes(f"per-token latency: {name}", "ms (clipped at p99.5)", "steps", [edges[0], edges[-1]],
               [float(counts.max())])
    ax.xticks(_ticks(float(edges[0]), float(edges[-1]))[:-1])
    for c, a0, a1 in zip(counts, edges, edges[1:]):
        x0, x1 = ax.px(a0), ax.px(a1)
        ax.parts.append(f'<rect x="{x0:.1f}" y="{ax.py(c):.1f}" width="{max(0.5, x1 - x0 - 1):.1f}" '
                        f'height="{ax.py(0) - ax.py(c):.1f}" fill="{_COLORS[0]}"/>')
    p50 = float(np.median(a))
    ax.parts.append(f'<line x1="{ax.px(p50):.1f}" x2="{ax.px(p50):.1f}" y1="{T}" y2="{H - B}" stroke="#d62728" '
                    f'stroke-dasharray="4"/><text x="{ax.px(p50) + 4:.1f}" y="{T + 12}" fill="#d62728">'
                    f'p50 {p50:.1f} ms</text>')
    return ax.svg()


def plot_tradeoff(rows: Sequence[BenchRow]) -> str:
    """Size (MiB) against quality (KLD vs reference, or PPL), decode tok/s written at each point."""
    best: dict[str, BenchRow] = {}
    for r in rows:
        if r.decode_tps is not None and (r.name not in best or r.decode_tps > (best[r.name].decode_tps or 0)):
            best[r.name] = r
    pts = list(best.values())
    if not pts:
        return ""
    metric = "kld" if any(r.kld is not None for r in pts) else None
    ys = [(r.kld or 0.0) if metric else (r.decode_tps or 0.0) for r in pts]
    xs = [r.size_bytes / 2**20 for r in pts]
    ylabel = "mean KLD vs reference (nats)" if metric else "decode tokens/s"
    ax = _Axes("size vs quality vs speed", "size (MiB)", ylabel, [0.0, max(xs) * 1.1], ys + [0.0])
    ax.xticks(_ticks(0.0, max(xs) * 1.1)[:-1])
    for i, (r, x, y) in enumerate(zip(pts, xs, ys)):
        c = _COLORS[i % len(_COLORS)]
        label = f"{r.quant}: {r.decode_tps:.0f} tok/s" if metric else r.quant
        ax.parts.append(f'<circle cx="{ax.px(x):.1f}" cy="{ax.py(y):.1f}" r="5" fill="{c}"/>'
                        f'<text x="{ax.px(x) + 7:.1f}" y="{ax.py(y) - 6:.1f}">{html.escape(label)}</text>')
    return ax.svg()


def render_html(result: BenchResult, title: str = "edgellm bench") -> str:
    rows = result.rows
    hist_rows: dict[str, BenchRow] = {}
    for r in rows:  # per series, the cell with the most decode steps
        key = _series_name(r)
        if key not in hist_rows or len(r.latencies_ms) > len(hist_rows[key].latencies_ms):
            hist_rows[key] = r
    md = html.escape(to_markdown(result))
    plots = [plot_threads(rows), plot_tradeoff(rows)] + [plot_histogram(k, r.latencies_ms)
                                                         for k, r in hist_rows.items()]
    figures = "\n".join(f"<figure>{p}</figure>" for p in plots if p)
    share_rows = "".join(
        f"<tr><td>{html.escape(_series_name(r))}</td><td>{r.threads}</td><td>{r.depth}</td>"
        + "".join(f"<td>{r.time_share.get(k, 0) * 100:.1f} %</td>" for k in ("prefill", "decode", "detokenization",
                                                                             "other"))
        + f"<td>{'n/a' if r.latency_slope_ms_per_1k is None else format(r.latency_slope_ms_per_1k, '.2f')}</td></tr>"
        for r in rows if r.time_share)
    shares = ("<h2>Where the time went (last repetition of each cell)</h2><table border='1' cellpadding='3'>"
              "<tr><th>artifact</th><th>threads</th><th>depth</th><th>prefill</th><th>decode (incl. sampling)</th>"
              "<th>detokenization</th><th>other</th><th>latency slope ms / 1k tokens</th></tr>"
              f"{share_rows}</table>") if share_rows else ""
    cmd = f"<p><code>{html.escape(result.command)}</code></p>" if result.command else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}figure{display:inline-block;"
            "margin:4px}pre{background:#f6f6f6;padding:8px;overflow-x:auto}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{cmd}<p>{html.escape(result.created)}; device {html.escape(result.device)}"
            f"</p>{figures}<h2>Table</h2><pre>{md}</pre>{shares}</body></html>")


def write_report(result: BenchResult, path: str | Path, title: str = "edgellm bench") -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(result, title), encoding="utf-8")
    return out
