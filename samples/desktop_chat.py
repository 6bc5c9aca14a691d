"""A desktop chat window (Tk, from Python's standard library) embedding edgellm.

    python samples/desktop_chat.py [ARTIFACT]

Generation runs on a worker thread and streams into the window through a queue, so the UI never blocks;
the status bar shows the metrics of the last answer. `ChatSession` holds no UI code, so an app built on
Qt or another toolkit can reuse it as is.
"""
from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path
from typing import Callable

import edgellm


class ChatSession:
    """Conversation state + streaming generation on a background thread."""

    def __init__(self, model: "edgellm.Model", max_tokens: int = 256) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.history: list[dict[str, str]] = []
        self._busy = threading.Lock()

    def ask(self, text: str, on_text: Callable[[str], None], on_done: Callable[[str], None]) -> threading.Thread:
        """Start answering `text`; on_text gets each piece, on_done the metrics summary."""
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("still answering the previous message")
        self.history.append({"role": "user", "content": text})

        def work() -> None:
            try:
                reply = []
                for chunk in self.model.chat_stream(self.history, max_tokens=self.max_tokens, temperature=0.7):
                    reply.append(chunk.text)
                    on_text(chunk.text)
                    if chunk.metrics is not None:
                        on_done(chunk.metrics.summary())
                self.history.append({"role": "assistant", "content": "".join(reply).strip()})
            finally:
                self._busy.release()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        return thread


def run_window(session: ChatSession) -> None:  # pragma: no cover - needs a display
    import tkinter as tk

    root = tk.Tk()
    root.title("edgellm chat")
    log = tk.Text(root, wrap="word", height=24, width=80)
    log.pack(fill="both", expand=True)
    entry = tk.Entry(root)
    entry.pack(fill="x")
    status = tk.Label(root, anchor="w", text="ready")
    status.pack(fill="x")
    events: "queue.Queue[tuple[str, str]]" = queue.Queue()

    def send(_event: object = None) -> None:
        text = entry.get().strip()
        if not text:
            return
        entry.delete(0, "end")
        log.insert("end", f"\nyou: {text}\nmodel: ")
        session.ask(text, lambda t: events.put(("text", t)), lambda m: events.put(("done", m)))

    def pump() -> None:
        while not events.empty():
            kind, value = events.get()
            if kind == "text":
                log.insert("end", value)
                log.see("end")
            else:
                status.config(text=value)
        root.after(30, pump)

    entry.bind("<Return>", send)
    root.after(30, pump)
    root.mainloop()


def main() -> int:  # pragma: no cover - needs a display
    artifact: str | Path
    if len(sys.argv) > 1:
        artifact = sys.argv[1]
    else:
        from edgellm.default_model import default_artifact

        artifact = default_artifact("Q8_0")
    with edgellm.load(artifact) as model:
        run_window(ChatSession(model))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
