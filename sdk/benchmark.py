"""`edgellm bench`: a llama-bench-like matrix over artifacts x threads x prompt length x generated
length x context depth, each cell repeated, reported as mean ± sd, with per-row memory-bandwidth
efficiency and energy per token; tables as text, JSON, CSV and Markdown (the HTML report is report.py).

Context depth d: the prompt is d tokens of filler text followed by the measured prompt, so decode runs at
position d + p. Prefill speed is over all d + p tokens (llama-bench's `-d` excludes the depth; we cannot
split one llama.cpp prefill call). Prompts are token ids cut from the default evaluation text, so every
artifact of one model gets the same ids.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import EdgeLLMError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    artifacts: tuple[str, ...]
    threads: tuple[int, ...] = (0,)            # 0: the runtime's default
    prompt_tokens: tuple[int, ...] = (64,)
    gen_tokens: tuple[int, ...] = (32,)
    depths: tuple[int, ...] = (0,)
    repetitions: int = 3
    warmup: bool = True
    prompt_text: str | None = None             # a fixed prompt (e.g. an editing task) instead of cut ids
    load_options: dict[str, Any] = field(default_factory=dict)  # e.g. speculative="prompt-lookup"
    quality_reference: str | None = None       # evaluate KLD/PPL of each artifact against this one
    quality_tokens: int = 256
    label: str = ""                            # tag every row (e.g. "prompt-lookup")


@dataclass
class BenchRow:
    artifact: str
    name: str
    format: str
    quant: str
    size_bytes: int
    threads: int
    prompt_tokens: int
    gen_tokens: int
    depth: int
    repetitions: int
    label: str = ""
    prefill_tps: float | None = None
    prefill_tps_sd: float | None = None
    decode_tps: float | None = None
    decode_tps_sd: float | None = None
    ttft_ms: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    generated: float = 0.0                     # mean tokens actually generated (EOS may stop early)
    peak_rss_bytes: int | None = None
    energy_per_token_j: float | None = None
    energy_per_decode_token_j: float | None = None
    energy_method: str = "unavailable"
    bytes_per_token: int | None = None
    bandwidth_gbs: float | None = None
    bandwidth_efficiency: float | None = None  # decode tok/s x bytes per token / device read bandwidth
    time_share: dict[str, float] = field(default_factory=dict)  # prefill/decode/detok/other, last repetition
    latency_slope_ms_per_1k: float | None = None               # step latency growth with context (analysis)
    kld: float | None = None
    ppl: float | None = None
    top1: float | None = None
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    text: str = field(default="", repr=False)

    def to_dict(self, with_latencies: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_latencies:
            d.pop("latencies_ms")
        d.pop("text")
        return d


@dataclass
class BenchResult:
    rows: list[BenchRow]
    device: str
    bandwidth_gbs: float | None
    bandwidth_source: str
    command: str = ""
    load_average: tuple[float, ...] = field(default_factory=lambda: tuple(round(x, 2) for x in os.getloadavg()))
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))


def device_bandwidth(threads: int | None = None) -> tuple[float | None, str]:
    """Host read bandwidth in GB/s: the devices room's cached probe, else a short numpy pass here."""
    try:
        from .devices.bandwidth import measure_bandwidth

        r = measure_bandwidth(threads)
        return r.read_gbs, f"devices.bandwidth probe ({r.threads} threads{', cached' if r.cached else ''})"
    except ImportError:
        pass
    import numpy as np

    a = np.ones(32 << 20, dtype=np.float64)  # 256 MiB, beyond any cache
    a.sum()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t0)
    return a.nbytes / best / 1e9, "numpy read pass in bench.py (single thread)"


def _describe(artifact: str) -> tuple[str, str, str, int]:
    """(display name, format, quant, size in bytes) of an artifact."""
    from .loading import resolve_artifact

    art = resolve_artifact(artifact)
    quant = "?"
    folder = art.path.parent if art.path.is_file() else art.path
    try:
        from .converters.manifest import read_manifest

        quant = read_manifest(folder).quant
    except EdgeLLMError:
        stem = art.path.stem.upper()
        quant = stem.rsplit("-", 1)[-1] if "-" in stem else stem
    size = art.path.stat().st_size if art.path.is_file() else sum(
        p.stat().st_size for p in art.path.rglob("*") if p.is_file())
    if art.format == "onnx" and art.path.is_file():
        size = sum(p.stat().st_size for p in art.path.parent.iterdir() if p.is_file() and p.suffix != ".json")
    name = f"{art.format}:{quant}"
    return name, art.format, quant, size


