"""Façade over the converters: `edgellm.convert` and `edgellm.unpack`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConversionError
from .outputs import writing_to


def convert(model: str | Path, output: str | Path, format: str = "gguf", quant: str = "Q8_0",  # noqa: A002
            **options: Any) -> Any:
    """Convert an HF folder into an artifact folder. Returns the converter's result (path, manifest, types).

    OUT may not be the model folder or inside it; files a killed run left in OUT are removed first; OS errors
    while writing (full disk, permissions) are OutputPathError (sdk/outputs.py)."""
    fmt = format.lower() if isinstance(format, str) else format
    if fmt not in ("gguf", "onnx"):
        raise ConversionError(f"unknown format {format!r}; choose gguf or onnx")
    _check_options(quant, options)
    if fmt == "gguf":
        from .converters.gguf_types import get_quant
        get_quant(quant)               # a bad argument is reported before anything touches the output
    with writing_to(output, model) as out:
        if fmt == "gguf":
            from .converters.gguf import convert_to_gguf
            return convert_to_gguf(model, out, quant, **options)
        try:
            from .converters.onnx import convert_to_onnx
        except ImportError as exc:
            raise ConversionError(f"the ONNX converter is unavailable ({exc})", "pip install 'edgellm[onnx]'") from None
        return convert_to_onnx(model, out, quant, **options)


# option -> (lowest, highest) for the integer options the converters take; None is always allowed (the default)
_INT_OPTIONS = {"context_length": (1, 1 << 26), "threads": (1, 1024), "block_size": (16, 1 << 16),
                "accuracy_level": (0, 4), "calibration_tokens": (1, 1 << 24)}
_STR_OPTIONS = ("pre_tokenizer", "lm_head", "embeddings")


def _check_options(quant: Any, options: dict[str, Any]) -> None:
    """Type and range of convert's arguments, before any file is touched (ConversionError)."""
    problems = []
    if not isinstance(quant, str) or not quant:
        problems.append(f"quant={quant!r} must be a quant name such as 'Q4_K_M' or 'int4'")
    for key, (lo, hi) in _INT_OPTIONS.items():
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi):
            problems.append(f"{key}={value!r} must be an integer in [{lo}, {hi}]")
    for key in _STR_OPTIONS:
        if options.get(key) is not None and not isinstance(options[key], str):
            problems.append(f"{key}={options[key]!r} must be a string")
    if problems:
        raise ConversionError("invalid convert arguments: " + "; ".join(problems),
                              "see `edgellm convert --help` for the allowed values")


def unpack(gguf_path: str | Path, output: str | Path, dtype: str = "BF16", overwrite: bool = False) -> Path:
    """Rebuild a Hugging Face folder from a GGUF file (dequantized)."""
    from .converters.gguf_checks import validate_gguf
    from .converters.gguf_to_hf import gguf_to_hf
    validate_gguf(gguf_path)           # the whole file, metadata included, before anything is built from it
    with writing_to(output) as out:
        return gguf_to_hf(gguf_path, out, dtype=dtype, overwrite=overwrite)
