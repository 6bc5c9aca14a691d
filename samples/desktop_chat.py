"""A desktop chat window (Tk, from Python's standard library) embedding edgellm.

    python samples/desktop_chat.py [ARTIFACT] [--verbose]

Enter (or Send) asks, Esc (or Stop) stops the answer, Ctrl+Q or closing the window leaves, also mid-answer.
Generation runs on a worker thread and streams into the window through a queue, so the UI never blocks; the
status line shows the state, live tokens/s, time to first token and the process's memory. `ChatSession` holds
no UI code, so an app built on Qt or another toolkit can reuse it as is. --verbose logs each answer's start and
end to stderr (the Xvfb test reads them).
"""
from __future__ import annotations

import argparse
import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

import edgellm
from edgellm.cancellation import CancelToken

log = logging.getLogger("desktop_chat")

# Sampling when the artifact carries no generation_config.json: a little randomness, and a repeat penalty
# (small models loop without one).
DEFAULT_SAMPLING: dict[str, Any] = {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1}
_HF_TO_EDGELLM = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                  "repetition_penalty": "repeat_penalty"}


def sampling_defaults(artifact: str | Path) -> dict[str, Any]:
    """The model's own sampling (generation_config.json beside the artifact: ONNX artifacts and HF-derived folders
    carry it) over DEFAULT_SAMPLING. A config that says do_sample=false means greedy."""
    params = dict(DEFAULT_SAMPLING)
    path = Path(artifact)
    folder = path if path.is_dir() else path.parent
    try:
        cfg = json.loads((folder / "generation_config.json").read_text())
    except (OSError, ValueError):
        return params
    if not isinstance(cfg, dict):
        return params
    for hf, ours in _HF_TO_EDGELLM.items():
        value = cfg.get(hf)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            params[ours] = value
    if cfg.get("do_sample") is False:
        params["temperature"] = 0.0
    return params


class ChatSession:
    """Conversation state + streaming generation on a background thread, with Stop."""

    def __init__(self, model: "edgellm.Model", max_tokens: int = 256,
                 sampling: dict[str, Any] | None = None) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.sampling = dict(sampling if sampling is not None else DEFAULT_SAMPLING)
        self.history: list[dict[str, str]] = []
        self._busy = threading.Lock()
        self._token: CancelToken | None = None
        self._worker: threading.Thread | None = None
        self.last_finish: str | None = None      # the last answer's finish_reason ("cancelled" when stopped)

    @property
    def busy(self) -> bool:
        return self._busy.locked()

    def ask(self, text: str, on_text: Callable[[str], None], on_done: Callable[[str], None]) -> threading.Thread:
        """Start answering `text`; on_text gets each piece (one per token), on_done the metrics summary. Raises
        RuntimeError while the previous answer is still streaming (the window disables Send meanwhile)."""
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("still answering the previous message")
        self.history.append({"role": "user", "content": text})
        token = self._token = CancelToken()

        def work() -> None:
            summary, finish, reply = "", "error", list[str]()
            try:
                log.info("answer started")
                t0 = time.perf_counter()
                for chunk in self.model.chat_stream(self.history, max_tokens=self.max_tokens, cancel=token,
                                                    **self.sampling):
                    if not reply and chunk.token is not None:
                        log.info("first token after %.0f ms", (time.perf_counter() - t0) * 1000)
                    reply.append(chunk.text)
                    on_text(chunk.text)
                    if chunk.metrics is not None:
                        finish, summary = chunk.finish_reason or "stop", chunk.metrics.summary()
                self.history.append({"role": "assistant", "content": "".join(reply).strip()})
            except edgellm.EdgeLLMError as exc:   # e.g. the model was closed under us: end quietly
                summary = exc.message
            finally:
                self.last_finish = finish
                self._busy.release()
            log.info("answer %s after %d tokens", finish, max(0, len(reply) - 1))
            on_done(summary)                      # after release: the window may send again at once

        self._worker = threading.Thread(target=work, name="edgellm-answer", daemon=True)
        self._worker.start()
        return self._worker

    def stop(self, wait: float = 0.0) -> None:
        """Cancel the answer in flight (it ends within one token or prefill chunk); optionally wait for it."""
        token, worker = self._token, self._worker
        if token is not None:
            token.cancel()
        if wait and worker is not None:
            worker.join(wait)


