"""`Model`: one API over every runtime. Owns the generation loop and the metrics of every call."""
from __future__ import annotations

import codecs
import numbers
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .errors import ContextOverflowError, GenerationError, InvalidInputError, ModelClosedError, OptionError
from .metrics import Metrics, RawCounters, compute_metrics
from .runtimes.base import Runtime, SamplingParams
from .runtimes.chat import render_chat

MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs


@dataclass(frozen=True)
class Chunk:
    """One generation step. The last chunk has `finish_reason` and `metrics` set (its token may be None)."""
    text: str
    token: int | None
    index: int
    finish_reason: str | None = None      # "stop" (EOS or stop string) | "length" | "context"
    metrics: Metrics | None = None
    logprob: float | None = None          # with stream(logprobs=N): log-probability of `token` (raw distribution)
    top_logprobs: tuple[tuple[int, float], ...] = ()  # the N most likely (token id, logprob), most likely first


@dataclass(frozen=True)
class GenerationResult:
    text: str
    tokens: tuple[int, ...]
    finish_reason: str
    metrics: Metrics


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing chars of `text` could still become a stop string (must not be emitted yet)."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


class _CallLock:
    """Serializes a Model's calls across threads. Re-entrant for the thread that holds it (a stream's consumer may
    call tokenize), and releasable from any thread (a stream abandoned mid-way is finalized wherever the garbage
    collector runs). A stream marks itself idle while it waits for its consumer; a thread that has waited behind
    a stream idle for more than `idle_s` gets GenerationError instead of waiting forever for an abandoned one."""

    def __init__(self, idle_s: float = 10.0) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._idle_since: float | None = None
        self.idle_s = idle_s

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._cond:
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

    def resume(self) -> None:
        """The holding stream was asked for its next chunk (possibly from another thread, which now owns it)."""
        with self._cond:
            self._owner, self._idle_since = threading.get_ident(), None


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a str, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"the text holds a lone surrogate ({text[exc.start]!r}) at character {exc.start}; "
                                "it is not valid Unicode") from None
    return text


