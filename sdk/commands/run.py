"""`edgellm run ARTIFACT PROMPT`: stream text, then a metrics line (`--json` for machines)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..deprecation import add_n_ctx
from ..runtimes.base import DEFAULT_SAMPLING as D


def run_generate(path: str, prompt: str, max_tokens: int = D.max_tokens, temperature: float = D.temperature,
                 top_k: int = D.top_k, top_p: float = D.top_p, min_p: float = D.min_p,
                 repeat_penalty: float = D.repeat_penalty, seed: int | None = None,
                 stop: list[str] | None = None, chat: bool = False, device: str = "auto", threads: int | None = None,
                 n_ctx: int | None = None, json_output: bool = False, template_kwargs: dict[str, Any] | None = None,
                 enable_thinking: bool | None = None) -> int:
    from ..loading import load

    sampling: dict[str, Any] = dict(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                    repeat_penalty=repeat_penalty, seed=seed, stop=tuple(stop or ()))
    with load(path, device=device, threads=threads, n_ctx=n_ctx) as model:
        kwargs = {**(template_kwargs or {}), **({} if enable_thinking is None else {"enable_thinking": enable_thinking})}
        chunks = (model.chat_stream([{"role": "user", "content": prompt}], template_kwargs=kwargs, **sampling) if chat
                  else model.stream(prompt, **sampling))
        text, final = [], None
        for chunk in chunks:
            text.append(chunk.text)
            if not json_output:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
            if chunk.finish_reason is not None:
                final = chunk
    assert final is not None and final.metrics is not None
    if json_output:
        print(json.dumps({"text": "".join(text), "finish_reason": final.finish_reason,
                          "metrics": final.metrics.to_dict()}, indent=2))
    else:
        print()
        print(final.metrics.summary(), file=sys.stderr)
    return 0


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object of template variables")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="generate text from an artifact, with metrics")
    p.add_argument("path", metavar="ARTIFACT", help="artifact folder, .gguf or .onnx file, or bundle folder")
    p.add_argument("prompt", help="the prompt text (with --chat: the user's message)")
    p.add_argument("-n", "--max-tokens", dest="max_tokens", type=int, default=D.max_tokens,
                   help="most tokens to generate (default %(default)s)")
    p.add_argument("--temperature", type=float, default=D.temperature, help="sampling temperature; 0 = greedy (default %(default)s)")
    p.add_argument("--top-k", dest="top_k", type=int, default=D.top_k,
                   help="sample among the K most likely tokens; 0 = all (default %(default)s)")
    p.add_argument("--top-p", dest="top_p", type=float, default=D.top_p,
                   help="nucleus sampling: smallest set of tokens with this total probability (default %(default)s)")
    p.add_argument("--min-p", dest="min_p", type=float, default=D.min_p,
                   help="drop tokens less likely than this fraction of the top token (default %(default)s)")
    p.add_argument("--repeat-penalty", dest="repeat_penalty", type=float, default=D.repeat_penalty,
                   help="penalty for repeating recent tokens; 1.0 = off (default %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--chat-template-kwargs", dest="template_kwargs", type=_json_object, default=None, metavar="JSON",
                   help='--chat: variables for the chat template, e.g. \'{"enable_thinking": false}\'')
    p.add_argument("--no-think", dest="enable_thinking", action="store_false", default=None,
                   help="--chat: turn a reasoning model's thinking off (Qwen3, SmolLM3: enable_thinking=false)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or profile:NAME")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the device plan's)")
    add_n_ctx(p, "--ctx", help="context size in tokens (default: the artifact's, at most 4096)")
    p.add_argument("--json", dest="json_output", action="store_true",
                   help="print the text, finish reason and metrics as JSON (nothing streamed)")
    p.set_defaults(func=run_generate)
