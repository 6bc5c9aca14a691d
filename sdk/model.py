"""`Model`: one API over every runtime. Owns the generation loop and the metrics of every call."""
from __future__ import annotations

import codecs
import numbers
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence, cast

import numpy as np

from .cancellation import CallLock, CancelToken
from .errors import ContextOverflowError, GenerationError, InvalidInputError, ModelClosedError, OptionError
from .metrics import Metrics, RawCounters, compute_metrics
from .runtimes.base import DEFAULT_SAMPLING as D
from .runtimes.base import CancellableRuntime, LogprobRuntime, Runtime, SamplingParams
from .runtimes.chat import render_chat

MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs


@dataclass(frozen=True)
class Chunk:
    """One generation step. The last chunk has `finish_reason` and `metrics` set (its token may be None)."""
    text: str
    token: int | None
    index: int
    finish_reason: str | None = None      # "stop" (EOS or stop string) | "length" | "context" | "cancelled"
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

    Threads (the full contract is in docs/embedding.md): one Model may be shared between threads. Its calls are
    serialized: a call from a second thread waits until the first finishes, and a `stream()` holds the model from
    its first step until it ends or is closed (breaking out of `for chunk in model.stream(...)` closes it; close
    streams you keep a reference to and abandon). Starting a second generation in the thread that has an
    unfinished stream of the same model raises GenerationError.

    Cancelling: `cancel()` (from any thread) or a `CancelToken` passed as `cancel=` stops a generation within one
    decode step or one prefill chunk (llama.cpp stops inside the batch it is computing); the stream then ends with
    a last chunk whose finish_reason is "cancelled" and whose metrics hold what was measured.

    `close()` is safe from any thread at any time: it cancels the generation in flight, waits for it to leave
    native code, then frees the model. After it every call raises ModelClosedError; a stream that was waiting for
    its consumer when the model was closed raises ModelClosedError when advanced."""

    def __init__(self, runtime: Runtime, *, device: str, load_s: float, artifact: str,
                 energy_meter: Any = None) -> None:
        self.runtime = runtime
        self.device = device
        self.load_s = load_s
        self.artifact = artifact
        self._energy = energy_meter
        self.last_metrics: Metrics | None = None
        self._lock = CallLock(lambda: ModelClosedError(f"the model {self.artifact} was closed"))
        self._closed = False
        self._closing = threading.Lock()   # one close() at a time
        self._close_requested = False      # set before close() cancels: a stream starting meanwhile sees it
        self._generating = False
        self._active: CancelToken | None = None   # the token of the generation in flight
        self._described = _describe(runtime, artifact)

    @contextmanager
    def _use(self) -> Iterator[None]:
        self._lock.acquire()
        try:
            self._check_open()
            yield
        finally:
            self._lock.release()

    def _check_open(self) -> None:
        if self._closed or self._close_requested or self._lock.closed:
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
    def tokenize(self, text: str, add_special: bool | None = None, parse_special: bool = False) -> list[int]:
        """Token ids of `text`. add_special: None (the default) follows the artifact: the BOS token is added when
        its tokenizer says add_bos; True adds the BOS token even where the artifact does not (OptionError if the
        model has no BOS token); False never adds it. parse_special: "<|im_start|>"-like text becomes its token."""
        if add_special is not None and not isinstance(add_special, bool):
            raise OptionError(f"add_special={add_special!r} must be True, False or None (the artifact's rule)")
        with self._use():
            info = self.runtime.tokenizer_info
            want = info.add_bos if add_special is None else add_special
            if want and info.bos_id is None:
                raise OptionError("add_special=True, but this model has no BOS token to add",
                                  "pass add_special=None (the artifact's rule) or False")
            ids = self.runtime.tokenize(_check_text(text), add_special=want and info.add_bos,
                                        parse_special=parse_special)
            if want and not info.add_bos and (not ids or ids[0] != info.bos_id):
                ids.insert(0, cast(int, info.bos_id))
            return ids

    def detokenize(self, tokens: Sequence[int]) -> str:
        with self._use():
            ids = self._check_ids(tokens)
            return b"".join(self.runtime.token_bytes(t) for t in ids).decode("utf-8", errors="replace")

    @property
    def n_ctx(self) -> int:
        self._check_open()
        return self.runtime.n_ctx

    # -- generation ----------------------------------------------------------------------------
    def stream(self, prompt: str | Sequence[int], *, max_tokens: int = D.max_tokens,
               temperature: float = D.temperature, top_k: int = D.top_k, top_p: float = D.top_p,
               min_p: float = D.min_p, repeat_penalty: float = D.repeat_penalty,
               seed: int | None = None, stop: Sequence[str] = (), parse_special: bool = False,
               json_schema: Mapping[str, Any] | None = None, logprobs: int | None = None,
               cancel: CancelToken | None = None) -> Iterator[Chunk]:
        """json_schema: hold the output to JSON ({} any object, or that schema); runtimes with the
        `constrained_json` capability only (llama.cpp), else OptionError. logprobs=N (0..20): each chunk carries
        its token's log-probability under the model's raw distribution and the N most likely alternatives.
        cancel: a CancelToken; cancelling it (from any thread, before or during the call) ends the stream within
        one decode step or prefill chunk with finish_reason "cancelled" (so does `Model.cancel()`)."""
        if cancel is not None and not isinstance(cancel, CancelToken):
            raise OptionError(f"cancel={cancel!r} must be an edgellm.cancellation.CancelToken or None")
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)
                                     or not 0 <= logprobs <= MAX_TOP_LOGPROBS):
            raise OptionError(f"logprobs={logprobs!r} must be None or a whole number in 0..{MAX_TOP_LOGPROBS}")
        if logprobs is not None and not self.runtime.capabilities.logprobs:
            raise OptionError(f"the {self.runtime.name} backend cannot report log-probabilities")
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                min_p=min_p, repeat_penalty=repeat_penalty, seed=seed,
                                stop=cast(tuple[str, ...], tuple(stop) if isinstance(stop, list) else stop),
                                json_schema=json_schema)  # a bad stop= is SamplingParams' GenerationError
        if json_schema is not None and not self.runtime.capabilities.constrained_json:
            raise OptionError(f"JSON-constrained output needs a runtime with grammars (llama.cpp); "
                              f"{self.runtime.name} has none", "convert to GGUF, or drop json_schema")
        with self._use():
            ids = (self.tokenize(prompt, parse_special=parse_special) if isinstance(prompt, str)
                   else self._check_ids(prompt))
        if not ids:
            raise InvalidInputError("the prompt is empty (0 tokens)", "pass at least one token of prompt text")
        return self._locked_loop(ids, params, logprobs, cancel)

    def _locked_loop(self, ids: list[int], params: SamplingParams, logprobs: int | None = None,
                     cancel: CancelToken | None = None) -> Iterator[Chunk]:
        self._lock.acquire()
        try:
            self._check_open()
            if self._generating:
                raise GenerationError("this thread already has an unfinished stream of this model",
                                      "iterate the first stream to its end (or .close() it) before starting another")
            call = CancelToken()   # this call's own token: Model.cancel() and close() raise it
            unlink = cancel.on_cancel(call.cancel) if cancel is not None else (lambda: None)
            self._generating, self._active = True, call
            if self._close_requested:       # close() came between our acquire and now: it could not cancel us
                call.cancel()
            try:
                for chunk in self._loop(ids, params, logprobs, call):
                    self._lock.suspend()
                    yield chunk
                    if not self._lock.resume():
                        raise ModelClosedError(f"the model {self.artifact} was closed during a stream")
            finally:
                unlink()
                self._generating, self._active = False, None
        finally:
            self._lock.release()

    def _steps(self, ids: list[int], params: SamplingParams, call: CancelToken) -> Iterator[int]:
        """The runtime's token ids; a runtime with the `cancellable` capability also watches `call` itself
        (between prefill chunks, inside native compute), the others are stopped between tokens by `_loop`."""
        if self.runtime.capabilities.cancellable:
            return cast(CancellableRuntime, self.runtime).generate(ids, params, cancel=call)
        return self.runtime.generate(ids, params)

    def _loop(self, ids: list[int], params: SamplingParams, logprobs: int | None = None,
              call: CancelToken | None = None) -> Iterator[Chunk]:
        call = call if call is not None else CancelToken()
        n_ctx = self.runtime.n_ctx
        if len(ids) >= n_ctx:
            raise ContextOverflowError(f"the prompt has {len(ids)} tokens but the context holds {n_ctx}")
        if not ids:
            raise InvalidInputError("the prompt is empty (0 tokens)", "pass at least one token of prompt text")
        budget = min(params.max_tokens, n_ctx - len(ids))
        eos = set(self.runtime.tokenizer_info.eos_ids)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        counters = RawCounters(prompt_tokens=len(ids))
        energy = self._energy.start() if self._energy is not None else None
        energy_mark: Any = None  # energy snapshot at the first token: splits prefill from decode
        pending, emitted, index, finish = "", 0, 0, "length"
        if call.cancelled:
            finish = "cancelled"
        elif budget == 0:
            finish = "length" if params.max_tokens == 0 else "context"
        else:
            t_ask = counters.start  # when we last asked the runtime for a token
            steps = self._steps(ids, params, call)
            for tok in steps:
                if call.cancelled:   # a token computed while the cancel came: dropped
                    finish = "cancelled"
                    break
                counters.stamp()
                counters.step_runtime_s.append(counters.token_times[-1] - t_ask)
                if index == 0 and self._energy is not None:
                    energy_mark = self._energy.start()
                if tok in eos:
                    finish = "stop"
                    break
                lp, tops = (cast(LogprobRuntime, self.runtime).token_logprobs(tok, logprobs) if logprobs is not None
                            else (None, ()))
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
                if call.cancelled:
                    finish = "cancelled"
                    break
                t_ask = time.perf_counter()
            else:   # the runtime stopped on its own: a cancellable runtime does when the token is cancelled
                if call.cancelled:
                    finish = "cancelled"
            close_steps = getattr(steps, "close", None)
            if close_steps is not None:
                close_steps()   # the runtime's generator ends now (its cancel hooks removed), not at GC
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

    def chat_prompt(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                    template_kwargs: Mapping[str, Any] | None = None) -> list[int]:
        """The chat rendered by the artifact's template (sandboxed) and tokenized. template_kwargs: variables the
        template reads besides the messages, e.g. {"enable_thinking": False} for Qwen3/SmolLM3."""
        with self._use():
            info = self.runtime.tokenizer_info
            text = render_chat(info.chat_template, messages, bos_token=info.bos_text, eos_token=info.eos_text,
                               add_generation_prompt=add_generation_prompt, template_kwargs=template_kwargs)
            ids = self.runtime.tokenize(_check_text(text), add_special=False, parse_special=True)
        if info.add_bos and info.bos_id is not None and (not ids or ids[0] != info.bos_id):
            ids.insert(0, info.bos_id)
        return ids

    def chat_stream(self, messages: Sequence[Mapping[str, Any]], *,
                    template_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> Iterator[Chunk]:
        return self.stream(self.chat_prompt(messages, template_kwargs=template_kwargs), **kwargs)

    def chat(self, messages: Sequence[Mapping[str, Any]], *, template_kwargs: Mapping[str, Any] | None = None,
             **kwargs: Any) -> GenerationResult:
        return self.generate(self.chat_prompt(messages, template_kwargs=template_kwargs), **kwargs)

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

    def cancel(self) -> bool:
        """Stop the generation in flight (from any thread): it ends within one decode step or prefill chunk with
        finish_reason "cancelled". Calls waiting for the model are not affected. True if there was one to stop."""
        active = self._active
        if active is None:
            return False
        active.cancel()
        return True

    def close(self) -> None:
        """Free the native model; idempotent and safe from any thread. A generation in flight is cancelled and
        close() waits until it has left native code (one decode step or prefill chunk); a stream held by this
        thread or abandoned by another (idle for `idle_s`) is stopped where it waits: advancing it raises
        ModelClosedError. Other calls in flight (tokenize, logits) are waited for."""
        with self._closing:
            if self._closed:
                return
            self._close_requested = True
            self.cancel()
            try:
                self._lock.acquire()     # the stream in flight ends (cancelled) and releases it
                held = True
            except GenerationError:      # held by a stream idle for idle_s: abandoned
                held = False
            except ModelClosedError:     # already claimed
                return
            try:
                while not self._lock.claim_idle():   # nobody inside the runtime from here on
                    self.cancel()
                    time.sleep(0.005)
                self._closed = True
                self.runtime.close()
            finally:
                if held:
                    self._lock.release()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"n_ctx={self._described['n_ctx']}"
        return (f"<edgellm.Model {self._described['name']!r} format={self._described['format']} "
                f"quant={self._described['quant']} backend={self.runtime.name} device={self.device} {state}>")

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _describe(runtime: Runtime, artifact: str) -> dict[str, Any]:
    """What repr() shows, read once at load: the file name, format and quant (from edgellm.json when the artifact
    has one, else the file's own metadata where the runtime exposes it)."""
    from pathlib import Path

    path = Path(artifact)
    info: dict[str, Any] = {"name": path.name, "format": {".gguf": "gguf", ".onnx": "onnx"}.get(path.suffix, "?"),
                            "quant": "?", "n_ctx": getattr(runtime, "n_ctx", "?")}
    try:
        from .converters.manifest import MANIFEST_NAME, read_manifest

        folder = path if path.is_dir() else path.parent
        if (folder / MANIFEST_NAME).is_file():
            manifest = read_manifest(folder)
            info["name"] = folder.name if path.suffix == ".onnx" else path.name
            info["format"], info["quant"] = manifest.format, manifest.quant or "?"
    except Exception:  # noqa: BLE001 - repr must never fail; an unreadable manifest only loses the quant
        pass
    return info
