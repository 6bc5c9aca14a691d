"""OpenAI request bodies in, typed requests out; responses and error bodies as OpenAI clients expect them.

Parsing is strict where a wrong value would silently do something else (n > 1, unknown response_format, a
max_tokens that is not a positive integer) and lenient about fields that do not change the result here
(user, metadata, presence_penalty 0). Every refusal is an `ApiError` carrying the HTTP status and OpenAI's
error type, so the server answers 4xx with a body the `openai` client turns into its own exception.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .runtimes.base import OPENAI_SAMPLING

MAX_STOPS = 4
MAX_TOKENS = (1 << 31) - 1
MAX_TOP_LOGPROBS = 20
MAX_MESSAGES = 1024


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class GenerationRequest:
    kind: str                                  # "chat" | "completion"
    model: str
    messages: tuple[dict[str, Any], ...] = ()  # chat
    prompt: str = ""                           # completion
    max_tokens: int | None = None              # None: up to the context
    temperature: float = OPENAI_SAMPLING.temperature
    top_p: float = OPENAI_SAMPLING.top_p
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    logprobs: int | None = None                # alternatives per token to report; None: no log-probabilities
    response_format: str = "text"              # "text" | "json_object" | "json_schema"
    json_schema: dict[str, Any] | None = None
    sampling_extra: dict[str, Any] = field(default_factory=dict)  # top_k, min_p, repeat_penalty (edgellm's)
    template_kwargs: dict[str, Any] | None = None  # chat_template_kwargs (vLLM's name), e.g. enable_thinking


def _number(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo <= value <= hi:
        raise ApiError(400, f"'{key}' must be a number between {lo} and {hi}, got {value!r}", param=key)
    return float(value)


def _int(body: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ApiError(400, f"'{key}' must be an integer between {lo} and {hi}, got {value!r}", param=key)
    return value


def _logprobs(body: dict[str, Any], kind: str) -> int | None:
    """How many alternatives per token to report (None: no log-probabilities). Chat: `logprobs: true` with
    `top_logprobs: 0..20`; completions: `logprobs: 0..20`."""
    if kind == "chat":
        flag = body.get("logprobs")
        if flag not in (None, True, False):
            raise ApiError(400, "'logprobs' must be true or false", param="logprobs")
        top = _int(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
        if top is not None and not flag:
            raise ApiError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
        return (top or 0) if flag else None
    return _int(body, "logprobs", 0, MAX_TOP_LOGPROBS)


def _seed(body: dict[str, Any]) -> int | None:
    """Any 64-bit integer is a valid OpenAI seed; the runtimes take 32 bits (-1 stays 'fresh entropy')."""
    seed = _int(body, "seed", -(1 << 63), (1 << 63) - 1)
    return seed if seed is None or seed == -1 else seed & 0xFFFFFFFF


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, f"'stop' must be a non-empty string or a list of up to {MAX_STOPS} non-empty strings",
                       param="stop")
    return tuple(stops)


def _content(message: dict[str, Any], i: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if content is None and message.get("role") == "assistant":
        return ""
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]: text parts only
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"messages[{i}].content: only text parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)
    raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts", param="messages")


def _messages(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list) or not value or len(value) > MAX_MESSAGES:
        raise ApiError(400, f"'messages' must be a non-empty list of at most {MAX_MESSAGES} messages",
                       param="messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            raise ApiError(400, f"messages[{i}] needs a role of system, developer, user, assistant or tool",
                           param="messages")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": _content(m, i)})
    return tuple(out)


def _response_format(value: Any) -> tuple[str, dict[str, Any] | None]:
    if value is None:
        return "text", None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("text", "json_object"):
        return kind, None
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ApiError(400, "response_format json_schema needs json_schema.schema (an object)",
                           param="response_format")
        return kind, schema
    raise ApiError(400, "response_format.type must be text, json_object or json_schema", param="response_format")


def parse_request(body: Any, kind: str, served: str) -> GenerationRequest:
    """Validate a /v1/chat/completions ("chat") or /v1/completions ("completion") body."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required", param="model")
    if model != served:
        raise ApiError(404, f"the model '{model}' does not exist; this server serves '{served}' (GET /v1/models)",
                       param="model", code="model_not_found")
    if _int(body, "n", 1, 1 << 30) not in (None, 1):
        raise ApiError(400, "only n=1 is supported", param="n")
    logprobs = _logprobs(body, kind)
    if kind == "chat" and body.get("tools"):
        raise ApiError(400, "tool calls are not supported by edgellm serve yet", param="tools")
    # a positive count up to 2^31-1 is clamped to what the context holds; beyond that no runtime could mean it
    max_tokens = _int(body, "max_completion_tokens", 1, MAX_TOKENS)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 1, MAX_TOKENS)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    opts = body.get("stream_options") or {}
    fmt, schema = _response_format(body.get("response_format"))
    extra = {}
    for key, lo, hi in (("top_k", 0, 1 << 20), ("min_p", 0.0, 0.999), ("repeat_penalty", 0.01, 10.0)):
        if key in body:
            extra[key] = _int(body, key, int(lo), int(hi)) if key == "top_k" else _number(body, key, 0.0, lo, hi)
    template_kwargs = body.get("chat_template_kwargs")
    if template_kwargs is not None and (kind != "chat" or not isinstance(template_kwargs, dict)):
        raise ApiError(400, "'chat_template_kwargs' must be an object of chat template variables (chat only)",
                       param="chat_template_kwargs")
    if kind == "chat":
        messages, prompt = _messages(body.get("messages")), ""
    else:
        raw = body.get("prompt")
        if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
            raw = raw[0]
        if not isinstance(raw, str) or not raw:
            raise ApiError(400, "'prompt' must be a non-empty string", param="prompt")
        messages, prompt = (), raw
    return GenerationRequest(
        kind=kind, model=model, messages=messages, prompt=prompt, max_tokens=max_tokens,
        temperature=_number(body, "temperature", OPENAI_SAMPLING.temperature, 0.0, 2.0),
        top_p=_number(body, "top_p", OPENAI_SAMPLING.top_p, 1e-6, 1.0),
        seed=_seed(body), stop=_stops(body.get("stop")), stream=stream,
        include_usage=bool(isinstance(opts, dict) and opts.get("include_usage")), logprobs=logprobs,
        response_format=fmt,
        json_schema=schema, sampling_extra=extra, template_kwargs=template_kwargs)


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON") from None


