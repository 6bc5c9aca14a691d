"""Edge images: a model (bundle or artifact) plus everything a target device needs to run it, installable offline.

    edgellm.edge_image.edge_image("dist/smollm2.bundle", "dist/smollm2-arm64", platform="linux-aarch64",
                                  python="3.11", llama_lib=Path("~/.cache/edgellm/arm64/llama-0.3.36/lib"))

Layout of OUT:
    model/                 the bundle or artifact, as built (bundles keep their checksums and target map)
    wheelhouse/*.whl       edgellm, its dependencies for the platform and Python, onnxruntime (pinned),
                           llama-cpp-python assembled with a cross-built llama.cpp
    requirements.txt       the top-level pins the install resolves from the wheelhouse alone
    install.sh             `sh install.sh [DEST]`: checks platform and checksums, installs with --no-index
    SHA256SUMS             every file above (sha256sum -c format)
    edge-image.json        platform, Python, wheels (name, version, sha256), each variant's runtime
                           requirements (computed from the artifact) and the target's runtime versions
Before anything heavy, every variant's requirements are checked against the runtimes the image installs: a
variant the target runtime cannot run is refused with the reason (BackendUnavailableError).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .bundling import is_bundle, read_bundle, verify_variant
from .converters.manifest import MANIFEST_NAME, read_manifest, sha256_file
from .edge_requirements import ArtifactRequirements, check_runtime, installed_version, requirements_for
from .edge_wheels import (Platform, assemble_llama_wheel, build_own_wheel, download_wheels, get_platform,
                          llama_python_sources, verify_wheelhouse, wheel_name_version)
from .errors import BackendUnavailableError, BundleError
from .outputs import staged_folder, writing_to

log = logging.getLogger(__name__)

IMAGE_NAME = "edge-image.json"
IMAGE_SCHEMA = 1

# Why the image installs the onnxruntime it does (recorded in edge-image.json).
PIN_REASONS: dict[str, str] = {
    "host": "the onnxruntime the build host runs, which the artifact was built and tested with",
    "given": "chosen by the image's builder (onnxruntime=...); checked against every variant's requirements",
}


@dataclass(frozen=True)
class EdgeImageResult:
    path: Path
    platform: str
    python: str
    variants: dict[str, dict[str, Any]]
    wheels: dict[str, dict[str, str]]
    runtimes: dict[str, str]


def _variants(source: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (artifact folder, format, quant) of a bundle (verified) or a single artifact folder."""
    if is_bundle(source):
        doc = read_bundle(source)
        return {name: (verify_variant(source, name, doc), v["format"], str(v.get("quant", "")))
                for name, v in doc["variants"].items()}
    if (source / MANIFEST_NAME).is_file():
        m = read_manifest(source)
        return {f"{m.format}-{m.quant.lower()}": (source, m.format, m.quant)}
    raise BundleError(f"{source} is neither a bundle (bundle.json) nor an artifact folder ({MANIFEST_NAME})",
                      "build one with `edgellm bundle` or `edgellm convert`")


