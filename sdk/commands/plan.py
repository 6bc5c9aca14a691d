"""`edgellm plan MODEL [--device ...] [--max-memory 2GiB] [--min-tps N] [--max-quality-loss X] [--n-ctx N]`."""
from __future__ import annotations

import argparse
import json

from ..deprecation import add_n_ctx


def plan(model: str, device: str = "auto", max_memory: str | None = None, min_tps: str | None = None,
         max_quality_loss: str | None = None, n_ctx: int | None = None, json_output: bool = False) -> int:
    from ..planning import plan as make_plan

    result = make_plan(model, device=device, max_memory=max_memory, min_tps=min_tps,
                       max_quality_loss=max_quality_loss, n_ctx=n_ctx)
    if json_output:
        print(json.dumps({
            "model": result.model, "device": result.device.name, "format": result.format, "quant": result.quant,
            "runtime": result.runtime, "provider": result.provider, "threads": result.threads,
            "n_gpu_layers": result.n_gpu_layers, "n_ctx": result.n_ctx,
            "memory_bytes": {"host": result.memory.host_bytes, "device": result.memory.device_bytes,
                             "limit": result.memory_limit_bytes,
                             "terms": [[t.name, t.where, t.bytes] for t in result.memory.terms]},
            "predicted_decode_tps": round(result.predicted_decode_tps, 1), "quality_loss": result.quality_loss,
            "needs_conversion": result.needs_conversion, "reasons": list(result.reasons)}, indent=2))
        return 0
    print(result.summary())
    for reason in result.reasons:
        print(f"  - {reason}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help="plan format, quant, threads and memory for a model on a device")
    p.add_argument("model", help="HF folder, .gguf/.onnx file, or artifact folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or profile:NAME")
    p.add_argument("--max-memory", help="memory budget, e.g. 2GiB or 512MB")
    p.add_argument("--min-tps", help="minimum decode tokens/s")
    p.add_argument("--max-quality-loss", help="maximum quality loss, e.g. 0.02 or 2%%")
    add_n_ctx(p, "--context", help="context size to plan for, in tokens (default: the largest that fits, up to 4096)")
    p.add_argument("--json", dest="json_output", action="store_true", help="print JSON")
    p.set_defaults(func=plan)
