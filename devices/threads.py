"""Thread auto-tuning: a short sweep over thread counts, stopped once tokens/s falls, cached per machine+model."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .bandwidth import cache_dir, machine_key
from .types import Profile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    tokens_per_s: float
    measured: tuple[tuple[int, float], ...]  # (threads, tokens/s) in sweep order
    cached: bool
    reason: str


def profile_threads(profile: Profile) -> tuple[int, str]:
    """(threads, reason) a target profile runs a model with: its big cores only on a big.LITTLE SoC (a decode
    step is split evenly across threads and waits for the slowest, so a LITTLE core slows every token), never
    more than the profile's own thread cap."""
    cap = profile.threads
    if profile.cores_little and profile.cores_big:
        threads = min(cap, profile.cores_big)
        return threads, (f"the {threads} big cores of {profile.name} ({profile.cores_big} big + "
                         f"{profile.cores_little} LITTLE: LITTLE cores left out, a decode step waits for its "
                         "slowest thread)" if threads == profile.cores_big else
                         f"{profile.name}'s thread cap, on {threads} of its {profile.cores_big} big cores "
                         f"({profile.cores_little} LITTLE cores left out)")
    cores = profile.cores_big + profile.cores_little
    return cap, (f"all {cap} cores of {profile.name}" if cap == cores else
                 f"{cap} of {profile.name}'s {cores} cores (its thread cap)")


def default_candidates(max_threads: int) -> tuple[int, ...]:
    """1, 2, 3, 4, 6, 8, 12, 16, ... up to max_threads (always included)."""
    out, n = [], 1
    while n < max_threads:
        out.append(n)
        n = n + 1 if n < 4 else n + max(2, n // 2)
    out.append(max_threads)
    return tuple(sorted(set(out)))


def pick_threads(measure: Callable[[int], float], candidates: Sequence[int], *, key: str | None = None,
                 cache_file: Path | None = None, refresh: bool = False, patience: int = 1,
                 tolerance: float = 0.02) -> ThreadChoice:
    """Sweep `candidates` (ascending) with `measure(threads) -> tokens/s`; keep the fastest.

    The sweep stops once `patience` consecutive candidates fall more than `tolerance` below the best so far
    (small models stop scaling early). With `key` the choice is cached in threads.json, per machine.
    """
    ordered = sorted({int(c) for c in candidates if int(c) > 0})
    if not ordered:
        raise ValueError("pick_threads needs at least one positive thread count")
    path = cache_file or cache_dir() / "threads.json"
    full_key = f"{machine_key()}:{key}:{','.join(map(str, ordered))}" if key else None
    if full_key and not refresh:
        hit = _read(path).get(full_key)
        if isinstance(hit, dict) and hit.get("threads") in ordered:
            return ThreadChoice(int(hit["threads"]), float(hit["tokens_per_s"]),
                                tuple((int(t), float(v)) for t, v in hit.get("measured", [])), True,
                                f"cached choice for this machine and model: {hit['threads']} threads")
    measured: list[tuple[int, float]] = []
    best_t, best_v, worse = ordered[0], -1.0, 0
    for threads in ordered:
        value = float(measure(threads))
        measured.append((threads, value))
        log.info("threads=%d: %.1f tokens/s", threads, value)
        if value > best_v:
            best_t, best_v = threads, value
        if value < best_v * (1 - tolerance):
            worse += 1
            if worse >= patience:
                break
        else:
            worse = 0
    stopped = len(measured) < len(ordered)
    reason = (f"{best_t} threads gave {best_v:.1f} tokens/s, the best of {len(measured)} measured"
              + (f"; stopped at {measured[-1][0]} threads because tokens/s fell" if stopped else ""))
    choice = ThreadChoice(best_t, best_v, tuple(measured), False, reason)
    if full_key:
        data = _read(path)
        data[full_key] = {"threads": best_t, "tokens_per_s": best_v, "measured": measured}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=1, sort_keys=True))
        except OSError as exc:
            log.warning("cannot write thread cache %s: %s", path, exc)
    return choice


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
