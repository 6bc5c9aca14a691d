"""Bundles: several artifact variants for several targets in one checksummed folder, picked by device at load.

    edgellm.bundle("hf/SmolLM2", "dist/smollm2.bundle", targets=["raspberry-pi-5", "android-midrange"])
    model = edgellm.load("dist/smollm2.bundle", device="profile:raspberry-pi-5")   # -> its GGUF Q4_0 variant

Layout: `bundle.json` (variants with the sha256 of every file, target -> variant) and `variants/<name>/` (an
ordinary artifact folder each). Built under a temp name and renamed when complete; every load verifies the
chosen variant's checksums, so a partial copy is refused rather than run.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .converters.limits import load_json
from .devices.types import Device
from .converters.manifest import safe_child, sha256_file
from .errors import BackendUnavailableError, BundleError, EdgeLLMError, InsufficientMemoryError
from .outputs import staged_folder, writing_to

log = logging.getLogger(__name__)

BUNDLE_NAME = "bundle.json"
BUNDLE_SCHEMA = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
DEFAULT_TARGETS: tuple[str, ...] = ("laptop-8gb-cpu", "raspberry-pi-5", "android-midrange")


@dataclass(frozen=True)
class BundleResult:
    path: Path
    variants: dict[str, dict[str, Any]]
    targets: dict[str, str]


def variant_name(fmt: str, quant: str) -> str:
    return f"{fmt}-{quant.lower()}"


def target_variants(model: str | Path, targets: Sequence[str]) -> dict[str, tuple[str, str, str]]:
    """target profile -> (variant name, format, quant): what `edgellm plan MODEL --device profile:T` chooses
    (devices.planner.profile_options, the one decision plan, bundle and `devices --profiles` share). Unknown
    profiles, unsupported models and targets nothing fits fail here, before any conversion."""
    from .planning import plan

    out: dict[str, tuple[str, str, str]] = {}
    for t in targets:
        chosen = plan(model, device=f"profile:{t}")
        out[t] = (variant_name(chosen.format, chosen.quant), chosen.format, chosen.quant)
    return out


def bundle(model: str | Path, output: str | Path, targets: str | Sequence[str] = DEFAULT_TARGETS, *,
           progress: bool = False, overwrite: bool = False) -> BundleResult:
    """Convert `model` (an HF folder) once per distinct variant the `targets` prefer, into one bundle folder.
    targets: profile names, as a list or as the CLI writes them ("raspberry-pi-5,laptop-8gb")."""
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    if not targets:
        raise BundleError("a bundle needs at least one target profile", "e.g. targets=['raspberry-pi-5']")
    out = Path(output)
    if out.exists() and not overwrite:
        raise BundleError(f"{out} already exists", "pass overwrite=True (--overwrite) or choose another folder")
    wanted = target_variants(model, targets)   # unknown profiles, unsupported models fail here, before any work
    variants: dict[str, dict[str, Any]] = {}
    with writing_to(out, model):   # refuses OUT inside the model, removes a killed run's OUT.partial, types OSError
        return _build(model, out, wanted, variants, progress)


def _build(model: str | Path, out: Path, wanted: dict[str, tuple[str, str, str]],
           variants: dict[str, dict[str, Any]], progress: bool) -> BundleResult:
    from .converting import convert

    with staged_folder(out) as tmp:
        for name, fmt, quant in dict.fromkeys(wanted.values()):
            folder = tmp / "variants" / name
            convert(model, folder, format=fmt, quant=quant, progress=progress)
            files = {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}
            variants[name] = {"format": fmt, "quant": quant, "folder": f"variants/{name}", "files": files,
                              "size_bytes": sum((folder / f).stat().st_size for f in files)}
        _check_target_runtimes(tmp, wanted)
        doc = {"schema": BUNDLE_SCHEMA, "source": str(Path(model).resolve()), "variants": variants,
               "targets": {t: v[0] for t, v in wanted.items()}}
        (tmp / BUNDLE_NAME).write_text(json.dumps(doc, indent=2))
    return BundleResult(out, variants, doc["targets"])  # type: ignore[arg-type]  # validated above


def runtime_problems(variant_folder: Path, pins: dict[str, str]) -> list[str]:
    """Why a target whose runtimes are `pins` cannot run the artifact in `variant_folder` (empty: it can)."""
    from .edge_requirements import check_runtime, requirements_for

    return check_runtime(requirements_for(variant_folder), pins) if pins else []


def _check_target_runtimes(tmp: Path, wanted: dict[str, tuple[str, str, str]]) -> None:
    """The built variants checked against each target profile's pinned runtimes (the plan predicted them; a
    family with ops of its own could still need more): BackendUnavailableError naming target and reason."""
    from .devices.profiles import get_profile

    for target, (name, _, _) in wanted.items():
        pins = get_profile(target).runtime_versions
        problems = runtime_problems(tmp / "variants" / name, pins)
        if problems:
            raise BackendUnavailableError(f"target {target} cannot run its variant {name}: " + "; ".join(problems),
                                          f"update {target}'s runtimes, or bundle another format for it")


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / BUNDLE_NAME).is_file()


def read_bundle(folder: str | Path) -> dict[str, Any]:
    """Read and validate bundle.json: bounded JSON; each variant a folder inside the bundle with a non-empty
    `files` map of relative name -> sha256 (64 hex digits); each target naming a variant (BundleError)."""
    root = Path(folder)
    path = root / BUNDLE_NAME
    if not path.is_file():
        raise BundleError(f"{root} has no {BUNDLE_NAME}")
    doc = load_json(path, error=BundleError)
    variants, targets = doc.get("variants"), doc.get("targets")
    if not isinstance(variants, dict) or not variants or not isinstance(targets, dict):
        raise BundleError(f"{path} needs a non-empty 'variants' object and a 'targets' object")
    for name, v in variants.items():
        if not isinstance(v, dict) or not isinstance(v.get("folder"), str) or v.get("format") not in ("gguf", "onnx") \
                or not isinstance(v.get("size_bytes", 0), int):
            raise BundleError(f"{path}: variant {name!r} needs a folder, a format (gguf or onnx) and an int size")
        files = v.get("files")
        if not isinstance(files, dict) or not files:
            raise BundleError(f"{path}: variant {name!r} lists no files; an unlisted file cannot be verified")
        for rel, digest in files.items():
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                raise BundleError(f"{path}: variant {name!r} file {rel!r} has no valid sha256")
        safe_child(root, v["folder"])
        for rel in files:
            safe_child(root / v["folder"], rel)
    for target, name in targets.items():
        if not isinstance(name, str) or name not in variants:
            raise BundleError(f"target {target} points at a variant {name!r} the bundle does not hold")
    return doc


def verify_variant(folder: str | Path, name: str, doc: dict[str, Any] | None = None) -> Path:
    """Check a variant: every file it lists matches its sha256, and its folder holds no file it does not list
    (an unlisted file would be used unverified). Returns the variant's artifact folder."""
    root = Path(folder)
    doc = doc or read_bundle(root)
    if name not in doc["variants"]:
        raise BundleError(f"bundle {root} has no variant {name!r}")
    v = doc["variants"][name]
    base = root / v["folder"]
    listed = set(v["files"])
    present = {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file() or p.is_symlink()} \
        if base.is_dir() else set()
    extra = sorted(present - listed)
    if extra:
        raise BundleError(f"bundle variant {name}: {extra[0]} is not listed in {BUNDLE_NAME} (added or modified)")
    for rel, digest in v["files"].items():
        path = base / rel
        if not path.is_file():
            raise BundleError(f"bundle variant {name}: {rel} is missing (a partial copy?)")
        if sha256_file(path) != digest:
            raise BundleError(f"bundle variant {name}: {rel} does not match its checksum (corrupt or modified)")
    return base


