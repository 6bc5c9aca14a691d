"""`edgellm convert MODEL OUTPUT --format gguf|onnx --quant TYPE`."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..converters.gguf_types import QUANT_TYPES
from ..converters.manifest import MANIFEST_NAME
from ..converting import ConvertResult


def _onnx_cli() -> tuple[tuple[str, ...], tuple[tuple[str, dict[str, Any]], ...]]:
    try:
        onnx = importlib.import_module("edgellm.converters.onnx")
    except ImportError:
        return (), ()
    return tuple(getattr(onnx, "ONNX_QUANTS", ())), tuple(getattr(onnx, "ONNX_CLI_OPTIONS", ()))


_IMATRIX_MODES: dict[str, bool | None] = {"auto": None, "on": True, "off": False}


def _busy(path: Path) -> bool:
    return path.is_dir() and any(p for p in path.iterdir() if not p.name.endswith(".partial"))


def run_convert(model: str, output: str, format: str = "gguf", quant: str | None = None, json_output: bool = False,  # noqa: A002
                max_kld: float | None = None, max_ppl_increase: float | None = None, min_tps: float | None = None,
                prefer: str = "smallest", prune_layers: str | None = None, overwrite: bool = False,
                **options: Any) -> int:
    from ..converting import check_quant, convert
    from ..errors import ConversionError, OutputPathError
    from ..progress import terminal

    rep = terminal(notes=False)   # the CLI always reports progress on stderr; tables go to stdout, below
    quant = quant or ("int4" if format == "onnx" else "Q8_0")

    _, onnx_options = _onnx_cli()
    onnx_dests = {kw.get("dest", flag.lstrip("-").replace("-", "_")) for flag, kw in onnx_options}
    # GGUF's importance matrix / GPTQ calibrate the same way
    shared = {"calibration_text", "calibration_tokens", "calibration_time", "max_memory"}
    onnx_only = onnx_dests - shared
    defaults = {kw.get("dest", flag.lstrip("-").replace("-", "_")): kw.get("default") for flag, kw in onnx_options
                if "action" in kw}   # store_true/false flags: given when not at their default
    given = sorted(k for k, v in options.items() if k in onnx_only and v is not None and v != defaults.get(k))
    if format != "onnx" and given:
        flag_of = {kw.get("dest", flag.lstrip("-").replace("-", "_")): flag for flag, kw in onnx_options}
        flags = ", ".join(flag_of.get(k, "--" + k.replace("_", "-")) for k in given)
        raise ConversionError(f"{flags} apply to --format onnx", "drop them, or add --format onnx")
    options = {k: v for k, v in options.items() if v is not None and (format == "onnx" or k not in onnx_only)}
    if "imatrix" in options:
        if format != "gguf":
            raise ConversionError("--imatrix applies to GGUF types quantized by llama.cpp", "use --format gguf")
        options["imatrix"] = _IMATRIX_MODES.get(str(options["imatrix"]).lower(), options["imatrix"])
    if "rounding" in options:
        if format != "gguf":
            raise ConversionError("--rounding applies to GGUF types quantized by llama.cpp",
                                  "use --format gguf (ONNX int4 is GPTQ-calibrated by its recipe)")
        if options["rounding"] == "auto":
            del options["rounding"]
    if "mix" in options and format != "gguf":
        raise ConversionError("--mix applies to GGUF types with GPTQ rounding", "use --format gguf")
    if prune_layers is not None and format != "gguf":
        raise ConversionError("--prune-layers works on GGUF artifacts", "use --format gguf")
    if prune_layers is not None and quant.lower() == "auto":
        raise ConversionError("--quant auto and --prune-layers each spend the quality budget; use one at a time",
                              "pick the quant with --quant auto first, then prune that quant")
    if prune_layers is not None and prune_layers != "auto" and not prune_layers.isdigit():
        raise ConversionError(f"--prune-layers {prune_layers!r} must be a number of blocks or 'auto'")
    if quant.lower() != "auto":
        check_quant(format, quant)
    out = Path(output)
    measured = quant.lower() == "auto" or prune_layers is not None
    if measured and _busy(out) and not overwrite:   # before minutes of work, not after
        raise OutputPathError(f"{out} already exists and is not empty",
                              "pass --overwrite to replace it, or choose another folder")
    if not measured:
        result = convert(model, output, format=format, quant=quant, overwrite=overwrite, progress=rep, **options)
        return _report(result, json_output)
    # autoquant and prune build into a fresh folder beside OUT, swapped in when complete
    final = out
    out = out.parent / f".{out.name}.partial-{os.getpid()}" if _busy(out) else out
    unpruned = tempfile.mkdtemp(prefix="edgellm-unpruned-") if prune_layers is not None else None
    try:
        if quant.lower() == "auto":
            from ..quant_search import autoquant

            found = autoquant(model, out, max_kld=max_kld, max_ppl_increase=max_ppl_increase, min_tps=min_tps,
                              formats=(format,), prefer=prefer, progress=rep, **options)
            name = found.path.name
            code = _swap(out, final)
            print(found.format_table() if not json_output else json.dumps(
                {"path": str(final / name), "manifest": str(final / MANIFEST_NAME),
                 "chosen": f"{found.chosen.format}:{found.chosen.quant}",
                 "table": [{k: v for k, v in asdict(c).items() if k != "path"} for c in found.table]}, indent=2))
            if not json_output:
                print(f"kept {found.chosen.format}:{found.chosen.quant}: wrote {final / name}")
            return code
        base = convert(model, Path(str(unpruned)) / "a", format=format, quant=quant, progress=rep.child("[unpruned] "),
                       **options)
        r = _prune(Path(base.path), out, prune_layers or "auto", max_kld, max_ppl_increase, rep,
                   f"{Path(model).resolve()} converted to {format}:{quant} (temporary)")
        _swap(out, final)
        return _print_prune(r, final / Path(str(r.output)).name, json_output)
    finally:
        if unpruned is not None:
            shutil.rmtree(unpruned, ignore_errors=True)
        if out != final and out.exists():
            shutil.rmtree(out, ignore_errors=True)


def _swap(built: Path, final: Path) -> int:
    """Put the folder built beside OUT in OUT's place (--overwrite)."""
    if built == final:
        return 0
    old = final.parent / f".{final.name}.partial-old-{os.getpid()}"
    os.replace(final, old)
    os.replace(built, final)
    shutil.rmtree(old, ignore_errors=True)
    return 0


