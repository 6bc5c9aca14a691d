"""A real uvicorn server on a loopback ephemeral port, in a background thread, for the server tests."""
from __future__ import annotations

import threading
import time
from typing import Any, Sequence

from edgellm.serving import ServerOptions, create_app


class RunningServer:
    def __init__(self, models: Sequence[Any], **options: Any) -> None:
        import uvicorn

        options.setdefault("model_id", "smollm2")
        self.options = ServerOptions(**options)
        self.app = create_app(models, self.options)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, api_key: str = "none", **kw: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, **kw)

    def health(self) -> dict[str, Any]:
        import httpx

        return httpx.get(self.url + "/health", timeout=10).json()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
