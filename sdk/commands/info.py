"""`edgellm info ARTIFACT`: what an artifact holds."""
from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import EdgeLLMError


def describe(artifact: str) -> dict[str, Any]:
    from ..bundling import is_bundle

    if is_bundle(artifact):
        return _describe_bundle(Path(artifact))
    return _describe_artifact(artifact)


def _describe_artifact(artifact: str | Path) -> dict[str, Any]:
    from ..converters.gguf_reading import metadata, open_gguf
    from ..converters.manifest import MANIFEST_NAME, read_manifest
    from ..loading import resolve_artifact

    art = resolve_artifact(artifact)
    out: dict[str, Any] = {"path": str(art.path), "format": art.format,
                           "size_bytes": art.path.stat().st_size if art.path.is_file() else None}
    folder = art.path.parent
    manifest = None
    if (folder / MANIFEST_NAME).is_file():
        manifest = read_manifest(folder)   # validated (types, sizes, paths) before it is shown
        out["manifest"] = asdict(manifest)
    if art.format == "gguf":
        reader = open_gguf(art.path)
        out["metadata"] = metadata(reader)
        out["tensor_types"] = dict(Counter(t.tensor_type.name for t in reader.tensors))
        out["tensors"] = len(reader.tensors)
        out["parameters"] = int(sum(int(t.n_elements) for t in reader.tensors))
    elif art.format == "onnx":
        out.update(_onnx_sizes(art.path, manifest))
    return out


def _onnx_sizes(path: Path, manifest: Any) -> dict[str, Any]:
    """An ONNX model's weights live in external data files: the size is the graph plus every file the artifact
    lists (or, without a manifest, the graph plus its `.data` companion); tensor types and the quant come from the
    manifest, which the converter wrote while quantizing."""
    folder = path.parent
    names = list(manifest.files) if manifest is not None and manifest.files else [path.name]
    if manifest is None and (folder / (path.name + ".data")).is_file():
        names.append(path.name + ".data")
    files = {n: (folder / n).stat().st_size for n in names if (folder / n).is_file()}
    out: dict[str, Any] = {"graph_bytes": path.stat().st_size if path.is_file() else None,
                           "files": files, "size_bytes": sum(files.values())}
    if manifest is not None:
        out["tensor_types"] = dict(manifest.tensor_types)
        out["quant"] = manifest.quant
        extra = manifest.extra or {}
        out["weights"] = {k: extra.get(k) for k in ("weights", "lm_head", "embeddings", "fused", "accuracy_level")
                          if k in extra}
    return out


def _describe_bundle(folder: Path) -> dict[str, Any]:
    from ..bundling import read_bundle

    doc = read_bundle(folder)
    variants = {}
    for name, v in doc["variants"].items():
        try:
            variants[name] = _describe_artifact(folder / str(v["folder"]))
        except EdgeLLMError as exc:   # one broken variant does not hide the others
            variants[name] = {"error": exc.message}
    size = sum(int(v.get("size_bytes") or 0) for v in variants.values())
    return {"path": str(folder), "format": "bundle", "size_bytes": size, "targets": dict(doc["targets"]),
            "source": doc.get("source"), "variants": variants}


def run_info(artifact: str, json_output: bool = False) -> int:
    info = describe(artifact)
    if json_output:
        print(json.dumps(info, indent=2, default=str))
        return 0
    if info["format"] == "bundle":
        print(_printable(f"{info['path']}  (bundle, {len(info['variants'])} variants, {info['size_bytes']:,} bytes)"))
        for target, variant in sorted(info["targets"].items()):
            print(_printable(f"  target {target} -> {variant}"))
        for name, v in info["variants"].items():
            print()
            print(_printable(f"variant {name}:"))
            _print_artifact(v)
        return 0
    _print_artifact(info)
    return 0


def _print_artifact(info: dict[str, Any]) -> None:
    if "error" in info:
        print(_printable(f"  error: {info['error']}"))
        return
    print(_printable(f"{info['path']}  ({info['format']}, {info['size_bytes'] or 0:,} bytes)"))
    if info.get("files") and len(info["files"]) > 1:
        print(_printable("files: " + ", ".join(f"{k} {v:,}" for k, v in info["files"].items())))
    if "parameters" in info:
        print(f"parameters: {info['parameters']:,}  tensors: {info['tensors']}")
    if info.get("weights"):
        print(_printable("quant: " + str(info.get("quant")) + " ("
                         + ", ".join(f"{k} {v}" for k, v in info["weights"].items()) + ")"))
    if info.get("tensor_types"):
        print(_printable("tensor types: " + ", ".join(f"{k} x{v}" for k, v in sorted(info["tensor_types"].items()))))
    for key, value in (info.get("metadata") or {}).items():
        text = _printable(str(value))
        print(f"  {_printable(key)} = {text if len(text) < 100 else text[:97] + '...'}")
    m = info.get("manifest")
    if m:
        print(_printable(f"manifest: quant {m.get('quant')}, context {m.get('context_length')}, "
                         f"sha256 {str(m.get('sha256'))[:16]}…, {len(m.get('fallbacks') or [])} fallbacks, "
                         f"source {Path(str(m.get('source', {}).get('path', ''))).name}"))


def _printable(text: str) -> str:
    """A string from a model file, safe for a terminal: control characters (ANSI escapes, carriage returns,
    bells) shown as \\xNN escapes instead of acting on the user's terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show what an artifact (or bundle) holds")
    p.add_argument("artifact", help="artifact folder, .gguf or .onnx file, or bundle folder")
    p.add_argument("--json", dest="json_output", action="store_true", help="print everything as JSON")
    p.set_defaults(func=run_info)
