"""Memory-bandwidth probe: a short multi-threaded numpy copy (~0.5 s), cached per machine.

Decode speed of an LLM is bound by how fast the weights stream from memory, so the planner needs this
number. The cache lives in $EDGELLM_CACHE_DIR or ~/.cache/edgellm/bandwidth.json, keyed by machine.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BandwidthResult:
    copy_gbs: float  # (read + write) bytes / s, 1e9 units
    read_gbs: float  # read-only stream (what decode does: weights stream in), 1e9 bytes / s
    threads: int
    buffer_bytes: int
    seconds: float
    cached: bool = False


def cache_dir() -> Path:
    root = os.environ.get("EDGELLM_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "edgellm"


def machine_key(extra: str = "") -> str:
    """A stable id for this host: machine-id (or hostname), CPU model and count, RAM size."""
    ident = ""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            ident = Path(path).read_text().strip()
            break
        except OSError:
            continue
    parts = [ident or platform.node(), platform.machine(), platform.processor(), str(os.cpu_count())]
    try:
        parts.append(str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")))
    except (ValueError, OSError, AttributeError):
        pass
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        parts.extend(line for line in cpuinfo.read_text().splitlines()[:8] if line.startswith("model name"))
    return hashlib.sha256("|".join(parts + [extra]).encode()).hexdigest()[:16]


def _load_cache(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _store_cache(path: Path, key: str, value: dict) -> None:
    data = _load_cache(path)
    data[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:  # a read-only home must not break planning
        log.warning("cannot write bandwidth cache %s: %s", path, exc)


def _best_pass(pool: ThreadPoolExecutor, work: Callable[[slice], object], chunks: list[slice],
               budget_s: float) -> float:
    list(pool.map(work, chunks))  # the first pass faults pages in and warms up; not timed
    best, start = float("inf"), time.perf_counter()
    while True:
        t0 = time.perf_counter()
        list(pool.map(work, chunks))
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            return best


PROBE_BYTES = 256 << 20    # source + destination together: well past any last-level cache
PROBE_MEMORY_SHARE = 16    # never more than 1/16 of the memory available (the first load on a small board)


def probe_bytes() -> int:
    """What the probe may touch: PROBE_BYTES, or 1/16 of the available memory on a small device (at least
    32 MiB). The probe runs inside the first edgellm.load on a machine, so its buffers add to that load's peak."""
    from .cpu import detect_cpu

    try:
        available = detect_cpu().usable_memory_bytes
    except (OSError, ValueError):
        return PROBE_BYTES
    return max(32 << 20, min(PROBE_BYTES, available // PROBE_MEMORY_SHARE))


def run_probe(threads: int, buffer_bytes: int | None = None, budget_s: float = 0.5) -> BandwidthResult:
    """Copy and read a buffer larger than the caches with `threads` workers; best pass of each.

    buffer_bytes is the total the probe touches (source and destination halves); default probe_bytes().
    numpy releases the GIL in copies and reductions over large arrays, so the workers run in parallel.
    """
    import numpy as np

    threads = max(1, threads)
    n = (buffer_bytes or probe_bytes()) // 16 // threads * threads
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)
    chunks = [slice(i * n // threads, (i + 1) * n // threads) for i in range(threads)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        copy_s = _best_pass(pool, lambda part: np.copyto(dst[part], src[part]), chunks, budget_s / 2)
        read_s = _best_pass(pool, lambda part: src[part].max(), chunks, budget_s / 2)
    nbytes = n * 8
    return BandwidthResult(round(2 * nbytes / copy_s / 1e9, 2), round(nbytes / read_s / 1e9, 2), threads,
                           nbytes, round(time.perf_counter() - start, 3))


def measure_bandwidth(threads: int | None = None, refresh: bool = False,
                      cache_file: Path | None = None) -> BandwidthResult:
    """Host memory bandwidth, from the per-machine cache unless `refresh`."""
    threads = threads or os.cpu_count() or 1
    path = cache_file or cache_dir() / "bandwidth.json"
    key = f"{machine_key()}:{threads}"
    if not refresh:
        hit = _load_cache(path).get(key)
        if hit:
            try:
                return BandwidthResult(**{**hit, "cached": True})
            except TypeError:
                log.info("ignoring a malformed bandwidth cache entry in %s", path)
    result = run_probe(threads)
    log.info("memory bandwidth probe: %.1f GB/s copy, %.1f GB/s read (%d threads)",
             result.copy_gbs, result.read_gbs, threads)
    _store_cache(path, key, {k: v for k, v in asdict(result).items() if k != "cached"})
    return result
