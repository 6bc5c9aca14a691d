"""`edgellm serve`: an OpenAI-compatible local server over one loaded artifact (Starlette + uvicorn).

The model is loaded once per slot (`parallel`, default 1: llama.cpp and onnxruntime each run one sequence at a
time per loaded model) and shared: a request takes a free slot or waits in a bounded queue, and a full queue
answers 503 with Retry-After. Generation runs on a worker thread per slot; streamed tokens cross to the event
loop one at a time, and a client that disconnects sets a flag the worker checks after every token, so its
slot is free again within one token time. Install with `pip install 'edgellm[server]'`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

from .cancellation import CancelToken
from .errors import BackendUnavailableError
from .server_metrics import ServerMetrics
from .server_generation import Outcome, run_generation
from .server_schema import (ApiError, GenerationRequest, chunk_body, completion_body, new_id, parse_json,
                            parse_request, usage_chunk)

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_Piece = tuple[str, list[dict[str, Any]]]  # streamed text and its tokens' logprobs entries


@dataclass(frozen=True)
class ServerOptions:
    model_id: str
    api_key: str | None = None
    max_queue: int = 16
    request_timeout_s: float = 300.0
    max_body_bytes: int = 1 << 20
    retry_after_s: int = 2


class Slots:
    """Loaded models handed out one request at a time; waiters queue up to `max_queue` (event-loop side only)."""

    def __init__(self, models: Sequence[Any], max_queue: int, metrics: ServerMetrics, retry_after_s: int) -> None:
        self.models = list(models)
        self._free = deque(self.models)
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self.max_queue, self.metrics, self.retry_after_s = max_queue, metrics, retry_after_s

    @property
    def busy(self) -> int:
        return len(self.models) - len(self._free)

    def _report(self) -> None:
        self.metrics.set_load(len(self._waiters), self.busy)

    async def acquire(self, timeout: float) -> Any:
        if self._free and not self._waiters:
            model = self._free.popleft()
            self._report()
            return model
        if len(self._waiters) >= self.max_queue:
            raise ApiError(503, f"the server is busy ({self.busy} generating, {len(self._waiters)} queued); retry",
                           type_="server_overloaded", headers={"Retry-After": str(self.retry_after_s)})
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._report()
        try:
            return await asyncio.wait_for(fut, timeout)
        except BaseException as exc:
            if fut.done() and not fut.cancelled():  # handed a slot just as we gave up: pass it on
                self.release(fut.result())
            if isinstance(exc, asyncio.TimeoutError):
                raise ApiError(503, f"no model slot became free within {timeout:.0f} s", type_="server_overloaded",
                               headers={"Retry-After": str(self.retry_after_s)}) from None
            raise
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)
            self._report()

    def release(self, model: Any) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(model)
                self._report()
                return
        self._free.append(model)
        self._report()


class _Server:
    def __init__(self, models: Sequence[Any], options: ServerOptions) -> None:
        self.options = options
        self.metrics = ServerMetrics(options.model_id)
        self.slots = Slots(models, options.max_queue, self.metrics, options.retry_after_s)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(models), thread_name_prefix="edgellm-gen")
        self.started = int(time.time())

    # -- plumbing ---------------------------------------------------------------------------------------------
    def check_key(self, request: Any) -> None:
        key = self.options.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                           type_="authentication_error", code="invalid_api_key")

    async def read_body(self, request: Any) -> Any:
        limit = self.options.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
        return parse_json(bytes(body))

    def start(self, model: Any, req: GenerationRequest, emit: Callable[[str, list[dict[str, Any]]], None],
              cancel: CancelToken) -> asyncio.Future[Outcome]:
        """Run the generation on the slot's thread; the slot is released (and metrics taken) when it ends."""
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        fut = loop.run_in_executor(self.pool, run_generation, model, req, emit, cancel,
                                   t0 + self.options.request_timeout_s)

        def done(f: asyncio.Future[Outcome]) -> None:
            self.slots.release(model)
            if not f.cancelled() and f.exception() is None:
                res = f.result()
                self.metrics.observe_generation(res.metrics, time.monotonic() - t0, res.cancelled)

        fut.add_done_callback(done)
        return fut

    # -- endpoints --------------------------------------------------------------------------------------------
    async def generate(self, request: Any, kind: str) -> Any:
        from starlette.responses import JSONResponse, StreamingResponse

        self.check_key(request)
        req = parse_request(await self.read_body(request), kind, self.options.model_id)
        model = await self.slots.acquire(self.options.request_timeout_s)
        cancel = CancelToken()
        rid = new_id(kind)
        if not req.stream:
            try:
                fut = self.start(model, req, lambda _t, _e: None, cancel)
            except BaseException:
                self.slots.release(model)
                raise
            watcher = asyncio.ensure_future(_watch_disconnect(request, cancel))
            try:
                res = await fut
            finally:
                watcher.cancel()
            if res.cancelled:
                raise ApiError(408, "the generation was stopped (client gone or request timeout)",
                               type_="timeout")
            return JSONResponse(completion_body(req, rid, res.text, res.reason, res.metrics, res.entries))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Piece | None] = asyncio.Queue()
        try:
            def emit(text: str, entries: list[dict[str, Any]]) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, (text, entries))

            fut = self.start(model, req, emit, cancel)
        except BaseException:
            self.slots.release(model)
            raise
        fut.add_done_callback(lambda _f: queue.put_nowait(None))
        return StreamingResponse(self._sse(req, rid, queue, fut, cancel), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _sse(self, req: GenerationRequest, rid: str, queue: asyncio.Queue[_Piece | None],
                   fut: asyncio.Future[Outcome], cancel: CancelToken) -> AsyncIterator[str]:
        try:
            if req.kind == "chat":
                yield _event(chunk_body(req, rid, None, role=True))
            sent = 0  # characters streamed so far (the completions layout's text_offset)
            while (item := await queue.get()) is not None:
                text, entries = item
                yield _event(chunk_body(req, rid, text, entries=entries, offset=sent))
                sent += len(text)
            try:
                res = fut.result()
            except ApiError as exc:
                yield _event(exc.body())
                return
            except Exception as exc:  # noqa: BLE001 - reported in-band: the headers are already sent
                log.exception("generation failed")
                yield _event(ApiError(500, f"generation failed: {exc}", type_="server_error").body())
                return
            if res.metrics is not None:
                yield _event(chunk_body(req, rid, None, reason=res.reason, metrics=res.metrics))
                if req.include_usage:
                    yield _event(usage_chunk(req, rid, res.metrics))
            yield "data: [DONE]\n\n"
        finally:
            cancel.set()  # a disconnect closes this generator: the worker stops after its current token

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.options.model_id, "slots": len(self.slots.models),
                "busy": self.slots.busy, "queued": len(self.slots._waiters)}

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.options.model_id, "object": "model", "created": self.started,
                                            "owned_by": "edgellm"}]}


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _watch_disconnect(request: Any, cancel: CancelToken) -> None:
    while not cancel.is_set():
        if await request.is_disconnected():
            cancel.set()
            return
        await asyncio.sleep(0.2)


