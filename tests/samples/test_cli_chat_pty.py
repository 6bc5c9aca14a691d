"""samples/laptop_cli_chat.py in a real pseudo-terminal with the real SmolLM2: Ctrl-C (the terminal's ^C, so the
kernel sends SIGINT to the foreground process group) during an answer stops it without a traceback, the chat
goes on and answers the next question, and Ctrl-C at the prompt exits 0."""
from __future__ import annotations

import os
import pty
import re
import select
import signal
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "laptop_cli_chat.py"


class Pty:
    def __init__(self, argv: list[str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - the child
            os.execv(argv[0], argv)
        self.out = ""

    def expect(self, pattern: str, timeout: float, since: int = 0) -> re.Match[str]:
        end = time.monotonic() + timeout
        while True:
            m = re.compile(pattern).search(self.out, since)
            if m:
                return m
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; output so far:\n{self.out[-3000:]}")
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:   # the child closed the terminal
                    data = b""
                if not data:
                    raise AssertionError(f"the chat exited while waiting for {pattern!r}:\n{self.out[-3000:]}")
                self.out += data.decode("utf-8", errors="replace")

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                if ready:
                    self.out += os.read(self.fd, 4096).decode("utf-8", errors="replace")
            except OSError:
                time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"the chat did not exit:\n{self.out[-3000:]}")


@pytest.mark.slow
def test_ctrl_c_stops_the_answer_keeps_the_chat_and_exits_cleanly_at_the_prompt(smollm2_artifact) -> None:  # noqa: ANN001
    chat = Pty([sys.executable, str(SAMPLE), str(smollm2_artifact("Q4_K_M")), "--max-tokens", "400",
                "--temperature", "0"])
    try:
        chat.expect(r"Ctrl-C stops an answer", timeout=120)
        chat.send("Write a long story about a dragon who learns to bake bread.\n")
        first = chat.expect(r"> ", timeout=60)
        chat.expect(r"> (\S+\s+){5}", timeout=60, since=first.start())   # five words into the answer
        t0 = time.monotonic()
        chat.send("\x03")                                                 # ^C: SIGINT from the terminal
        stopped = chat.expect(r"\[stopped\]\r?\n", timeout=15, since=first.start())
        latency = time.monotonic() - t0
        chat.send("What is the capital of France?\n")
        second = chat.expect(r"> ", timeout=30, since=stopped.end())
        answer = chat.expect(r"> ([^\r\n]*\w[^\r\n]*)\r?\n", timeout=120, since=second.start())
        assert "[stopped]" not in answer.group(1)
        chat.send("/stats\n")
        chat.expect(r"tok/s", timeout=30, since=answer.end())
        chat.send("\x03")                                                 # ^C at the prompt: leave
        code = chat.wait(30)
    finally:
        if chat.pid:
            try:
                os.kill(chat.pid, signal.SIGKILL)
                os.waitpid(chat.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    assert code == 0, chat.out[-2000:]
    assert "Traceback" not in chat.out and "KeyboardInterrupt" not in chat.out, chat.out[-2000:]
    assert latency < 10, latency      # one decode step on an idle laptop; generous for a shared CI machine
