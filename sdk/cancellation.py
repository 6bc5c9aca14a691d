"""`CancelToken`: a flag that any thread raises to stop the generation calls it was given.

    token = CancelToken()
    threading.Timer(2.0, token.cancel).start()
    for chunk in model.stream(prompt, cancel=token):   # ends with finish_reason "cancelled"
        ...

A token is one-way: once cancelled it stays cancelled (make a new one per request). The runtimes register
hooks on it for the duration of a call, so a cancel reaches native code at once: llama.cpp's abort flag, polled
while a batch is computed, and onnxruntime's `RunOptions.terminate` for the run in flight. See docs/embedding.md.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .errors import GenerationError

log = logging.getLogger(__name__)


class CancelToken:
    """Thread-safe, one-way cancellation flag with hooks. `cancel()` may be called from any thread, any number
    of times, from a signal handler or a UI callback; it never waits for a running call."""

    __slots__ = ("_event", "_hooks", "_lock")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.RLock()   # re-entrant: a signal handler may cancel while this thread is inside

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def is_set(self) -> bool:
        """The same as `cancelled` (so a token can stand where a threading.Event is expected)."""
        return self._event.is_set()

    def cancel(self) -> None:
        """Raise the flag and run the hooks of the calls using this token (each at most once)."""
        if self._event.is_set():
            return
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception:  # noqa: BLE001 - a failing hook must not stop the others; the flag is set anyway
                log.exception("a cancel hook failed")

    def set(self) -> None:
        """The same as `cancel()`, so a token can replace a threading.Event used as a stop flag."""
        self.cancel()

    def on_cancel(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run `hook` when the token is cancelled (at once if it already is). Returns a function that removes it.
        For runtimes and the `Model` loop; hooks must be quick and must not raise."""
        with self._lock:
            if not self._event.is_set():
                self._hooks.append(hook)
                return lambda: self._remove(hook)
        hook()
        return lambda: None

    def _remove(self, hook: Callable[[], None]) -> None:
        with self._lock:
            try:
                self._hooks.remove(hook)
            except ValueError:
                pass

    def __repr__(self) -> str:
        return f"CancelToken(cancelled={self.cancelled})"


class CallLock:
    """Serializes a Model's calls across threads. Re-entrant for the thread that holds it (a stream's consumer may
    call tokenize), and releasable from any thread (a stream abandoned mid-way is finalized wherever the garbage
    collector runs). A stream marks itself idle (`suspend`) while it waits for its consumer; a thread that has
    waited behind a stream idle for more than `idle_s` gets GenerationError instead of waiting forever for an
    abandoned one. `claim_idle` (for close()) marks the lock closed while no one is inside the runtime: after it,
    `resume` answers False and `acquire` raises `closed_error()`, so no thread can enter native code again."""

    def __init__(self, closed_error: Callable[[], Exception], idle_s: float = 10.0) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._idle_since: float | None = None
        self._closed_error = closed_error
        self.closed = False
        self.idle_s = idle_s

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if self.closed:
                raise self._closed_error()
            if self._owner == me:
                self._depth += 1
                return
            while self._owner is not None:
                idle = self._idle_since
                if idle is not None and time.monotonic() - idle > self.idle_s:
                    raise GenerationError(
                        f"this model is held by an unfinished stream that has not advanced for {self.idle_s:g} s",
                        "iterate streams to their end or call .close() on the ones you abandon")
                self._cond.wait(timeout=0.25)
                if self.closed:
                    raise self._closed_error()
            self._owner, self._depth, self._idle_since = me, 1, None

    def release(self) -> None:
        with self._cond:
            self._depth -= 1
            if self._depth <= 0:
                self._owner, self._depth, self._idle_since = None, 0, None
                self._cond.notify_all()

    def suspend(self) -> None:
        """The holding stream yielded a chunk and waits for its consumer."""
        with self._cond:
            self._idle_since = time.monotonic()

    def resume(self) -> bool:
        """The holding stream was asked for its next chunk (possibly from another thread, which now owns it).
        False when the model was closed meanwhile: the stream must not touch the runtime again."""
        with self._cond:
            if self.closed:
                return False
            self._owner, self._idle_since = threading.get_ident(), None
            return True

    def claim_idle(self) -> bool:
        """Close the lock if no thread is inside the runtime (free, or held by a suspended stream)."""
        with self._cond:
            if self._owner is not None and self._idle_since is None and self._owner != threading.get_ident():
                return False
            self.closed = True
            self._cond.notify_all()
            return True
