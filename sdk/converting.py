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


def unpack(gguf_path: str | Path, output: str | Path, dtype: str = "BF16", overwrite: bool = False) -> Path:
    """Rebuild a Hugging Face folder from a GGUF file (dequantized)."""
    from .converters.gguf_checks import validate_gguf
    from .converters.gguf_to_hf import gguf_to_hf
    validate_gguf(gguf_path)           # the whole file, metadata included, before anything is built from it
    with writing_to(output) as out:
        return gguf_to_hf(gguf_path, out, dtype=dtype, overwrite=overwrite)
