"""`edgellm.load`: find the artifact, pick the runtime and device, open it, time it."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .converters.manifest import MANIFEST_NAME, read_manifest, safe_child
from .errors import ArtifactError, EdgeLLMError
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
        if (p / "genai_config.json").is_file():   # onnxruntime-genai's own output folder (what `plan` accepts)
            from .model_facts import genai_decoder

            return ResolvedArtifact(genai_decoder(p), "onnx", None)
        if (p / "config.json").is_file():
            raise ArtifactError(f"{p} is a Hugging Face folder, not an artifact",
                                f"convert it first: edgellm convert {p} OUT --format gguf --quant Q4_K_M")
        raise ArtifactError(f"{p} holds no {MANIFEST_NAME} and not exactly one .gguf file")
    raise ArtifactError(f"{p} does not exist")


def _device(spec: str) -> tuple[str, int | None]:
    """(device label, thread cap) for a device spec."""
    from .planning import resolve_device

    dev = resolve_device(spec)
    return dev.label, dev.max_threads


def _require_runtime(art: ResolvedArtifact) -> None:
    """An ONNX artifact needs the `edgellm[onnx]` extra (onnxruntime to run, onnx to plan): a typed error naming
    it before anything else touches the artifact."""
    if art.format != "onnx":
        return
    from .errors import missing_extra

    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise missing_extra(exc, f"loading the ONNX artifact {art.path}") from None


def _check_fit(art: ResolvedArtifact, device: Any, n_ctx: int) -> Any:
    """Plan this artifact on the device before opening it: refuses (InsufficientMemoryError, with the
    numbers) what cannot fit, and proposes threads and GPU layers. A GGUF is validated first (structure, sizes,
    the metadata llama.cpp relies on, its chat template) and refused with ModelFormatError / ChatTemplateError.
    Returns the Plan, or None when the
    artifact cannot be planned (the load then goes ahead on defaults, with a warning)."""
    from .errors import InsufficientMemoryError
    from .planning import plan

    if art.format == "gguf":   # a file the validator refuses never reaches llama.cpp (ModelFormatError)
        from .converters.gguf_checks import validate_gguf
        from .runtimes.chat import check_template

        for template in validate_gguf(art.path)["chat_templates"].values():
            check_template(template)
    elif art.format == "onnx":   # the side files the planner and the runtime read: bounded, typed, inside
        from .runtimes.onnx_support import check_side_files

        check_side_files(Path(art.path).parent)
    try:
        return plan(art.path, device=device, n_ctx=n_ctx)
    except InsufficientMemoryError:
        raise
    except EdgeLLMError as exc:
        log.warning("could not plan %s before loading (%s); using defaults", art.path, exc.message)
        return None


def load(path: str | Path, device: str = "auto", *, backend: str | None = None, n_ctx: int | None = None,
         threads: int | str | None = None, n_gpu_layers: int | None = None, options: Any = None,
         **extra: Any) -> Model:
    """Open an artifact (folder with edgellm.json, .gguf or .onnx file, or a bundle) and return a `Model`.

    device: "auto" | "cpu" | "cuda" | "cuda:N" | "profile:NAME" (runs here under the profile's thread and
    memory caps, refusing what would not fit there). threads: a number, None (the device's plan) or "auto"
    (a short measured sweep, cached per machine and model). n_gpu_layers: None lets the plan decide.

    Backend options: `options=` the runtime's typed dataclass (edgellm.runtimes.options: LlamaCppOptions for
    GGUF, OnnxOptions for ONNX), or the same fields as keywords (`speculative="prompt-lookup"`,
    `prefill_chunk=128`, ...). A key the artifact's backend does not take (speculative= on an ONNX artifact) is
    an OptionError listing the valid ones, raised before anything is opened; so is a feature the backend's
    capabilities do not offer.
    """
    from .errors import OptionError
    from .planning import resolve_device, tune_threads

    if n_ctx is not None and (isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1):
        raise OptionError(f"n_ctx={n_ctx!r} must be a positive whole number of tokens", "e.g. n_ctx=2048")
    if threads is not None and threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int)
                                                      or threads < 1):
        raise OptionError(f"threads={threads!r} must be a positive whole number, None or 'auto'", "e.g. threads=4")
    dev = resolve_device(device)
    if (Path(path) / "bundle.json").is_file():
        from .bundling import pick_variant, verify_variant

        variant, why = pick_variant(path, dev, n_ctx)
        log.info("bundle %s: variant %s (%s)", path, variant, why)
        path = verify_variant(path, variant)
    art = resolve_artifact(path)
    _require_runtime(art)
    if art.format == "gguf" and (backend or "llama.cpp") == "llama.cpp":
        from .kernel_probe import ensure_probed

        ensure_probed()  # once per machine and llama.cpp build: which CPU kernels are safe to run here
    ctx = n_ctx if n_ctx is not None else min(art.context_length or 2048, 4096)
    planned = _check_fit(art, dev, ctx)
    cap = dev.max_threads
    if threads == "auto":
        threads = tune_threads(art.path).threads if art.format == "gguf" else None
    if threads is None and planned is not None:
        threads = planned.threads
    if isinstance(threads, int) and cap is not None:
        threads = min(threads, cap)
    if n_gpu_layers is None:
        n_gpu_layers = planned.n_gpu_layers if planned is not None and dev.kind == "cuda" else 0
    name = backend or runtime_for_format(art.format)
    typed = _backend_options(name, options, extra)
    load_options = LoadOptions(n_ctx=ctx, threads=threads if isinstance(threads, int) else None,
                               n_gpu_layers=n_gpu_layers, execution_provider="cuda" if dev.kind == "cuda" else "cpu",
                               extra=dict(extra) if typed is None else {}, backend=typed)
    t0 = time.perf_counter()
    runtime = open_runtime(name, art.path, load_options)
    load_s = time.perf_counter() - t0
    log.info("loaded %s with %s in %.2fs", art.path, name, load_s)
    return Model(runtime, device=dev.label, load_s=load_s, artifact=str(art.path), energy_meter=_energy_meter(dev))


def _backend_options(name: str, options: Any, extra: dict[str, Any]) -> Any:
    """The runtime's typed options from `options=` or keywords, checked against its capability flags."""
    from .errors import OptionError
    from .runtimes.base import runtime_capabilities
    from .runtimes.options import OPTION_CLASSES, parse_options

    cls = OPTION_CLASSES.get(name)
    if options is not None:
        if extra:
            raise OptionError(f"pass backend options either as options= or as keywords, not both ({', '.join(extra)})")
        if cls is None or not isinstance(options, cls):
            raise OptionError(f"options={type(options).__name__}(...) does not apply to the {name} backend",
                              f"pass {cls.__name__}(...) for this artifact" if cls else f"{name} takes no options")
        typed = options
    else:
        typed = parse_options(name, extra)
    caps = runtime_capabilities(name)
    if getattr(typed, "speculative", None) and caps is not None and not caps.speculative:
        raise OptionError(f"the {name} backend cannot do speculative decoding", "drop speculative=")
    return typed


def _energy_meter(device: Any) -> Any:
    """The device's energy meter (RAPL -> NVML -> estimate) when the devices room provides one."""
    try:
        from .devices.energy import default_meter
    except ImportError:
        return None
    return default_meter(device)
