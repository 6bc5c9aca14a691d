"""`Model`: one API over every runtime. Owns the generation loop and the metrics of every call."""
from __future__ import annotations

import codecs
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .errors import ContextOverflowError
from .metrics import Metrics, RawCounters, compute_metrics
from .runtimes.base import Runtime, SamplingParams
from .runtimes.chat import render_chat


@dataclass(frozen=True)
class Chunk:
    """One generation step. The last chunk has `finish_reason` and `metrics` set (its token may be None)."""
    text: str
    token: int | None
    index: int
    finish_reason: str | None = None      # "stop" (EOS or stop string) | "length" | "context"
    metrics: Metrics | None = None


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


class Model:
    """A loaded artifact. Use as a context manager (or call close()) to free native memory promptly."""

    def __init__(self, runtime: Runtime, *, device: str, load_s: float, artifact: str,
                 energy_meter: Any = None) -> None:
        self.runtime = runtime
        self.device = device
        self.load_s = load_s
        self.artifact = artifact
        self._energy = energy_meter
        self.last_metrics: Metrics | None = None

    # -- tokens --------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        info = self.runtime.tokenizer_info
        return self.runtime.tokenize(text, add_special=add_special and info.add_bos, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.runtime.token_bytes(t) for t in tokens).decode("utf-8", errors="replace")

    @property
    def n_ctx(self) -> int:
        return self.runtime.n_ctx

    # -- generation ----------------------------------------------------------------------------
    def stream(self, prompt: str | Sequence[int], *, max_tokens: int = 128, temperature: float = 0.8,
               top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
               seed: int | None = None, stop: Sequence[str] = (), parse_special: bool = False) -> Iterator[Chunk]:
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                min_p=min_p, repeat_penalty=repeat_penalty, seed=seed, stop=tuple(stop))
        ids = list(prompt) if not isinstance(prompt, str) else self.tokenize(prompt, parse_special=parse_special)
        return self._loop(ids, params)

    def _loop(self, ids: list[int], params: SamplingParams) -> Iterator[Chunk]:
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
                t_detok = time.perf_counter()
                pending += decoder.decode(self.runtime.token_bytes(tok))
                hit = min(((pending.find(s), s) for s in params.stop if s in pending), default=None)
                if hit is not None:
                    pending, finish = pending[: hit[0]], "stop"
                    break
                hold = _held_back(pending, params.stop)
                out, pending = (pending[: len(pending) - hold], pending[len(pending) - hold:]) if hold else (pending, "")
                counters.detok_s += time.perf_counter() - t_detok
                yield Chunk(text=out, token=tok, index=index)
                index += 1
                emitted += 1
                if emitted >= budget:
                    finish = "length" if emitted >= params.max_tokens else "context"
                    break
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
        info = self.runtime.tokenizer_info
        text = render_chat(info.chat_template, messages, bos_token=info.bos_text, eos_token=info.eos_text,
                           add_generation_prompt=add_generation_prompt)
        ids = self.runtime.tokenize(text, add_special=False, parse_special=True)
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
        if len(tokens) > self.runtime.n_ctx:
            raise ContextOverflowError(f"{len(tokens)} tokens do not fit the context of {self.runtime.n_ctx}")
        return self.runtime.logits(list(tokens))

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
