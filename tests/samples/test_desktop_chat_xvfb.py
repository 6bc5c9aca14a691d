"""samples/desktop_chat.py as a user runs it: a real Tk window under Xvfb, the real SmolLM2, keys typed with
xdotool. Send a question, stop it (Esc), press Enter while an answer streams (nothing is dropped or raised),
send again, close the window mid-answer through the window manager's WM_DELETE_WINDOW: the process exits 0.

EDGELLM_UPDATE_SCREENSHOT=1 also writes docs/desktop-chat.png (the window while an answer streams)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.samples import xvfb

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "desktop_chat.py"


class Log:
    """The sample's --verbose stderr, collected on a thread."""

    def __init__(self, stream) -> None:  # noqa: ANN001
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:  # noqa: ANN001
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def wait_count(self, text: str, n: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        while self.count(text) < n:
            if time.monotonic() > end:
                raise AssertionError(f"waited for {n} x {text!r}; log:\n" + "\n".join(self.lines[-40:]))
            time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.skipif(xvfb.available() is not None, reason=f"needs Xvfb, xdotool, libX11: missing "
                                                          f"{xvfb.available()} (apt-get install xvfb xdotool)")
def test_desktop_chat_send_stop_send_close_mid_answer(smollm2_artifact, tmp_path: Path) -> None:  # noqa: ANN001
    server = xvfb.Xvfb(960, 640)   # the window's own size: the screenshot is the window
    proc = None
    try:
        proc = subprocess.Popen([sys.executable, str(SAMPLE), str(smollm2_artifact("Q4_K_M")), "--verbose",
                                 "--max-tokens", "400"], env=server.env, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT)
        log = Log(proc.stderr)
        window = server.find_window("^edgellm chat$")[0]
        log.wait_count("loaded", 1, timeout=120)
        server.xdotool("windowfocus", "--sync", window)
        server.xdotool("type", "--delay", "10", "Write a long story about a dragon who learns to bake bread.")
        server.xdotool("key", "Return")
        log.wait_count("first token", 1, timeout=60)
        time.sleep(1.0)                                   # tokens are streaming now
        server.xdotool("key", "Escape")                   # Stop
        log.wait_count("answer cancelled", 1, timeout=15)

        server.xdotool("type", "--delay", "10", "Tell me a long story about a brave knight and a castle.")
        server.xdotool("key", "Return")
        log.wait_count("first token", 2, timeout=60)
        time.sleep(1.5)
        if xvfb.can_screenshot():                         # the second answer streaming (the first one pays warm-up)
            shot = tmp_path / "desktop-chat.png"
            server.screenshot(shot)
            assert shot.stat().st_size > 5000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if os.environ.get("EDGELLM_UPDATE_SCREENSHOT"):
                (ROOT / "docs" / "desktop-chat.png").write_bytes(shot.read_bytes())
        server.xdotool("type", "--delay", "10", "typed while answering")
        server.xdotool("key", "Return")                   # refused quietly: the text stays in the box
        time.sleep(1.0)
        assert log.count("answer started") == 2
        server.request_close(window)                      # the window manager's close button, mid-answer
        code = proc.wait(timeout=60)
        log._thread.join(5)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()
    text = "\n".join(log.lines)
    assert code == 0, text[-3000:]
    assert log.count("answer cancelled") == 2, text[-3000:]      # Esc, then closing mid-answer
    assert "answer cancelled after 0 tokens" not in text           # both were stopped while streaming
    assert log.count("closed") >= 1
    assert "Traceback" not in text and "Exception" not in text and "still answering" not in text, text[-3000:]