class Model:
    """A loaded artifact. Use as a context manager (or call close()) to free native memory promptly.

    Threads: one Model may be shared between threads. Its calls are serialized: a call from a second thread waits
    until the first finishes, and a `stream()` holds the model from its first step until it ends or is closed
    (so finish or `.close()` streams you abandon). Starting a second generation in the thread that has an
    unfinished stream of the same model raises GenerationError. After `close()` every call raises
    ModelClosedError; closing from inside a stream's loop stops that stream at its next step."""

    def __init__(self, runtime: Runtime, *, device: str, load_s: float, artifact: str,
                 energy_meter: Any = None) -> None:
        self.runtime = runtime
        self.device = device
        self.load_s = load_s
        self.artifact = artifact
        self._energy = energy_meter
        self.last_metrics: Metrics | None = None
        self._lock = _CallLock()
        self._closed = False
        self._generating = False
        self._close_pending = False

    @contextmanager
    def _use(self) -> Iterator[None]:
        self._lock.acquire()
        try:
            self._check_open()
            yield
        finally:
            self._lock.release()

    def _check_open(self) -> None:
        if self._closed:
            raise ModelClosedError(f"the model {self.artifact} was closed")

    def _check_ids(self, tokens: Iterable[Any]) -> list[int]:
        """Token ids as ints in [0, n_vocab): InvalidInputError for anything else (native code would abort)."""
        if isinstance(tokens, (str, bytes, bytearray)) or not isinstance(tokens, Iterable):
            raise InvalidInputError(f"a prompt is a str or a sequence of int token ids, not {type(tokens).__name__}")
        n_vocab = getattr(self.runtime, "n_vocab", None)
        out = []
        for i, t in enumerate(tokens):
            if isinstance(t, bool) or not isinstance(t, numbers.Integral):
                raise InvalidInputError(f"token {i} is {t!r}, not an integer id")
            if t < 0 or (n_vocab is not None and t >= n_vocab):
                raise InvalidInputError(f"token id {t} at position {i} is outside the vocabulary [0, {n_vocab})")
            out.append(int(t))
        return out

    # -- tokens --------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        with self._use():
            info = self.runtime.tokenizer_info
            return self.runtime.tokenize(_check_text(text), add_special=add_special and info.add_bos,
                                         parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        with self._use():
            ids = self._check_ids(tokens)
            return b"".join(self.runtime.token_bytes(t) for t in ids).decode("utf-8", errors="replace")

    @property
    def n_ctx(self) -> int:
        self._check_open()
        return self.runtime.n_ctx

    # -- generation ----------------------------------------------------------------------------
    def stream(self, prompt: str | Sequence[int], *, max_tokens: int = 128, temperature: float = 0.8,
               top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
               seed: int | None = None, stop: Sequence[str] = (), parse_special: bool = False,
               json_schema: Mapping[str, Any] | None = None, logprobs: int | None = None) -> Iterator[Chunk]:
        """json_schema: hold the output to JSON ({} any object, or that schema); runtimes with the
        `constrained_json` capability only (llama.cpp), else OptionError. logprobs=N (0..20): each chunk carries
        its token's log-probability under the model's raw distribution and the N most likely alternatives."""
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)
                                     or not 0 <= logprobs <= MAX_TOP_LOGPROBS):
            raise OptionError(f"logprobs={logprobs!r} must be None or a whole number in 0..{MAX_TOP_LOGPROBS}")
        if logprobs is not None and not self.runtime.capabilities.logprobs:
            raise OptionError(f"the {self.runtime.name} backend cannot report log-probabilities")
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                min_p=min_p, repeat_penalty=repeat_penalty, seed=seed,
                                stop=tuple(stop) if isinstance(stop, list) else stop, json_schema=json_schema)
        if json_schema is not None and not self.runtime.capabilities.constrained_json:
            raise OptionError(f"JSON-constrained output needs a runtime with grammars (llama.cpp); "
                              f"{self.runtime.name} has none", "convert to GGUF, or drop json_schema")
        with self._use():
            ids = (self.tokenize(prompt, parse_special=parse_special) if isinstance(prompt, str)
                   else self._check_ids(prompt))
        return self._locked_loop(ids, params, logprobs)

    def _locked_loop(self, ids: list[int], params: SamplingParams, logprobs: int | None = None) -> Iterator[Chunk]:
        self._lock.acquire()
        try:
            self._check_open()
            if self._generating:
                raise GenerationError("this thread already has an unfinished stream of this model",
                                      "iterate the first stream to its end (or .close() it) before starting another")
            self._generating = True
            try:
                for chunk in self._loop(ids, params, logprobs):
                    self._lock.suspend()
                    yield chunk
                    self._lock.resume()
            finally:
                self._generating = False
                if self._close_pending:
                    self._close_pending = False
                    self.runtime.close()
        finally:
            self._lock.release()

    def _loop(self, ids: list[int], params: SamplingParams, logprobs: int | None = None) -> Iterator[Chunk]:
        n_ctx = self.runtime.n_ctx
        if len(ids) >= n_ctx:
            raise ContextOverflowError(f"the prompt has {len(ids)} tokens but the context holds {n_ctx}")
        if not ids:
            raise ContextOverflowError("the prompt is empty (0 tokens)", "pass at least one token of prompt text")
        budget = min(params.max_tokens, n_ctx - len(ids))
        eos = set(self.runtime.tokenizer_info.eos_ids)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        counters = RawCounters(prompt_tokens=len(ids))
        energy = self._energy.start() if self._energy is not None else None
        energy_mark: Any = None  # energy snapshot at the first token: splits prefill from decode
        pending, emitted, index, finish = "", 0, 0, "length"
        if budget == 0:
            finish = "length" if params.max_tokens == 0 else "context"
        else:
            t_ask = counters.start  # when we last asked the runtime for a token
            for tok in self.runtime.generate(ids, params):
                counters.stamp()
                counters.step_runtime_s.append(counters.token_times[-1] - t_ask)
                if index == 0 and self._energy is not None:
                    energy_mark = self._energy.start()
                if tok in eos:
                    finish = "stop"
                    break
                lp, tops = self.runtime.token_logprobs(tok, logprobs) if logprobs is not None else (None, ())
                t_detok = time.perf_counter()
                pending += decoder.decode(self.runtime.token_bytes(tok))
                hit = min(((pending.find(s), s) for s in params.stop if s in pending), default=None)
                if hit is not None:
                    pending, finish = pending[: hit[0]], "stop"
                    break
                hold = _held_back(pending, params.stop)
                out, pending = (pending[: len(pending) - hold], pending[len(pending) - hold:]) if hold else (pending, "")
                counters.detok_s += time.perf_counter() - t_detok
                yield Chunk(text=out, token=tok, index=index, logprob=lp, top_logprobs=tops)
                index += 1
                emitted += 1
                if emitted >= budget:
                    finish = "length" if emitted >= params.max_tokens else "context"
                    break
                if self._closed:   # closed from inside the loop: never touch the native state again
                    raise ModelClosedError(f"the model {self.artifact} was closed during a stream")
                t_ask = time.perf_counter()
        counters.finish()
        if finish != "stop":
            pending += decoder.decode(b"", final=True)
        reading: Any = None
        if self._energy is not None:
            measure = getattr(self._energy, "measure", None)
            reading = measure(energy, energy_mark, counters) if measure else self._energy.stop(energy, counters)
        metrics = compute_metrics(counters, backend=getattr(self.runtime, "description", self.runtime.name),
                                  device=self.device,
                                  threads=getattr(self.runtime, "threads", None), load_s=self.load_s, energy=reading)
        self.last_metrics = metrics
        yield Chunk(text=pending, token=None, index=index, finish_reason=finish, metrics=metrics)

    def generate(self, prompt: str | Sequence[int], **kwargs: Any) -> GenerationResult:
        """Run `stream()` to the end and gather the text, tokens and metrics."""
        parts: list[str] = []
        tokens: list[int] = []
        for chunk in self.stream(prompt, **kwargs):
            parts.append(chunk.text)
            if chunk.token is not None:
                tokens.append(chunk.token)
            if chunk.finish_reason is not None:
                assert chunk.metrics is not None
                return GenerationResult("".join(parts), tuple(tokens), chunk.finish_reason, chunk.metrics)
        raise RuntimeError("stream ended without a final chunk")  # pragma: no cover - _loop always yields one

    def chat_prompt(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        with self._use():
            info = self.runtime.tokenizer_info
            text = render_chat(info.chat_template, messages, bos_token=info.bos_text, eos_token=info.eos_text,
                               add_generation_prompt=add_generation_prompt)
            ids = self.runtime.tokenize(_check_text(text), add_special=False, parse_special=True)
        if info.add_bos and info.bos_id is not None and (not ids or ids[0] != info.bos_id):
            ids.insert(0, info.bos_id)
        return ids

    def chat_stream(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> Iterator[Chunk]:
        return self.stream(self.chat_prompt(messages), **kwargs)

    def chat(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> GenerationResult:
        return self.generate(self.chat_prompt(messages), **kwargs)

    # -- evaluation ----------------------------------------------------------------------------
    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Teacher-forced logits, shape (len(tokens), vocab)."""
        with self._use():
            ids = self._check_ids(tokens)
            if not ids:
                raise InvalidInputError("logits() needs at least one token")
            if len(ids) > self.runtime.n_ctx:
                raise ContextOverflowError(f"{len(ids)} tokens do not fit the context of {self.runtime.n_ctx}")
            return self.runtime.logits(ids)

    def close(self) -> None:
        """Free the native model. Idempotent; waits for another thread's call to finish first. When the model is
        held by a stream (this thread's, or one another thread abandoned), the stream stops at its next step and
        frees the model when it ends."""
        try:
            self._lock.acquire()
        except GenerationError:           # held by an abandoned stream: mark closed, it frees the runtime
            self._closed = self._close_pending = True
            return
        try:
            if self._closed:
                return
            self._closed = True
            if self._generating:          # a stream is inside its loop: freed when the stream stops
                self._close_pending = True
            else:
                self.runtime.close()
        finally:
            self._lock.release()


    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
