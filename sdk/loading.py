"""`edgellm.load`: find the artifact, pick the runtime and device, open it, time it."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .converters.manifest import MANIFEST_NAME, read_manifest, safe_child
from .errors import ArtifactError
from .model import Model
from .runtimes.base import LoadOptions, open_runtime, runtime_for_format

log = logging.getLogger(__name__)

_SUFFIX_FORMATS = {".gguf": "gguf", ".onnx": "onnx", ".ort": "onnx"}


@dataclass(frozen=True)
class ResolvedArtifact:
    path: Path          # the file (gguf) or the folder/file the runtime opens (onnx)
    format: str
    context_length: int | None


def resolve_artifact(path: str | Path) -> ResolvedArtifact:
    p = Path(path)
    if p.is_file():
        fmt = _SUFFIX_FORMATS.get(p.suffix.lower())
        if fmt is None:
            raise ArtifactError(f"{p} is neither .gguf nor .onnx")
        if (p.parent / MANIFEST_NAME).is_file():
            m = read_manifest(p.parent)
            return ResolvedArtifact(p, fmt, m.context_length)
        return ResolvedArtifact(p, fmt, None)
    if p.is_dir():
        if (p / MANIFEST_NAME).is_file():
            m = read_manifest(p)
            return ResolvedArtifact(safe_child(p, m.file), m.format, m.context_length)
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return ResolvedArtifact(ggufs[0], "gguf", None)
        if (p / "config.json").is_file():
            raise ArtifactError(f"{p} is a Hugging Face folder, not an artifact",
                                f"convert it first: edgellm convert {p} OUT --format gguf --quant Q4_K_M")
        raise ArtifactError(f"{p} holds no {MANIFEST_NAME} and not exactly one .gguf file")
    raise ArtifactError(f"{p} does not exist")


def _device(spec: str) -> tuple[str, int | None]:
    """(device label, thread cap) for a device spec; profiles come from the devices room when present."""
    try:
        from .planning import resolve_device
    except ImportError:
        if spec not in ("auto", "cpu"):
            raise ArtifactError(f"device {spec!r} needs the devices module, which this build lacks") from None
        return "cpu", None
    dev = resolve_device(spec)
    return str(getattr(dev, "label", getattr(dev, "name", spec))), getattr(dev, "max_threads", None)


def load(path: str | Path, device: str = "auto", *, backend: str | None = None, n_ctx: int | None = None,
         threads: int | None = None, n_gpu_layers: int = 0, **extra: Any) -> Model:
    """Open an artifact (folder with edgellm.json, .gguf or .onnx file) and return a `Model`."""
    art = resolve_artifact(path)
    label, cap = _device(device)
    if threads is None:
        threads = cap
    elif cap is not None:
        threads = min(threads, cap)
    ctx = n_ctx or min(art.context_length or 2048, 4096)
    options = LoadOptions(n_ctx=ctx, threads=threads, n_gpu_layers=n_gpu_layers,
                          execution_provider="cuda" if device.startswith("cuda") else "cpu", extra=dict(extra))
    name = backend or runtime_for_format(art.format)
    t0 = time.perf_counter()
    runtime = open_runtime(name, art.path, options)
    load_s = time.perf_counter() - t0
    log.info("loaded %s with %s in %.2fs", art.path, name, load_s)
    return Model(runtime, device=label, load_s=load_s, artifact=str(art.path), energy_meter=_energy_meter(device))


def _energy_meter(device: str) -> Any:
    """The device's energy meter (RAPL -> NVML -> estimate) when the devices room provides one."""
    try:
        from .devices.energy import default_meter
    except ImportError:
        return None
    return default_meter(device)
