"""`edgellm convert MODEL OUTPUT --format gguf|onnx --quant TYPE`."""
from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

from ..converters.gguf_types import QUANT_TYPES


def _onnx_cli() -> tuple[tuple[str, ...], tuple[tuple[str, dict[str, Any]], ...]]:
    try:
        onnx = importlib.import_module("edgellm.converters.onnx")
    except ImportError:
        return (), ()
    return tuple(getattr(onnx, "ONNX_QUANTS", ())), tuple(getattr(onnx, "ONNX_CLI_OPTIONS", ()))


def run_convert(model: str, output: str, format: str = "gguf", quant: str = "Q8_0", json_out: bool = False,  # noqa: A002
                **options: Any) -> int:
    from ..converting import convert

    _, onnx_options = _onnx_cli()
    onnx_dests = {kw.get("dest", flag.lstrip("-").replace("-", "_")) for flag, kw in onnx_options}
    options = {k: v for k, v in options.items()
               if v is not None and (format == "onnx" or k not in onnx_dests)}
    if quant.lower() == "auto":
        from ..autoquant import autoquant

        result = autoquant(model, output, formats=(format,), **options)
    else:
        result = convert(model, output, format=format, quant=quant, progress=not json_out, **options)
    fallbacks = getattr(result, "fallbacks", []) or []
    if json_out:
        print(json.dumps({"path": str(result.path), "manifest": str(result.manifest_path),
                          "tensor_types": getattr(result, "tensor_types", {}), "fallbacks": fallbacks}, indent=2))
        return 0
    print(f"wrote {result.path}")
    print(f"manifest {result.manifest_path}")
    types = getattr(result, "tensor_types", None)
    if types:
        print("tensor types: " + ", ".join(f"{k} x{v}" for k, v in sorted(types.items())))
    if fallbacks:
        kinds: dict[str, int] = {}
        for f in fallbacks:
            kinds[f["type"]] = kinds.get(f["type"], 0) + 1
        print(f"{len(fallbacks)} tensors fell back (rows not divisible by the block size): "
              + ", ".join(f"{n} -> {k}" for k, n in sorted(kinds.items())))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    onnx_quants, onnx_options = _onnx_cli()
    p = sub.add_parser("convert", help="convert a Hugging Face folder to GGUF or ONNX",
                       description="Convert an HF model folder (config.json, *.safetensors, tokenizer.json) into "
                                   "a deployable artifact folder with an edgellm.json manifest.")
    p.add_argument("model", help="Hugging Face model folder")
    p.add_argument("output", help="artifact folder to create")
    p.add_argument("--format", choices=("gguf", "onnx"), default="gguf")
    choices = ", ".join(QUANT_TYPES) + (f"; onnx: {', '.join(onnx_quants)}" if onnx_quants else "")
    p.add_argument("--quant", default="Q8_0", help=f"gguf: {choices}; or 'auto' (measured)")
    p.add_argument("--pre-tokenizer", dest="pre_tokenizer", default=None,
                   help="gguf: override the detected llama.cpp pre-tokenizer (only if you know it)")
    p.add_argument("--context-length", dest="context_length", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="threads for llama.cpp's quantizer")
    p.add_argument("--json", dest="json_out", action="store_true", help="print the result as JSON")
    for flag, kwargs in onnx_options:
        p.add_argument(flag, **{**kwargs, "default": None} if "action" not in kwargs else kwargs)
    p.set_defaults(func=run_convert)
