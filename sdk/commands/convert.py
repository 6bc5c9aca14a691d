"""`edgellm convert MODEL OUTPUT --format gguf|onnx --quant TYPE`."""
from __future__ import annotations

import argparse
import importlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..converters.gguf_types import QUANT_TYPES


def _onnx_cli() -> tuple[tuple[str, ...], tuple[tuple[str, dict[str, Any]], ...]]:
    try:
        onnx = importlib.import_module("edgellm.converters.onnx")
    except ImportError:
        return (), ()
    return tuple(getattr(onnx, "ONNX_QUANTS", ())), tuple(getattr(onnx, "ONNX_CLI_OPTIONS", ()))


def run_convert(model: str, output: str, format: str = "gguf", quant: str = "Q8_0", json_out: bool = False,  # noqa: A002
                max_kld: float | None = None, max_ppl_increase: float | None = None, min_tps: float | None = None,
                prefer: str = "smallest", prune_layers: str | None = None, **options: Any) -> int:
    from ..converting import convert
    from ..errors import ConversionError

    _, onnx_options = _onnx_cli()
    onnx_dests = {kw.get("dest", flag.lstrip("-").replace("-", "_")) for flag, kw in onnx_options}
    options = {k: v for k, v in options.items()
               if v is not None and (format == "onnx" or k not in onnx_dests)}
    if prune_layers is not None and format != "gguf":
        raise ConversionError("--prune-layers works on GGUF artifacts", "use --format gguf")
    if prune_layers is not None and quant.lower() == "auto":
        raise ConversionError("--quant auto and --prune-layers each spend the quality budget; use one at a time",
                              "pick the quant with --quant auto first, then prune that quant")
    target = output if prune_layers is None else tempfile.mkdtemp(prefix="edgellm-unpruned-")
    try:
        if quant.lower() == "auto":
            from ..quant_search import autoquant

            result = autoquant(model, target, max_kld=max_kld, max_ppl_increase=max_ppl_increase, min_tps=min_tps,
                               formats=(format,), prefer=prefer, **options)
        else:
            result = convert(model, target if prune_layers is None else str(Path(target) / "a"), format=format,
                             quant=quant, progress=not json_out, **options)
        if prune_layers is not None:
            return _prune(Path(result.path), output, prune_layers, max_kld, max_ppl_increase, json_out)
    finally:
        if prune_layers is not None:
            shutil.rmtree(target, ignore_errors=True)
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


def _prune(artifact: Path, output: str, layers: str, max_kld: float | None, max_ppl_increase: float | None,
           json_out: bool) -> int:
    from ..pruning import prune

    count: int | str = "auto" if layers == "auto" else int(layers)
    r = prune(artifact, output, layers=count, max_kld=max_kld, max_ppl_increase=max_ppl_increase)
    summary = {"path": str(r.output), "dropped": list(r.dropped), "size_before": r.size_before,
               "size_after": r.size_after, "kld": r.kld, "ppl_before": r.ppl_before, "ppl_after": r.ppl_after,
               "top1": r.top1, "decode_tps_before": r.decode_tps_before, "decode_tps_after": r.decode_tps_after}
    if json_out:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"wrote {r.output}")
    print(f"dropped blocks {', '.join(map(str, r.dropped)) or 'none'}: size {r.size_before / 2**20:.1f} -> "
          f"{r.size_after / 2**20:.1f} MiB, PPL {r.ppl_before:.2f} -> {r.ppl_after:.2f}, mean KLD {r.kld:.4f}, "
          f"top-1 {r.top1:.1%}")
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
    budget = p.add_argument_group("measured choices (--quant auto, --prune-layers)")
    budget.add_argument("--max-kld", dest="max_kld", type=float, default=None,
                        help="largest mean KL divergence vs the F16 reference to accept")
    budget.add_argument("--max-ppl-increase", dest="max_ppl_increase", type=float, default=None,
                        help="largest relative perplexity increase to accept (0.05 = 5%%)")
    budget.add_argument("--min-tps", dest="min_tps", type=float, default=None,
                        help="--quant auto: slowest decode tokens/s to accept on this machine")
    budget.add_argument("--prefer", choices=("smallest", "fastest"), default="smallest",
                        help="--quant auto: which passing candidate to keep")
    budget.add_argument("--prune-layers", dest="prune_layers", default=None, metavar="N|auto",
                        help="drop the N cheapest blocks (ranked by measured KLD), or as many as --max-kld allows")
    for flag, kwargs in onnx_options:
        p.add_argument(flag, **{**kwargs, "default": None} if "action" not in kwargs else kwargs)
    p.set_defaults(func=run_convert)
