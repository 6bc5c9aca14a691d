"""Façade over the converters: `edgellm.convert` and `edgellm.unpack`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConversionError


def convert(model: str | Path, output: str | Path, format: str = "gguf", quant: str = "Q8_0",  # noqa: A002
            **options: Any) -> Any:
    """Convert an HF folder into an artifact folder. Returns the converter's result (path, manifest, types)."""
    fmt = format.lower()
    if fmt == "gguf":
        from .converters.gguf import convert_to_gguf
        return convert_to_gguf(model, output, quant, **options)
    if fmt == "onnx":
        try:
            from .converters.onnx import convert_to_onnx
        except ImportError as exc:
            raise ConversionError(f"the ONNX converter is unavailable ({exc})", "pip install 'edgellm[onnx]'") from None
        return convert_to_onnx(model, output, quant, **options)
    raise ConversionError(f"unknown format {format!r}; choose gguf or onnx")


def unpack(gguf_path: str | Path, output: str | Path, dtype: str = "BF16", overwrite: bool = False) -> Path:
    """Rebuild a Hugging Face folder from a GGUF file (dequantized)."""
    from .converters.gguf_to_hf import gguf_to_hf
    return gguf_to_hf(gguf_path, output, dtype=dtype, overwrite=overwrite)
