"""`edgellm serve` as a process: SIGTERM drains the request in flight and exits cleanly; binding warnings."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from edgellm.serving import bind_warning


def test_bind_warning_only_off_loopback_without_a_key() -> None:
    assert bind_warning("127.0.0.1", None) is None and bind_warning("::1", None) is None
    assert bind_warning("0.0.0.0", "sk-1") is None
    warning = bind_warning("0.0.0.0", None)
    assert warning is not None and "WITHOUT an API key" in warning


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sigterm_drains_the_stream_in_flight(smollm2_artifact) -> None:  # noqa: ANN001
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgellm.cli", "serve", str(smollm2_artifact("Q8_0")),
                             "--port", str(port), "--n-ctx", "512", "--model-id", "smollm2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.2)
        body = {"model": "smollm2", "stream": True, "max_tokens": 48, "temperature": 0,
                "messages": [{"role": "user", "content": "Count from one to twenty in words."}]}
        events = []
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120) as r:
            lines = r.iter_lines()
            for line in lines:  # the answer has started: now ask the server to stop
                if line.startswith("data: {") and '"content"' in line:
                    events.append(line)
                    break
            proc.send_signal(signal.SIGTERM)
            events += [line for line in lines if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"  # the request in flight ran to its end
        final = json.loads(events[-2][6:])
        assert final["choices"][0]["finish_reason"] in ("stop", "length") and final["timings"]["decode_tokens_per_s"]
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