def _mean_sd(xs: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [x for x in xs if x is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _filler_ids(model: Any, n: int) -> list[int]:
    from .evaluation import default_text

    ids = model.tokenize(default_text(min_chars=max(4000, n * 6)), add_special=False)
    while len(ids) < n:
        ids = ids + ids
    return ids[:n]


def run_cell(model: Any, *, prompt_tokens: int, gen_tokens: int, depth: int, repetitions: int,
             prompt_text: str | None = None, warmup: bool = True) -> list[Any]:
    """Generate `repetitions` times with greedy decoding; returns the GenerationResults.

    llama-cpp-python reuses the KV cache of a shared prompt prefix between calls, which would make every
    repetition after the first skip its prefill; so each repetition's cut prompt starts at another offset
    of the filler text. A fixed `prompt_text` cannot vary: its later repetitions report a cached prefill."""
    info = model.runtime.tokenizer_info
    bos = [info.bos_id] if info.add_bos and info.bos_id is not None else []
    n = depth + prompt_tokens
    shift = 17  # tokens between the starts of two repetitions' prompts
    filler = _filler_ids(model, n + shift * (repetitions + 1)) if prompt_text is None else []
    if warmup:
        model.generate(bos + (filler or model.tokenize("Hello", add_special=False))[-8:], max_tokens=2,
                       temperature=0.0)
    results = []
    for rep in range(repetitions):
        if prompt_text is not None:
            ids = model.chat_prompt([{"role": "user", "content": prompt_text}])
        else:
            ids = bos + filler[rep * shift: rep * shift + n]
        results.append(model.generate(ids, max_tokens=gen_tokens, temperature=0.0))
    return results


def _row(cfg: BenchConfig, artifact: str, threads: int, p: int, g: int, d: int, results: list[Any],
         bandwidth: float | None) -> BenchRow:
    name, fmt, quant, size = _describe(artifact)
    ms = [r.metrics for r in results]
    pre, pre_sd = _mean_sd([m.prefill_tps for m in ms])
    dec, dec_sd = _mean_sd([m.decode_tps for m in ms])
    ttft, _ = _mean_sd([m.ttft_s * 1000 if m.ttft_s is not None else None for m in ms])
    lat = [x for m in ms for x in m.token_latency_ms.values]
    p50 = statistics.median(lat) if lat else None
    p99 = sorted(lat)[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None
    ept, _ = _mean_sd([m.energy_per_token_j for m in ms])
    epdt, _ = _mean_sd([m.energy_per_decode_token_j for m in ms])
    from .analysis import analyze

    steps = analyze(ms[-1])
    bpt = size  # decode streams every weight once per token (tied head included); KV reads are not counted
    eff = dec * bpt / (bandwidth * 1e9) if dec and bandwidth else None
    return BenchRow(
        artifact=artifact, name=name, format=fmt, quant=quant, size_bytes=size, threads=threads,
        prompt_tokens=ms[0].prompt_tokens if cfg.prompt_text else p, gen_tokens=g, depth=d,
        repetitions=len(results), label=cfg.label, prefill_tps=pre, prefill_tps_sd=pre_sd, decode_tps=dec,
        decode_tps_sd=dec_sd, ttft_ms=ttft, latency_p50_ms=p50, latency_p99_ms=p99,
        generated=statistics.fmean(m.generated_tokens for m in ms), peak_rss_bytes=max(
            (m.peak_rss_bytes or 0) for m in ms) or None, energy_per_token_j=ept, energy_per_decode_token_j=epdt,
        energy_method=ms[0].energy_method, bytes_per_token=bpt, bandwidth_gbs=bandwidth,
        bandwidth_efficiency=eff, latencies_ms=lat, text=results[0].text, time_share=steps.time_share,
        latency_slope_ms_per_1k=steps.slope_ms_per_1k_tokens)


def run_bench(cfg: BenchConfig, *, progress: bool = True, bandwidth: float | None = None,
              bandwidth_source: str = "", on_row: Callable[[BenchRow], None] | None = None) -> BenchResult:
    """Run the whole matrix. Each artifact is loaded once per thread count."""
    from .loading import load

    if not cfg.artifacts:
        raise EdgeLLMError("no artifacts to benchmark", "pass at least one artifact folder or .gguf/.onnx file")
    if cfg.repetitions < 1:
        raise EdgeLLMError(f"repetitions={cfg.repetitions} must be >= 1")
    threads_list = [t or _default_threads() for t in cfg.threads]
    if bandwidth is None:
        bandwidth, bandwidth_source = device_bandwidth(max(threads_list))
    cells = [(p, g, d) for p in cfg.prompt_tokens for g in cfg.gen_tokens for d in cfg.depths]
    total = len(cfg.artifacts) * len(threads_list) * len(cells)
    from tqdm import tqdm

    bar = tqdm(total=total, desc="bench", unit="cell", disable=not progress, leave=False)
    rows: list[BenchRow] = []
    device = "cpu"
    started = BenchResult([], device, None, "")  # load average and time when the run starts
    try:
        for artifact in cfg.artifacts:
            for threads in threads_list:
                n_ctx = max(p + d for p, _, d in cells) + max(cfg.gen_tokens) + 16
                if cfg.prompt_text is not None:
                    n_ctx = max(n_ctx, 2048)
                options = {"cache_prompt": False, **cfg.load_options}  # every repetition prefills afresh
                with load(artifact, threads=threads, n_ctx=n_ctx, **options) as model:
                    device = model.device
                    for p, g, d in cells:
                        bar.set_postfix_str(f"{Path(artifact).name[:24]} t={threads} p={p} g={g} d={d}")
                        results = run_cell(model, prompt_tokens=p, gen_tokens=g, depth=d,
                                           repetitions=cfg.repetitions, prompt_text=cfg.prompt_text,
                                           warmup=cfg.warmup)
                        row = _row(cfg, artifact, threads, p, g, d, results, bandwidth)
                        rows.append(row)
                        if on_row is not None:
                            on_row(row)
                        bar.update(1)
            if cfg.quality_reference is not None:
                _add_quality(rows, artifact, cfg)
    finally:
        bar.close()
    return BenchResult(rows, device, bandwidth, bandwidth_source, load_average=started.load_average,
                       created=started.created)


def int_list(name: str, value: int | str | Sequence[int]) -> tuple[int, ...]:
    """One or more whole numbers, as the CLI writes them ("1,2") or as Python does (2, [1, 2]); OptionError else."""
    from .errors import OptionError

    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str):
            items = tuple(int(x) for x in value.split(",") if x.strip())
        elif isinstance(value, int):
            items = (value,)
        else:
            items = tuple(int(x) for x in value if not isinstance(x, bool) and int(x) == x)
            if len(items) != len(value):
                raise ValueError
    except (TypeError, ValueError):
        raise OptionError(f"{name}={value!r} must be whole numbers: a list such as [1, 2] or a string such as "
                          "'1,2'") from None
    if not items or any(x < 0 for x in items):
        raise OptionError(f"{name}={value!r} must name at least one number, none negative")
    return items


def bench(artifacts: str | Sequence[str] | BenchConfig, threads: int | str | Sequence[int] = 0,
          prompt_tokens: int | str | Sequence[int] = 64, gen_tokens: int | str | Sequence[int] = 32,
          depths: int | str | Sequence[int] = 0, repetitions: int = 3, reference: str | None = None,
          speculative: str | None = None, num_pred_tokens: int | None = None, prompt_file: str | None = None,
          label: str = "", *, progress: bool = False) -> BenchResult:
    """`edgellm.bench`: the CLI's parameters, same names. The list parameters take what the CLI takes ("1,2")
    or Python lists ([1, 2]); 0 threads is the runtime's default. reference: an artifact to measure each
    one's KLD/PPL against; speculative="prompt-lookup" (llama.cpp) with num_pred_tokens; prompt_file: a text
    used as a chat prompt instead of cut token ids. A `BenchConfig` as the first argument runs as given."""
    if isinstance(artifacts, BenchConfig):
        return run_bench(artifacts, progress=progress)
    load_options: dict[str, Any] = {}
    if speculative:
        load_options["speculative"] = speculative
        if num_pred_tokens:
            load_options["num_pred_tokens"] = num_pred_tokens
    cfg = BenchConfig(artifacts=(artifacts,) if isinstance(artifacts, str) else tuple(map(str, artifacts)),
                      threads=int_list("threads", threads), prompt_tokens=int_list("prompt_tokens", prompt_tokens),
                      gen_tokens=int_list("gen_tokens", gen_tokens), depths=int_list("depths", depths),
                      repetitions=repetitions,
                      prompt_text=Path(prompt_file).read_text(encoding="utf-8") if prompt_file else None,
                      load_options=load_options, quality_reference=reference, label=label or (speculative or ""))
    return run_bench(cfg, progress=progress)


def _default_threads() -> int:
    from .runtimes.llama_cpp import default_threads

    return default_threads() if os.cpu_count() else 1


def _add_quality(rows: list[BenchRow], artifact: str, cfg: BenchConfig) -> None:
    from .evaluation import evaluate

    assert cfg.quality_reference is not None
    r = evaluate(artifact, cfg.quality_reference, max_tokens=cfg.quality_tokens, n_ctx=cfg.quality_tokens)
    for row in rows:
        if row.artifact == artifact:
            row.kld, row.ppl, row.top1 = r.kld_mean, r.ppl, r.top1


# -- output ---------------------------------------------------------------------------------------
_COLUMNS = ("name", "label", "size", "threads", "p", "g", "d", "prefill tok/s", "decode tok/s", "p50 ms",
            "p99 ms", "BW eff", "J/tok", "KLD")


def _pm(mean: float | None, sd: float | None, fmt: str = ".1f") -> str:
    if mean is None:
        return "n/a"
    return f"{mean:{fmt}} ± {sd or 0:{fmt}}"


def _cells(r: BenchRow) -> list[str]:
    def opt(x: float | None, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    return [r.name, r.label or "-", f"{r.size_bytes / 2**20:.1f} MiB", str(r.threads), str(r.prompt_tokens),
            str(r.gen_tokens), str(r.depth), _pm(r.prefill_tps, r.prefill_tps_sd), _pm(r.decode_tps, r.decode_tps_sd),
            opt(r.latency_p50_ms, ".1f"), opt(r.latency_p99_ms, ".1f"),
            "n/a" if r.bandwidth_efficiency is None else f"{r.bandwidth_efficiency * 100:.0f} %",
            opt(r.energy_per_token_j, ".3f"), opt(r.kld, ".4f")]


def to_markdown(result: BenchResult) -> str:
    lines = [f"Command: `{result.command}`", ""] if result.command else []
    lines += ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in result.rows]
    methods = sorted({r.energy_method for r in result.rows})
    bw = "n/a" if result.bandwidth_gbs is None else f"{result.bandwidth_gbs:.1f} GB/s"
    lines.append("")
    lines.append(f"Load average when the run started: {' / '.join(map(str, result.load_average))} (1/5/15 min); "
                 f"other processes sharing the cores slow multi-threaded rows most.")
    lines.append(f"Device {result.device}; read bandwidth {bw} ({result.bandwidth_source}); energy: "
                 f"{', '.join(methods)}; mean ± sd over {result.rows[0].repetitions if result.rows else 0} "
                 f"repetitions; p = prompt tokens, g = generated tokens, d = context depth.")
    return "\n".join(lines)


def to_text(result: BenchResult) -> str:
    rows = [list(_COLUMNS)] + [_cells(r) for r in result.rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows)


def to_json(result: BenchResult, with_latencies: bool = False) -> str:
    return json.dumps({"device": result.device, "bandwidth_gbs": result.bandwidth_gbs,
                       "bandwidth_source": result.bandwidth_source, "load_average": result.load_average, "command": result.command,
                       "created": result.created, "rows": [r.to_dict(with_latencies) for r in result.rows]},
                      indent=2)


def to_csv(result: BenchResult) -> str:
    buf = io.StringIO()
    dicts = [r.to_dict() for r in result.rows]
    if dicts:
        w = csv.DictWriter(buf, fieldnames=list(dicts[0]))
        w.writeheader()
        w.writerows(dicts)
    return buf.getvalue()
