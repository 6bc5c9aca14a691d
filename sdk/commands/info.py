"""`edgellm info ARTIFACT`: what an artifact holds."""
from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any


def describe(artifact: str) -> dict[str, Any]:
    from ..converters.gguf_reading import metadata, open_gguf
    from ..converters.manifest import MANIFEST_NAME, read_manifest
    from ..loading import resolve_artifact

    art = resolve_artifact(artifact)
    out: dict[str, Any] = {"path": str(art.path), "format": art.format,
                           "size_bytes": art.path.stat().st_size if art.path.is_file() else None}
    folder = art.path.parent
    if (folder / MANIFEST_NAME).is_file():
        out["manifest"] = asdict(read_manifest(folder))  # validated (types, sizes, paths) before it is shown
    if art.format == "gguf":
        reader = open_gguf(art.path)
        out["metadata"] = metadata(reader)
        out["tensor_types"] = dict(Counter(t.tensor_type.name for t in reader.tensors))
        out["tensors"] = len(reader.tensors)
        out["parameters"] = int(sum(int(t.n_elements) for t in reader.tensors))
    return out


def run_info(artifact: str, json_out: bool = False) -> int:
    info = describe(artifact)
    if json_out:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['path']}  ({info['format']}, {info['size_bytes'] or 0:,} bytes)")
    if "parameters" in info:
        print(f"parameters: {info['parameters']:,}  tensors: {info['tensors']}")
        print("tensor types: " + ", ".join(f"{k} x{v}" for k, v in sorted(info["tensor_types"].items())))
    for key, value in (info.get("metadata") or {}).items():
        text = _printable(str(value))
        print(f"  {_printable(key)} = {text if len(text) < 100 else text[:97] + '...'}")
    m = info.get("manifest")
    if m:
        print(_printable(f"manifest: quant {m.get('quant')}, context {m.get('context_length')}, "
                         f"sha256 {str(m.get('sha256'))[:16]}…, {len(m.get('fallbacks') or [])} fallbacks, "
                         f"source {Path(str(m.get('source', {}).get('path', ''))).name}"))
    return 0


def _printable(text: str) -> str:
    """A string from a model file, safe for a terminal: control characters (ANSI escapes, carriage returns,
    bells) shown as \\xNN escapes instead of acting on the user's terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show what an artifact holds")
    p.add_argument("artifact")
    p.add_argument("--json", dest="json_out", action="store_true")
    p.set_defaults(func=run_info)