def _runtime_available(fmt: str) -> bool:
    module = {"gguf": "llama_cpp", "onnx": "onnxruntime"}[fmt]
    import importlib.util

    return importlib.util.find_spec(module) is not None


def pick_variant(folder: str | Path, device: Device, n_ctx: int | None = None) -> tuple[str, str]:
    """(variant name, reason) for the resolved `device`. A profile the bundle targets gets its variant;
    otherwise the largest variant (the least quantized) whose runtime is installed and whose planned memory fits
    the device (planned on that Device as resolved by load, never on its spec string again)."""
    from .planning import plan

    doc = read_bundle(folder)
    device_spec = device.name
    pins = device.profile.runtime_versions if device.profile is not None else {}
    misses = []
    if device.profile is not None:
        target = device.profile.name
        if target in doc["targets"]:
            name = doc["targets"][target]
            problems = runtime_problems(Path(folder) / doc["variants"][name]["folder"], pins)
            if not problems:
                return name, f"bundle target {target}"
            misses.append(f"{name}: the target's runtimes cannot run it ({'; '.join(problems)})")
    by_size = sorted(doc["variants"].items(), key=lambda kv: -int(kv[1].get("size_bytes", 0)))
    for name, v in by_size:
        if not _runtime_available(v["format"]):
            misses.append(f"{name}: runtime for {v['format']} not installed")
            continue
        problems = runtime_problems(Path(folder) / v["folder"], pins)
        if problems:
            if not any(m.startswith(f"{name}:") for m in misses):
                misses.append(f"{name}: the target's runtimes cannot run it ({'; '.join(problems)})")
            continue
        try:
            plan(Path(folder) / v["folder"], device=device, n_ctx=n_ctx)
        except InsufficientMemoryError as exc:
            misses.append(f"{name}: {exc.message}")
            continue
        except EdgeLLMError as exc:  # cannot plan it: still a candidate, the load checks again
            log.info("bundle variant %s could not be planned (%s)", name, exc.message)
        return name, f"largest variant that fits {device_spec}" + (f" (skipped: {'; '.join(misses)})" if misses else "")
    if any("runtimes cannot run" in m for m in misses) and all("runtimes cannot run" in m or "not installed" in m
                                                                for m in misses):
        raise BackendUnavailableError(f"no variant of bundle {folder} runs on {device_spec}: " + "; ".join(misses),
                                      "update the target's runtimes, or add a variant in a format they run")
    raise InsufficientMemoryError(f"no variant of bundle {folder} fits {device_spec}: " + "; ".join(misses))
