"""A terminal chat on a laptop, embedding edgellm. Copy this file into your project.

    python samples/laptop_cli_chat.py [ARTIFACT]      # default: the embedded SmolLM2 (Q8_0)

Type a message and press Enter; `/reset` clears the conversation, `/stats` prints the last metrics,
`/quit` (or end of input) leaves.
"""
from __future__ import annotations

import argparse
import sys
from typing import TextIO

import edgellm


def chat_loop(model: "edgellm.Model", stdin: TextIO, stdout: TextIO, max_tokens: int = 256,
              system: str | None = None, temperature: float = 0.7) -> int:
    """Read lines, stream answers, keep the history within the context. Returns the number of turns."""
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    turns = 0
    stdout.write("edgellm chat — /reset, /stats, /quit\n")
    for line in stdin:
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
        reply = []
        for chunk in model.chat_stream(history, max_tokens=max_tokens, temperature=temperature,
                                       top_p=0.9, seed=turns):
            reply.append(chunk.text)
            stdout.write(chunk.text)
            stdout.flush()
        stdout.write("\n")
        history.append({"role": "assistant", "content": "".join(reply).strip()})
        turns += 1
    return turns


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", nargs="?", help="artifact folder, .gguf or .onnx (default: embedded SmolLM2)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--system", default=None)
    args = parser.parse_args()
    if args.artifact is None:
        from edgellm.default_model import default_artifact

        args.artifact = default_artifact("Q8_0")
    with edgellm.load(args.artifact, device=args.device) as model:
        chat_loop(model, sys.stdin, sys.stdout, system=args.system)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