@contextlib.contextmanager
def _sigterm_is_a_clean_exit() -> Iterator[None]:
    """uvicorn drains on SIGTERM, then re-raises it; with this handler behind it the process exits 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def bind_warning(host: str, api_key: str | None) -> str | None:
    """The loud warning for a server reachable beyond this machine without a key (None when there is none)."""
    if host in LOOPBACK or api_key:
        return None
    return (f"serving on {host} WITHOUT an API key: anyone who can reach this port can use the model "
            "(pass --api-key, or bind 127.0.0.1)")


def create_app(models: Sequence[Any], options: ServerOptions) -> Any:
    """The ASGI app over already loaded models (one per slot). The caller closes the models."""
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, PlainTextResponse, Response
        from starlette.routing import Route
    except ImportError as exc:
        raise BackendUnavailableError(f"the server needs Starlette ({exc})", "pip install 'edgellm[server]'") from None
    server = _Server(models, options)

    def endpoint(name: str, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def wrapped(request: Request) -> Response:
            try:
                response = await handler(request)
            except ApiError as exc:
                response = JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
            except Exception as exc:  # noqa: BLE001 - one bad request must never take the server down
                log.exception("%s failed", name)
                response = JSONResponse(ApiError(500, f"internal error: {type(exc).__name__}",
                                                 type_="server_error").body(), status_code=500)
            server.metrics.count_request(name, response.status_code)
            return response
        return wrapped

    async def chat(request: Request) -> Any:
        return await server.generate(request, "chat")

    async def completions(request: Request) -> Any:
        return await server.generate(request, "completion")

    async def list_models(request: Request) -> Any:
        server.check_key(request)
        return JSONResponse(server.models())

    async def health(request: Request) -> Any:
        return JSONResponse(server.health())

    async def prometheus(request: Request) -> Any:
        server.check_key(request)
        return PlainTextResponse(server.metrics.render(), media_type="text/plain; version=0.0.4")

    routes = [Route("/v1/chat/completions", endpoint("chat", chat), methods=["POST"]),
              Route("/v1/completions", endpoint("completions", completions), methods=["POST"]),
              Route("/v1/models", endpoint("models", list_models), methods=["GET"]),
              Route("/health", endpoint("health", health), methods=["GET"]),
              Route("/metrics", endpoint("metrics", prometheus), methods=["GET"])]
    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        for model in server.slots.models:  # in-flight generations were drained by uvicorn: stop the rest
            getattr(model, "cancel", lambda: None)()
        server.pool.shutdown(wait=False, cancel_futures=True)

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.edgellm = server
    return app


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8080, device: str = "auto",
          n_ctx: int | None = None, api_key: str | None = None, max_queue: int = 16, parallel: int = 1,
          timeout: float = 300.0, max_body: int = 1 << 20, model_id: str | None = None) -> int:
    """Load `model` (artifact or bundle) `parallel` times and serve it until SIGINT/SIGTERM (in-flight requests
    drain first). Binds to loopback unless `host` says otherwise."""
    try:
        import uvicorn
    except ImportError as exc:
        raise BackendUnavailableError(f"the server needs uvicorn ({exc})", "pip install 'edgellm[server]'") from None
    from .errors import OptionError
    from .loading import load

    if parallel < 1 or max_queue < 0 or timeout <= 0 or max_body < 1024:
        raise OptionError("parallel >= 1, max_queue >= 0, timeout > 0 and max_body >= 1024 are required")
    warning = bind_warning(host, api_key)
    if warning:
        log.warning(warning)
    path = Path(model)
    name = model_id or (path.stem if path.is_file() else path.name)
    threads = None
    if parallel > 1:
        from .planning import resolve_device

        threads = max(1, resolve_device(device).max_threads // parallel)
    models = [load(model, device=device, n_ctx=n_ctx, threads=threads) for _ in range(parallel)]
    try:
        app = create_app(models, ServerOptions(model_id=name, api_key=api_key, max_queue=max_queue,
                                               request_timeout_s=timeout, max_body_bytes=max_body))
        log.warning("edgellm serve: %s on http://%s:%d/v1 (%d slot(s), queue %d)", name, host, port, parallel,
                    max_queue)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                               timeout_graceful_shutdown=int(timeout)))
        with _sigterm_is_a_clean_exit():
            server.run()  # returns once in-flight requests drained after SIGINT/SIGTERM
    finally:
        for m in models:
            m.close()
    return 0
