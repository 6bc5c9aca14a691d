"""Progress of long operations (convert, autoquant, prune): one option, three kinds of listener.

Every long API call takes `progress=`:

- `None` (the default): a progress line on stderr when stderr is a terminal, nothing otherwise;
- `True`: always report on stderr (a line updated in place on a terminal; throttled plain lines when stderr is
  a file or a pipe, so a log shows the work going on); the CLI always passes True;
- `False`: silent;
- a callable: called with a `ProgressEvent` on every step (and nothing is written to stderr), e.g.
  `edgellm.convert(hf, out, quant="int4", progress=lambda e: print(e.stage, e.done, e.total))`.

A callback runs on the converting thread; it should return quickly. An exception it raises aborts the operation
(so a callback can cancel by raising).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO, Union

__all__ = ["ProgressEvent", "ProgressCallback", "ProgressArg", "Reporter", "Stage", "reporter", "terminal"]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long operation. `done`/`total` count `unit`s (total None: unknown); `finished` is True on the
    last event of a stage; `message` is free text (the layer just measured, a table line)."""
    stage: str
    done: float
    total: float | None
    unit: str
    elapsed_s: float
    finished: bool = False
    message: str = ""

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(1.0, self.done / self.total)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far (None until a step is done, when the total is unknown, or finished)."""
        if self.finished or not self.total or self.done <= 0 or self.done >= self.total:
            return None
        return self.elapsed_s * (self.total - self.done) / self.done


ProgressCallback = Callable[[ProgressEvent], None]
ProgressArg = Union[bool, None, ProgressCallback]


def _fmt_amount(x: float, unit: str) -> str:
    if unit == "B":
        return f"{x / 2**20:.1f} MiB"
    return f"{int(x)}" if float(x).is_integer() else f"{x:.1f}"


def _fmt_seconds(s: float) -> str:
    """12s, 4m05s, 1h02m."""
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class _StderrSink:
    """Renders events on a stream: in place (`\\r`) on a terminal, else one line per stage start/end and at most
    one line every `interval` seconds in between."""

    def __init__(self, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if not self.tty else 0.1
        self._last: dict[str, float] = {}
        self._width = 0

    def line(self, e: ProgressEvent) -> str:
        if not e.total and not e.unit and not e.done:   # a stage without counts: its time only
            return f"{e.stage}: " + (f"done in {e.elapsed_s:.0f}s" if e.finished else "...") + \
                (f" - {e.message}" if e.message else "")
        amount = _fmt_amount(e.done, e.unit)
        if e.total:
            amount = f"{amount}/{_fmt_amount(e.total, e.unit)}{'' if e.unit == 'B' else ' ' + e.unit} " \
                     f"({100 * (e.fraction or 0):.0f}%)"
        elif e.unit and e.unit != "B":
            amount = f"{amount} {e.unit}"
        text = f"{e.stage}: {amount}, {_fmt_seconds(e.elapsed_s)}"
        eta = e.eta_s
        if eta is not None:
            text += f", ETA {_fmt_seconds(eta)}"
        return text + (f" - {e.message}" if e.message else "") + (" done" if e.finished else "")

    def __call__(self, e: ProgressEvent) -> None:
        now = time.monotonic()
        first = e.stage not in self._last
        if not (first or e.finished or now - self._last[e.stage] >= self.interval):
            return
        self._last[e.stage] = now
        text = self.line(e)
        try:
            if self.tty:
                pad = max(0, self._width - len(text))
                self.stream.write("\r" + text + " " * pad + ("\n" if e.finished else ""))
                self._width = 0 if e.finished else len(text)
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):   # a closed stderr never stops the work
            pass

    def note(self, text: str) -> None:
        try:
            if self.tty and self._width:
                self.stream.write("\n")
                self._width = 0
            self.stream.write(text.rstrip("\n") + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass


class Stage:
    """A running stage; `advance()` / `update()` report steps, leaving the `with` block reports it finished."""

    def __init__(self, reporter: "Reporter", name: str, total: float | None, unit: str) -> None:
        self.reporter, self.name, self.total, self.unit = reporter, name, total, unit
        self.done: float = 0
        self.t0 = time.monotonic()
        self.closed = False
        self._emit()

    def _emit(self, message: str = "", finished: bool = False) -> None:
        self.reporter.emit(ProgressEvent(self.name, self.done, self.total, self.unit,
                                         time.monotonic() - self.t0, finished, message))

    def advance(self, n: float = 1, message: str = "") -> None:
        self.done += n
        self._emit(message)

    def update(self, done: float, message: str = "") -> None:
        self.done = done
        self._emit(message)

    def close(self, message: str = "") -> None:
        if not self.closed:
            self.closed = True
            self._emit(message, finished=True)

    def __enter__(self) -> "Stage":
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()


class Reporter:
    """Where a long operation reports. `Reporter(None)` is silent; `child(prefix)` names nested stages
    (autoquant's candidates: "[2/6] Q6_K: writing BF16")."""

    def __init__(self, sink: Callable[[ProgressEvent], None] | None, prefix: str = "",
                 note: Callable[[str], None] | None = None) -> None:
        self._sink, self.prefix, self._note = sink, prefix, note

    @property
    def enabled(self) -> bool:
        return self._sink is not None

    def emit(self, event: ProgressEvent) -> None:
        if self._sink is not None:
            self._sink(event)

    def stage(self, name: str, total: float | None = None, unit: str = "") -> Stage:
        return Stage(self, f"{self.prefix}{name}", total, unit)

    def note(self, text: str) -> None:
        """A finished result worth showing (a measured table): printed on stderr by the terminal listener,
        passed to a callback as an event with `stage="note"` and the text as `message`."""
        if self._note is not None:
            self._note(text)
        elif self._sink is not None:
            self._sink(ProgressEvent("note", 0, None, "", 0.0, True, text))

    def child(self, prefix: str) -> "Reporter":
        return Reporter(self._sink, self.prefix + prefix, self._note)


def reporter(progress: "ProgressArg | Reporter", stream: TextIO | None = None) -> Reporter:
    """The Reporter for a `progress=` argument (see the module docstring); a Reporter passes through."""
    if isinstance(progress, Reporter):
        return progress
    if progress is None:
        target = stream if stream is not None else sys.stderr
        progress = bool(getattr(target, "isatty", lambda: False)())
    if progress is True:
        return terminal(stream)
    if progress is False:
        return Reporter(None)
    if callable(progress):
        return Reporter(progress)
    from .errors import OptionError
    raise OptionError(f"progress={progress!r} must be True, False, None or a callable taking a ProgressEvent",
                      "progress=None shows progress when stderr is a terminal")


def terminal(stream: TextIO | None = None, notes: bool = True) -> Reporter:
    """A Reporter writing on `stream` (stderr), whatever it is; notes=False leaves printing results (tables) to
    the caller (the CLI prints them on stdout)."""
    sink = _StderrSink(stream)
    return Reporter(sink, note=sink.note if notes else (lambda _text: None))
