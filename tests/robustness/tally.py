"""Outcome accounting for the robustness suite: every input is classified as accepted, typed (an EdgeLLMError),
untyped (any other exception), crash (a child died on a signal), hang (over the time bound) or escape (a file
read or written outside where it belongs). `pytest_terminal_summary` prints the table at the end of the run."""
from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from edgellm.errors import EdgeLLMError

HANG_S = 2.0           # one parse/render/validate of a tiny input taking longer than this is a hang


@dataclass
class Row:
    inputs: int = 0
    accepted: int = 0
    typed: int = 0
    untyped: int = 0
    crashes: int = 0
    hangs: int = 0
    escapes: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(what[:300])

    @property
    def failures(self) -> int:
        return self.untyped + self.crashes + self.hangs + self.escapes


TALLY: dict[str, Row] = {}


class _Hang(BaseException):
    """Raised by the watchdog alarm inside a runaway input (a BaseException so `except Exception` cannot eat it)."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Hang()


def row(name: str) -> Row:
    return TALLY.setdefault(name, Row())


def classify(name: str, label: str, fn: Callable[[], Any], hang_s: float = HANG_S) -> str:
    """Run `fn` once as one input of class `name`: 'accepted' | 'typed' | 'untyped' (+ 'hang' when slow)."""
    r = row(name)
    r.inputs += 1
    t0 = time.perf_counter()
    alarm = threading.current_thread() is threading.main_thread()
    if alarm:   # a runaway pure-Python loop is interrupted after 5 x the bound and counted as a hang
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, hang_s * 5)
    try:
        fn()
        outcome = "accepted"
        r.accepted += 1
    except _Hang:
        outcome = "hang"
    except EdgeLLMError:
        outcome = "typed"
        r.typed += 1
    except Exception as exc:  # noqa: BLE001 - counting untyped exceptions is the point
        outcome = "untyped"
        r.untyped += 1
        r.note(f"{label}: {type(exc).__name__}: {exc}")
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
    elapsed = time.perf_counter() - t0
    if elapsed > hang_s:
        r.hangs += 1
        r.note(f"{label}: took {elapsed:.2f}s")
    return outcome


def assert_clean(name: str) -> None:
    r = row(name)
    assert r.inputs > 0, f"{name}: no inputs were run"
    assert r.failures == 0, (f"{name}: {r.untyped} untyped, {r.crashes} crashes, {r.hangs} hangs, "
                             f"{r.escapes} escapes; e.g. {r.examples}")


def summary_lines() -> list[str]:
    if not TALLY:
        return []
    head = f"{'class':<40}{'inputs':>8}{'accepted':>9}{'typed':>7}{'untyped':>8}{'crashes':>8}{'hangs':>6}{'escapes':>8}"
    lines = [head, "-" * len(head)]
    total = Row()
    for name, r in sorted(TALLY.items()):
        lines.append(f"{name:<40}{r.inputs:>8}{r.accepted:>9}{r.typed:>7}{r.untyped:>8}{r.crashes:>8}{r.hangs:>6}"
                     f"{r.escapes:>8}")
        for attr in ("inputs", "accepted", "typed", "untyped", "crashes", "hangs", "escapes"):
            setattr(total, attr, getattr(total, attr) + getattr(r, attr))
    lines.append("-" * len(head))
    lines.append(f"{'total':<40}{total.inputs:>8}{total.accepted:>9}{total.typed:>7}{total.untyped:>8}"
                 f"{total.crashes:>8}{total.hangs:>6}{total.escapes:>8}")
    for name, r in sorted(TALLY.items()):
        for ex in r.examples:
            lines.append(f"  {name}: {ex}")
    return lines
