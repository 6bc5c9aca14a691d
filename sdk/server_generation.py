"""The generation side of `edgellm serve`: one request's prompt, sampling and token loop on a worker thread."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .cancellation import CancelToken
from .errors import ContextOverflowError, EdgeLLMError
from .runtimes.base import OPENAI_SAMPLING
from .server_schema import ApiError, GenerationRequest


@dataclass
class Outcome:
    text: str = ""
    reason: str = "stop"
    metrics: Any = None
    cancelled: bool = False
    entries: list[dict[str, Any]] | None = None  # per-token logprobs entries, when asked for


def _sampling(model: Any, req: GenerationRequest, prompt_len: int) -> dict[str, Any]:
    n_ctx = model.n_ctx
    if prompt_len >= n_ctx:
        raise ApiError(400, f"the prompt has {prompt_len} tokens but the model's context holds {n_ctx}",
                       param="messages" if req.kind == "chat" else "prompt", code="context_length_exceeded")
    kwargs: dict[str, Any] = {
        "max_tokens": min(req.max_tokens or n_ctx, n_ctx - prompt_len),  # clamped to what the context holds
        "temperature": req.temperature, "top_p": req.top_p, "seed": req.seed, "stop": req.stop,
        "top_k": OPENAI_SAMPLING.top_k, "min_p": OPENAI_SAMPLING.min_p}  # OpenAI's: only temperature, top_p count
    kwargs.update(req.sampling_extra)
    if req.logprobs is not None:
        kwargs["logprobs"] = req.logprobs
    if req.response_format != "text":
        if not model.runtime.capabilities.constrained_json:
            raise ApiError(400, f"response_format {req.response_format} needs a GGUF artifact (llama.cpp grammars); "
                                f"the {model.runtime.name} backend cannot constrain its output",
                           param="response_format")
        kwargs["json_schema"] = req.json_schema if req.response_format == "json_schema" else {}
    return kwargs


def _entry(model: Any, token: int, logprob: float, tops: tuple[tuple[int, float], ...]) -> dict[str, Any]:
    """One token's logprobs entry in OpenAI's shape (token text, bytes, alternatives)."""
    def text_bytes(t: int) -> tuple[str, list[int]]:
        raw = model.runtime.token_bytes(t)
        return raw.decode("utf-8", errors="replace"), list(raw)

    text, raw = text_bytes(token)
    alts = []
    for t, lp in tops:
        alt_text, alt_raw = text_bytes(t)
        alts.append({"token": alt_text, "logprob": lp, "bytes": alt_raw})
    return {"token": text, "logprob": logprob, "bytes": raw, "top_logprobs": alts}


def run_generation(model: Any, req: GenerationRequest, emit: Callable[[str, list[dict[str, Any]]], None],
                   cancel: CancelToken, deadline: float) -> Outcome:
    """Blocking: prompt ids, sampling, the token loop. `cancel` (a client gone, shutdown) or the deadline stops
    it within one decode step or prefill chunk (the model's own cancellation, see docs/embedding.md)."""
    try:
        ids = (model.chat_prompt(list(req.messages), template_kwargs=req.template_kwargs) if req.kind == "chat"
               else model.tokenize(req.prompt))
        stream = model.stream(ids, cancel=cancel, **_sampling(model, req, len(ids)))
    except ContextOverflowError as exc:
        raise ApiError(400, exc.message, code="context_length_exceeded") from None
    except EdgeLLMError as exc:
        raise ApiError(400, exc.message) from None
    out = Outcome(entries=[] if req.logprobs is not None else None)
    parts: list[str] = []
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), cancel.cancel)
    timer.daemon = True
    timer.start()
    try:
        for chunk in stream:
            entries = ([_entry(model, chunk.token, chunk.logprob, chunk.top_logprobs)]
                       if chunk.token is not None and chunk.logprob is not None else [])
            if out.entries is not None:
                out.entries += entries
            if chunk.text or entries:
                parts.append(chunk.text)
                emit(chunk.text, entries)
            if chunk.finish_reason is not None:
                out.reason, out.metrics = chunk.finish_reason, chunk.metrics
                out.cancelled = chunk.finish_reason == "cancelled"
                break
            if cancel.is_set() or time.monotonic() > deadline:
                out.cancelled = True
                break
    finally:
        timer.cancel()
        stream.close()
    out.text = "".join(parts)
    return out
