"""A terminal chat on a laptop, embedding edgellm. Copy this file into your project.

    python samples/laptop_cli_chat.py [ARTIFACT]      # default: the embedded SmolLM2 (Q8_0)

Type a message and press Enter; `/reset` clears the conversation, `/stats` prints the last metrics,
`/quit` (or end of input, or Ctrl-C at the prompt) leaves. Ctrl-C while the model answers stops the answer
and keeps the conversation.

How Ctrl-C works here: the answer is generated on a worker thread and the main thread waits on a queue, so
Python's SIGINT handler runs at once (a main thread inside llama.cpp would only see it when the current batch
ends). While an answer streams, the handler cancels the stream's `CancelToken`; the stream ends within one
decode step or prefill chunk with finish_reason "cancelled", and the partial answer stays in the history. At the
prompt Ctrl-C is the usual KeyboardInterrupt, which leaves.
"""
from __future__ import annotations

import argparse
import queue
import signal
import sys
import threading
from typing import Any, TextIO

import edgellm
from edgellm.cancellation import CancelToken

STOPPED = " [stopped]"


def stream_reply(model: "edgellm.Model", history: list[dict[str, str]], stdout: TextIO,
                 **sampling: Any) -> tuple[str, str]:
    """Stream one answer to `stdout`; Ctrl-C stops it. Returns (text, finish_reason)."""
    token = CancelToken()
    chunks: "queue.Queue[Any]" = queue.Queue()

    def work() -> None:
        try:
            for chunk in model.chat_stream(history, cancel=token, **sampling):
                chunks.put(chunk)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            chunks.put(exc)

    # While answering, Ctrl-C only cancels (no KeyboardInterrupt that could land between two lines of this loop);
    # the worker ends within one step and its last chunk ends the loop. Only the main thread can set a handler.
    try:
        previous = signal.signal(signal.SIGINT, lambda _sig, _frame: token.cancel())
    except ValueError:
        previous = None
    worker = threading.Thread(target=work, name="edgellm-reply", daemon=True)
    worker.start()
    reply: list[str] = []
    finish = ""
    try:
        while not finish:
            try:
                item = chunks.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            reply.append(item.text)
            stdout.write(item.text)
            stdout.flush()
            finish = item.finish_reason or ""
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    worker.join()
    return "".join(reply), finish


def chat_loop(model: "edgellm.Model", stdin: TextIO, stdout: TextIO, max_tokens: int = 256,
              system: str | None = None, temperature: float = 0.7) -> int:
    """Read lines, stream answers, keep the history within the context. Returns the number of turns.
    A Ctrl-C during an answer stops it; one anywhere else (at the prompt, or between two statements around an
    answer) leaves quietly."""
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    stdout.write("edgellm chat — /reset, /stats, /quit; Ctrl-C stops an answer\n")
    stdout.flush()
    turns = 0
    try:
        while True:
            line = stdin.readline()
            if not line:                # end of input
                break
            text = line.strip()
            if not text:
                continue
            if text == "/quit":
                break
            if text == "/reset":
                history = history[:1] if system else []
                stdout.write("(history cleared)\n")
                continue
            if text == "/stats":
                stdout.write((model.last_metrics.summary() if model.last_metrics else "(no reply yet)") + "\n")
                continue
            history.append({"role": "user", "content": text})
            while len(model.chat_prompt(history)) + max_tokens > model.n_ctx and len(history) > 2:
                del history[1 if system else 0]  # forget the oldest turn rather than overflow the context
            stdout.write("> ")
            stdout.flush()
            reply, finish = stream_reply(model, history, stdout, max_tokens=max_tokens, temperature=temperature,
                                         top_p=0.9, repeat_penalty=1.1, seed=turns)
            stdout.write((STOPPED if finish == "cancelled" else "") + "\n")
            stdout.flush()
            if finish == "cancelled" and not reply.strip():
                history.pop()           # stopped before a word: forget the question too
            else:                       # a stopped answer stays, as far as it went
                history.append({"role": "assistant", "content": reply.strip()})
            turns += 1
    except KeyboardInterrupt:
        stdout.write("\n")
    return turns


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", nargs="?", help="artifact folder, .gguf or .onnx (default: embedded SmolLM2)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--system", default=None)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args()
    try:
        if args.artifact is None:
            from edgellm.default_model import default_artifact

            args.artifact = default_artifact("Q8_0")
        with edgellm.load(args.artifact, device=args.device) as model:
            chat_loop(model, sys.stdin, sys.stdout, max_tokens=args.max_tokens, system=args.system,
                      temperature=args.temperature)
    except KeyboardInterrupt:       # Ctrl-C while loading
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
