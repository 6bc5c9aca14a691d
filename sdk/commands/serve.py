"""`edgellm serve MODEL_OR_BUNDLE`: an OpenAI-compatible HTTP server on loopback (needs `edgellm[server]`)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..serving import serve

    p = sub.add_parser("serve", help="serve an artifact or bundle over the OpenAI HTTP API (/v1/chat/completions)")
    p.add_argument("model", help="artifact folder, .gguf/.onnx file or bundle")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; 0.0.0.0 wants --api-key)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or profile:NAME")
    p.add_argument("--n-ctx", dest="n_ctx", type=int, default=None, help="context length per slot")
    p.add_argument("--api-key", dest="api_key", default=None, help="require 'Authorization: Bearer KEY'")
    p.add_argument("--max-queue", dest="max_queue", type=int, default=16,
                   help="requests that may wait for a slot; beyond it: 503 with Retry-After")
    p.add_argument("--parallel", type=int, default=1, help="model slots (each loads the model once)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request (queueing and generation)")
    p.add_argument("--max-body", dest="max_body", type=int, default=1 << 20, help="largest request body, bytes")
    p.add_argument("--model-id", dest="model_id", default=None, help="the id clients send (default: folder name)")
    p.set_defaults(func=serve)
