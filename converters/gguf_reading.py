"""Validated access to GGUF files through gguf-py (shared by gguf_to_hf, info and the manifest)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelFormatError

GGUF_MAGIC = b"GGUF"


def open_gguf(path: str | Path) -> Any:
    """A gguf.GGUFReader over `path`, after checking the magic and that every tensor fits the file."""
    import gguf

    p = Path(path)
    if not p.is_file():
        raise ModelFormatError(f"{p} does not exist or is not a file")
    size = p.stat().st_size
    with open(p, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ModelFormatError(f"{p} is not a GGUF file (bad magic)")
    try:
        reader = gguf.GGUFReader(p)
    except (ValueError, IndexError, OSError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{p}: GGUF header is corrupt or truncated ({exc})") from None
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise ModelFormatError(f"{p}: tensor {t.name} runs past the end of the file; it is truncated")
    return reader


def field_value(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def metadata(reader: Any, skip_arrays_longer_than: int = 64) -> dict[str, Any]:
    """Every metadata key except huge arrays (vocabularies), for display and manifests."""
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if len(field.data) > skip_arrays_longer_than:
            out[key] = f"<array of {len(field.data)}>"
        else:
            out[key] = field.contents()
    return out