def target_runtimes(formats: set[str], onnxruntime: str | None, llama_version: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if "onnx" in formats and onnxruntime:
        out["onnxruntime"] = onnxruntime
    if llama_version:
        out["llama-cpp-python"] = llama_version
    return out


def check_variants(reqs: Mapping[str, ArtifactRequirements], runtimes: Mapping[str, str]) -> None:
    """Refuse (BackendUnavailableError) when a variant needs more than the target's runtimes give."""
    refusals = [f"{name}: {'; '.join(problems)}" for name, r in reqs.items()
                if (problems := check_runtime(r, runtimes))]
    if refusals:
        raise BackendUnavailableError("the target runtime cannot run " + " | ".join(refusals),
                                      "pin a newer runtime for the image (e.g. --onnxruntime 1.23.2), or leave "
                                      "that variant out of the bundle")


def edge_image(source: str | Path, output: str | Path, *, platform: str = "linux-aarch64", python: str = "3.11",
               onnxruntime: str | None = None, llama_lib: str | Path | None = None,
               wheel_cache: str | Path | None = None, fetch: bool = True, verify: bool = True,
               overwrite: bool = False, project: str | Path | None = None) -> EdgeImageResult:
    """Write an offline edge image of `source` (bundle or artifact folder) for `platform` and `python`.

    llama_lib: folder of the target's llama.cpp shared libraries (libllama.so, libggml*.so), required: edgellm
    depends on llama-cpp-python and PyPI has no binary wheel of it. wheel_cache: where dependency wheels are
    downloaded (and reused); with fetch=False nothing is downloaded and the cache must already hold them.
    onnxruntime: the version the target gets (default: the build host's, which the artifacts were tested with).
    verify: resolve the install offline on the build host before writing (catches a missing wheel)."""
    src, out = Path(source), Path(output)
    plat = get_platform(platform)
    if out.exists() and not overwrite:
        raise BundleError(f"{out} already exists", "pass overwrite=True (--overwrite) or choose another folder")
    variants = _variants(src)
    formats = {fmt for _, fmt, _ in variants.values()}
    if llama_lib is None:
        raise BundleError(f"an image for {plat.name} needs llama.cpp built for it (llama-cpp-python has no "
                          "binary wheel on PyPI)", "cross-build it: samples/edge_target/cross_build_llama.sh, "
                          "then pass llama_lib=DIR (--llama-lib DIR)")
    llama_version, _ = llama_python_sources()
    pin_reason = PIN_REASONS["given" if onnxruntime else "host"]
    onnxruntime = onnxruntime or installed_version("onnxruntime")
    if "onnx" in formats and not onnxruntime:
        raise BundleError("onnxruntime is not installed here, so its version for the target is unknown",
                          "pass onnxruntime=VERSION (--onnxruntime VERSION)")
    reqs = {name: requirements_for(folder) for name, (folder, _, _) in variants.items()}
    runtimes = target_runtimes(formats, onnxruntime, llama_version)
    check_variants(reqs, runtimes)   # before any download or copy
    with writing_to(out, src):
        return _write(src, out, plat, python, variants, reqs, runtimes, Path(llama_lib), wheel_cache, fetch,
                      verify, Path(project) if project else None, pin_reason)


def _write(src: Path, out: Path, plat: Platform, python: str, variants: dict[str, tuple[Path, str, str]],
           reqs: dict[str, ArtifactRequirements], runtimes: dict[str, str], llama_lib: Path,
           wheel_cache: str | Path | None, fetch: bool, verify: bool, project: Path | None,
           pin_reason: str) -> EdgeImageResult:
    with staged_folder(out) as tmp:
        house = tmp / "wheelhouse"
        house.mkdir()
        own = build_own_wheel(house, project)
        llama = assemble_llama_wheel(llama_lib, house, plat)
        pins = [f"edgellm=={wheel_name_version(own)[1]}", f"llama-cpp-python=={runtimes['llama-cpp-python']}"]
        if "onnxruntime" in runtimes:
            pins += [f"onnxruntime=={runtimes['onnxruntime']}", "onnx"]
        cache = Path(wheel_cache) if wheel_cache else tmp / ".downloads"
        if fetch:
            download_wheels(pins[2:], cache, plat, python, local_wheels=(own, llama))
        for whl in sorted(cache.glob("*.whl")) if cache.is_dir() else []:
            name = wheel_name_version(whl)[0]
            if name not in ("edgellm", "llama-cpp-python") and not (house / whl.name).exists():
                shutil.copy2(whl, house / whl.name)
        shutil.rmtree(tmp / ".downloads", ignore_errors=True)
        if verify:
            verify_wheelhouse(house, pins, plat, python)
        shutil.copytree(src, tmp / "model", ignore=shutil.ignore_patterns("*.partial"))
        (tmp / "requirements.txt").write_text("\n".join(pins) + "\n")
        (tmp / "install.sh").write_text(install_script(plat, python))
        os.chmod(tmp / "install.sh", 0o755)
        wheels = {w.name: {"name": wheel_name_version(w)[0], "version": wheel_name_version(w)[1],
                           "sha256": sha256_file(w)} for w in sorted(house.glob("*.whl"))}
        doc = _image_doc(src, plat, python, variants, reqs, runtimes, wheels, llama_lib)
        if "onnxruntime" in runtimes:
            doc["pins"] = {"onnxruntime": {"version": runtimes["onnxruntime"], "reason": pin_reason}}
        (tmp / IMAGE_NAME).write_text(json.dumps(doc, indent=2))
        _write_sums(tmp)
    return EdgeImageResult(out, plat.name, python, doc["variants"], wheels, runtimes)


def _image_doc(src: Path, plat: Platform, python: str, variants: dict[str, tuple[Path, str, str]],
               reqs: dict[str, ArtifactRequirements], runtimes: dict[str, str], wheels: dict[str, dict[str, str]],
               llama_lib: Path) -> dict[str, Any]:
    build_file = llama_lib.parent / "build.json"
    try:
        llama_build = json.loads(build_file.read_text()) if build_file.is_file() else {}
    except ValueError:
        llama_build = {}
    model_root = src.resolve()
    return {
        "schema": IMAGE_SCHEMA, "platform": plat.name, "machine": plat.machine, "python": python,
        "pip_platforms": list(plat.pip_platforms), "source": str(model_root),
        "model": "model", "bundle": is_bundle(src),
        "variants": {name: {"format": fmt, "quant": quant,
                            "folder": str(Path("model") / folder.resolve().relative_to(model_root)),
                            "requirements": reqs[name].to_dict()}
                     for name, (folder, fmt, quant) in variants.items()},
        "runtimes": runtimes,
        "pins": {},
        "llama_cpp_build": llama_build,
        "wheels": wheels,
    }


def _write_sums(folder: Path) -> None:
    lines = [f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}" for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != "SHA256SUMS"]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def install_script(plat: Platform, python: str) -> str:
    """The image's install.sh: POSIX sh, no network (pip --no-index from the wheelhouse)."""
    return f"""#!/bin/sh
# Offline install of this edgellm edge image ({plat.name}, Python {python}). Needs no network.
#   sh install.sh [DEST]                      a virtual environment at DEST (default: ./venv beside this file)
#   EDGELLM_INSTALL_MODE=target sh install.sh DIR   pip --target DIR (no venv; put DIR on PYTHONPATH)
#   PYTHON=/usr/bin/python{python} sh install.sh    the interpreter to install for
# llama.cpp ships inside the llama-cpp-python wheel (llama_cpp/lib); LLAMA_CPP_LIB_PATH=DIR overrides it.
set -eu
HERE=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
PYTHON=${{PYTHON:-python{python}}}
MODE=${{EDGELLM_INSTALL_MODE:-venv}}
DEST=${{1:-$HERE/venv}}
$PYTHON -c 'import platform, sys
want = ("{plat.machine}", "{python}")
have = (platform.machine(), "%d.%d" % sys.version_info[:2])
sys.exit(0 if have == want else "this image is for %s / Python %s, not %s / Python %s" % (want + have))'
(cd "$HERE" && sha256sum -c --quiet SHA256SUMS)
if [ "$MODE" = venv ]; then
  $PYTHON -m venv "$DEST"
  PY="$DEST/bin/python"
  set --
else
  PY=$PYTHON
  set -- --target "$DEST"
fi
$PY -m pip install --no-index --find-links "$HERE/wheelhouse" --only-binary=:all: --no-cache-dir "$@" \\
  -r "$HERE/requirements.txt"
echo "edgellm installed into $DEST; model: $HERE/model"
"""


def read_image(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / IMAGE_NAME
    if not path.is_file():
        raise BundleError(f"{folder} has no {IMAGE_NAME}", "build one with `edgellm image`")
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("variants"), dict):
        raise BundleError(f"{path} has no variants")
    return doc