def _report(result: ConvertResult, json_output: bool) -> int:
    fallbacks = getattr(result, "fallbacks", []) or []
    if json_output:
        print(json.dumps({"path": str(result.path), "manifest": str(result.manifest_path),
                          "format": result.format, "quant": result.quant,
                          "tensor_types": getattr(result, "tensor_types", {}), "fallbacks": fallbacks}, indent=2))
        return 0
    print(f"wrote {result.path}")
    print(f"manifest {result.manifest_path}")
    types = getattr(result, "tensor_types", None)
    if types:   # fallbacks are in the converter's one warning (stderr) and in the manifest; not repeated here
        print("tensor types: " + ", ".join(f"{k} x{v}" for k, v in sorted(types.items())))
    return 0


def _prune(artifact: Path, output: Path, layers: str, max_kld: float | None, max_ppl_increase: float | None,
           rep: Any, source: str) -> Any:
    from ..pruning import prune

    count: int | str = "auto" if layers == "auto" else int(layers)
    return prune(artifact, output, layers=count, max_kld=max_kld, max_ppl_increase=max_ppl_increase, progress=rep,
                 source_label=source)


def _print_prune(r: Any, path: Path, json_output: bool) -> int:
    summary = {"path": str(path), "dropped": list(r.dropped), "size_before": r.size_before,
               "size_after": r.size_after, "kld": r.kld, "ppl_before": r.ppl_before, "ppl_after": r.ppl_after,
               "top1": r.top1, "decode_tps_before": r.decode_tps_before, "decode_tps_after": r.decode_tps_after,
               "ranking": [asdict(c) for c in r.ranking], "trials": r.trials}
    if json_output:
        print(json.dumps(summary, indent=2))
        return 0
    print(r.format_table())
    print(f"wrote {path}")
    print(f"dropped blocks {', '.join(map(str, r.dropped)) or 'none'}: size {r.size_before / 2**20:.1f} -> "
          f"{r.size_after / 2**20:.1f} MiB, PPL {r.ppl_before:.2f} -> {r.ppl_after:.2f}, mean KLD {r.kld:.4f}, "
          f"top-1 {r.top1:.1%}"
          + (f", decode {r.decode_tps_before:.1f} -> {r.decode_tps_after:.1f} tok/s"
             if r.decode_tps_before and r.decode_tps_after else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    onnx_quants, onnx_options = _onnx_cli()
    p = sub.add_parser("convert", help="convert a Hugging Face folder to GGUF or ONNX",
                       description="Convert an HF model folder (config.json, *.safetensors, tokenizer.json) into "
                                   "a deployable artifact folder with an edgellm.json manifest.")
    p.add_argument("model", help="Hugging Face model folder")
    p.add_argument("output", help="artifact folder to create (refused if it holds files, unless --overwrite)")
    p.add_argument("--format", choices=("gguf", "onnx"), default="gguf", help="artifact format (default gguf)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT if it exists (the old folder goes only once the new artifact is complete)")
    choices = ", ".join(QUANT_TYPES) + (f"; onnx: {', '.join(onnx_quants)}" if onnx_quants else "")
    p.add_argument("--quant", default=None,
                   help=f"gguf: {choices}; or 'auto' (measured). Default: Q8_0 for gguf, int4 for onnx")
    p.add_argument("--pre-tokenizer", dest="pre_tokenizer", default=None,
                   help="gguf: override the detected llama.cpp pre-tokenizer (only if you know it)")
    p.add_argument("--context-length", dest="context_length", type=int, default=None,
                   help="longest context the artifact declares (default: the model's max_position_embeddings); "
                        "not --n-ctx, which a run allocates, at most this")
    p.add_argument("--threads", type=int, default=None, help="threads for llama.cpp's quantizer")
    p.add_argument("--json", dest="json_output", action="store_true", help="print the result as JSON")
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
    p.add_argument("--imatrix", default=None, metavar="auto|on|off|FILE",
                   help="GGUF types llama.cpp quantizes: an importance matrix from the calibration text (on; auto = on "
                        "unless the folder was unpacked from a GGUF), none (off), or a llama.cpp .imatrix FILE")
    p.add_argument("--rounding", default=None, choices=("auto", "gptq", "llama"),
                   help="GGUF types quantized by llama.cpp: gptq keeps llama.cpp's block scales and chooses the codes "
                        "with GPTQ over the calibration text (same types, size and kernels); llama leaves all "
                        "rounding to llama.cpp; auto (default) = gptq when an importance matrix is computed")
    p.add_argument("--mix", default=None, choices=("off", "fast", "size"),
                   help="GGUF with GPTQ rounding: a tensor may take another type of the same size when its measured "
                        "output error is lower (fast: only types whose kernels were measured not slower, e.g. Q4_K "
                        "for Q4_0; size: IQ4_NL too; off, the default: the recipe's types). The size does not change")
    for flag, kwargs in onnx_options:
        p.add_argument(flag, **{**kwargs, "default": None} if "action" not in kwargs else kwargs)
    p.set_defaults(func=run_convert)