# -- responses -----------------------------------------------------------------------------------------------------
def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def finish_reason(ours: str) -> str:
    return "stop" if ours == "stop" else "length"  # "context" (ran out of context) is a length stop to OpenAI


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def timings(metrics: Any) -> dict[str, Any]:
    """edgellm's numbers for one call, beside OpenAI's usage."""
    return {"ttft_ms": None if metrics.ttft_s is None else round(metrics.ttft_s * 1000, 2),
            "prefill_tokens_per_s": metrics.prefill_tps, "decode_tokens_per_s": metrics.decode_tps,
            "energy_j": metrics.energy_j, "energy_per_token_j": metrics.energy_per_token_j,
            "energy_method": metrics.energy_method, "backend": metrics.backend, "device": metrics.device}


def logprobs_body(req: GenerationRequest, entries: list[dict[str, Any]] | None, offset: int = 0) -> Any:
    """OpenAI's logprobs object for `entries` ({"token", "logprob", "bytes", "top_logprobs": [...]} per token):
    chat's {"content": [...]}, or the legacy completions layout (tokens, token_logprobs, top_logprobs,
    text_offset, counted from `offset` characters into the completion)."""
    if req.logprobs is None or entries is None:
        return None
    if req.kind == "chat":
        return {"content": entries, "refusal": None}
    offsets, at = [], offset
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}


def completion_body(req: GenerationRequest, rid: str, text: str, reason: str, metrics: Any,
                    entries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    created = int(time.time())
    lp = logprobs_body(req, entries)
    if req.kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": lp,
                  "finish_reason": finish_reason(reason)}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": lp, "finish_reason": finish_reason(reason)}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": req.model, "choices": [choice],
            "usage": usage(metrics.prompt_tokens, metrics.generated_tokens), "timings": timings(metrics)}


def chunk_body(req: GenerationRequest, rid: str, text: str | None, reason: str | None = None,
               role: bool = False, metrics: Any = None, entries: list[dict[str, Any]] | None = None,
               offset: int = 0) -> dict[str, Any]:
    created = int(time.time())
    lp = logprobs_body(req, entries, offset)
    if req.kind == "chat":
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
        if text:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": lp,
                                  "finish_reason": None if reason is None else finish_reason(reason)}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": lp,
                  "finish_reason": None if reason is None else finish_reason(reason)}
        obj = "text_completion"
    out = {"id": rid, "object": obj, "created": created, "model": req.model, "choices": [choice]}
    if metrics is not None:
        out["timings"] = timings(metrics)
    return out


def usage_chunk(req: GenerationRequest, rid: str, metrics: Any) -> dict[str, Any]:
    """The last chunk when stream_options.include_usage is set: no choices, the usage."""
    obj = "chat.completion.chunk" if req.kind == "chat" else "text_completion"
    return {"id": rid, "object": obj, "created": int(time.time()), "model": req.model, "choices": [],
            "usage": usage(metrics.prompt_tokens, metrics.generated_tokens), "timings": timings(metrics)}