def run_window(session: ChatSession) -> None:  # pragma: no cover - needs a display (tests/samples runs it under Xvfb)
    import tkinter as tk
    from tkinter import ttk

    from edgellm.metrics import current_rss

    root = tk.Tk()
    root.title("edgellm chat")
    root.geometry("960x640+0+0")
    root.minsize(480, 320)
    frame = ttk.Frame(root, padding=6)
    frame.pack(fill="both", expand=True)
    transcript = tk.Text(frame, wrap="word", state="disabled", takefocus=0, font=("TkDefaultFont", 11))
    transcript.tag_configure("you", foreground="#1a4f8b", font=("TkDefaultFont", 11, "bold"))
    transcript.tag_configure("note", foreground="#888888")
    transcript.pack(fill="both", expand=True)
    row = ttk.Frame(frame)
    row.pack(fill="x", pady=(6, 0))
    entry = ttk.Entry(row)
    entry.pack(side="left", fill="x", expand=True)
    send_button = ttk.Button(row, text="Send")
    stop_button = ttk.Button(row, text="Stop", state="disabled")
    send_button.pack(side="left", padx=(6, 0))
    stop_button.pack(side="left", padx=(6, 0))
    # width=1: the label never asks for more room than the window has (long text is cut, not the window widened)
    status = ttk.Label(frame, anchor="w", width=1, text="ready")
    status.pack(fill="x", pady=(4, 0))
    events: "queue.Queue[tuple[str, str]]" = queue.Queue()
    live = {"sent": 0.0, "first": 0.0, "tokens": 0}

    def write(text: str, tag: str | None = None) -> None:
        transcript.configure(state="normal")      # read-only for the user, writable for us
        transcript.insert("end", text, tag or ())
        transcript.configure(state="disabled")
        transcript.see("end")

    def memory() -> str:
        rss = current_rss()
        return f"{rss / 2**20:.0f} MiB" if rss else "n/a"

    def send(_event: object = None) -> str:
        text = entry.get().strip()
        if not text:
            return "break"
        if session.busy:                           # keep what was typed; say why nothing happened
            status.configure(text="still answering: Stop (Esc) or wait, your message stays in the box")
            return "break"
        entry.delete(0, "end")
        write(f"\nyou: {text}\n", "you")
        write("model: ")
        live.update(sent=time.perf_counter(), first=0.0, tokens=0)
        send_button.configure(state="disabled")
        stop_button.configure(state="normal")
        status.configure(text="generating… (prefill)")
        session.ask(text, lambda t: events.put(("text", t)), lambda m: events.put(("done", m)))
        return "break"

    def stop(_event: object = None) -> str:
        if session.busy:
            session.stop()
            status.configure(text="stopping…")
        return "break"

    def finished() -> None:
        m = session.model.last_metrics
        reason = "stopped" if session.last_finish == "cancelled" else "ready"
        send_button.configure(state="normal")
        stop_button.configure(state="disabled")
        if m is None:
            status.configure(text="ready")
            return
        tps = f"{m.decode_tps:.1f} tok/s" if m.decode_tps else "n/a tok/s"
        ttft = f"TTFT {m.ttft_s * 1000:.0f} ms" if m.ttft_s else "TTFT n/a"
        status.configure(text=f"{reason} · {m.generated_tokens} tokens · {tps} · {ttft} · memory {memory()}")

    def pump() -> None:
        now = time.perf_counter()
        while True:
            try:
                kind, value = events.get_nowait()
            except queue.Empty:
                break
            if kind == "text":
                if value:
                    write(value)
                live["tokens"] += 1
                live["first"] = live["first"] or now
            else:
                if session.last_finish == "cancelled":
                    write(" [stopped]", "note")
                finished()
        if session.busy and live["first"]:
            spent = now - live["first"]
            tps = f"{(live['tokens'] - 1) / spent:.1f} tok/s" if spent > 0 and live["tokens"] > 1 else "… tok/s"
            status.configure(text=f"generating · {live['tokens']} tokens · {tps} · "
                                  f"TTFT {(live['first'] - live['sent']) * 1000:.0f} ms · memory {memory()}")
        root.after(50, pump)

    def close(_event: object = None) -> None:
        session.stop(wait=5.0)                     # the answer ends within one step; the model is closed by main
        root.destroy()

    send_button.configure(command=send)
    stop_button.configure(command=stop)
    entry.bind("<Return>", send)
    root.bind("<Escape>", stop)
    root.bind("<Control-q>", close)
    root.protocol("WM_DELETE_WINDOW", close)
    entry.focus_set()
    root.after(50, pump)
    root.mainloop()


def main() -> int:  # pragma: no cover - needs a display
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", nargs="?", help="artifact folder, .gguf or .onnx (default: embedded SmolLM2)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--verbose", action="store_true", help="log each answer's start and end to stderr")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    artifact: str | Path
    if args.artifact:
        artifact = args.artifact
    else:
        from edgellm.default_model import default_artifact

        artifact = default_artifact("Q8_0")
    with edgellm.load(artifact) as model:
        log.info("loaded %r", model)
        run_window(ChatSession(model, max_tokens=args.max_tokens, sampling=sampling_defaults(model.artifact)))
    log.info("closed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
