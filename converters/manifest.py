"""The artifact manifest, `edgellm.json`, written beside every artifact."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, UnsafePathError
from .limits import as_int, load_json

MANIFEST_NAME = "edgellm.json"
SCHEMA_VERSION = 1


@dataclass
class Manifest:
    format: str                          # "gguf" | "onnx"
    file: str                            # artifact file, relative to the manifest's folder
    quant: str
    size_bytes: int
    sha256: str
    context_length: int
    source: dict[str, Any] = field(default_factory=dict)       # path, architecture, dtype
    tokenizer: dict[str, Any] = field(default_factory=dict)    # model, pre, vocab_size, special ids
    tensor_types: dict[str, int] = field(default_factory=dict)  # GGML/ONNX type -> tensor count
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)          # format-specific details
    files: list[str] = field(default_factory=list)               # every file the artifact needs
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    edgellm_version: str = ""
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def safe_child(folder: Path, name: str) -> Path:
    """`folder / name`, refusing names that escape the folder (absolute, '..', links outside)."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise UnsafePathError(f"{name!r} is not a file name")
    root = folder.resolve()
    target = (folder / name).resolve()
    if Path(name).is_absolute() or (target != root and root not in target.parents):
        raise UnsafePathError(f"{name!r} points outside the artifact folder {folder}")
    return target


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    from .. import __version__

    manifest.edgellm_version = manifest.edgellm_version or __version__
    path = folder / MANIFEST_NAME
    tmp = folder / (MANIFEST_NAME + ".partial")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return path


# field -> the JSON types it may hold (checked before anything uses a manifest's values)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,), "file": (str,), "quant": (str,), "size_bytes": (int,), "sha256": (str,),
    "context_length": (int,), "source": (dict,), "tokenizer": (dict,), "tensor_types": (dict,),
    "fallbacks": (list,), "extra": (dict,), "files": (list,), "created": (str,), "edgellm_version": (str,),
    "schema": (int,),
}


def read_manifest(folder: Path) -> Manifest:
    """Read and validate `edgellm.json`: bounded JSON, every field of its type, sizes in range, file names
    inside the folder (ArtifactError / UnsafePathError otherwise)."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{folder} has no {MANIFEST_NAME}")
    data = load_json(path, error=ArtifactError)
    known = set(Manifest.__dataclass_fields__)
    for key, kinds in _FIELD_TYPES.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            raise ArtifactError(f"{path}: {key} must be {kinds[0].__name__}, not {type(value).__name__}")
    for key in ("size_bytes", "context_length"):
        if key in data:
            as_int(data[key], key, str(path), lo=0, hi=(1 << 62), error=ArtifactError)
    if not all(isinstance(f, str) for f in data.get("files") or []):
        raise ArtifactError(f"{path}: files must be a list of file names")
    try:
        manifest = Manifest(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise ArtifactError(f"{path} is missing fields ({exc})") from None
    if manifest.format not in ("gguf", "onnx"):
        raise ArtifactError(f"{path}: unknown format {manifest.format[:20]!r}")
    safe_child(folder, manifest.file)
    for name in manifest.files:
        safe_child(folder, name)
    return manifest
