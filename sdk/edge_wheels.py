"""Wheels for an edge target: edgellm's own, its dependencies for the target's platform and Python, and a
llama-cpp-python wheel assembled from its pure-Python layer plus a cross-built llama.cpp (PyPI has none for
aarch64). Everything here runs on the build host; the target installs the result with no network.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import BundleError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Platform:
    """A target platform: what pip is told to download for it and the tag an assembled native wheel gets."""
    name: str
    machine: str                      # platform.machine() on the target
    pip_platforms: tuple[str, ...]    # --platform values, most specific first
    wheel_tag: str                    # tag of wheels assembled here (honest: not claimed manylinux)


def _manylinux(arch: str, glibc_minor: int) -> tuple[str, ...]:
    """Every manylinux tag a glibc 2.<glibc_minor> target accepts, newest first: pip does not expand
    `--platform manylinux_2_28_x` to the older tags itself, and many wheels (tokenizers) are manylinux_2_17."""
    return tuple(f"manylinux_2_{m}_{arch}" for m in range(glibc_minor, 16, -1)) + (f"manylinux2014_{arch}",)


# Registry as data. glibc 2.28: Debian 10+; Raspberry Pi OS / Debian bookworm have 2.36.
PLATFORMS: dict[str, Platform] = {
    "linux-aarch64": Platform("linux-aarch64", "aarch64", _manylinux("aarch64", 28) + ("linux_aarch64",),
                              "linux_aarch64"),
    "linux-x86_64": Platform("linux-x86_64", "x86_64", _manylinux("x86_64", 28) + ("linux_x86_64",), "linux_x86_64"),
}

# Files of edgellm's source tree a wheel is built from (copied to a temp dir: the build never writes into the repo).
_PROJECT_PARTS = ("pyproject.toml", "README.md", "sdk", "converters", "runtimes", "devices")
_LIB_NAME = re.compile(r"lib[\w.+-]*?\.so(\.\d+)?")
_WHEEL_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)-.*\.whl$")


def get_platform(name: str) -> Platform:
    if name not in PLATFORMS:
        raise BundleError(f"unknown platform {name!r}", f"choose one of: {', '.join(PLATFORMS)}")
    return PLATFORMS[name]


def wheel_name_version(path: Path) -> tuple[str, str]:
    """('numpy', '2.4.6') from numpy-2.4.6-cp311-...whl; names normalised as pip compares them."""
    m = _WHEEL_NAME.match(path.name)
    if m is None:
        raise BundleError(f"{path.name} is not a wheel file name")
    return re.sub(r"[-_.]+", "-", m["name"]).lower(), m["version"]


def _run(cmd: Sequence[str], what: str, hint: str) -> str:
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        raise BundleError(f"{what} failed (exit {proc.returncode}): " + " | ".join(tail), hint)
    return proc.stdout


def project_root() -> Path:
    """edgellm's source tree (where pyproject.toml is); an installed, non-editable edgellm has none."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise BundleError(f"no edgellm source tree above {Path(__file__).parent} (pyproject.toml)",
                          "pass project=PATH to a checkout of edgellm")
    return root


def build_own_wheel(dest: Path, project: Path | None = None) -> Path:
    """edgellm's wheel (pure Python: py3-none-any), built from a copy of the source tree."""
    root = project or project_root()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgellm-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for part in _PROJECT_PARTS:
            p = root / part
            if p.is_dir():
                shutil.copytree(p, src / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif p.is_file():
                shutil.copy2(p, src / part)
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dest), str(src)],
             "building edgellm's wheel", "pip needs setuptools (from PyPI or a local index) to build it")
    wheels = sorted(dest.glob("edgellm-*.whl"))
    if not wheels:
        raise BundleError(f"pip wrote no edgellm wheel into {dest}")
    return wheels[-1]


# -- llama-cpp-python for a platform PyPI has no wheel for -------------------------------------------------------
def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def llama_python_sources() -> tuple[str, Path]:
    """(version, folder) of the llama_cpp package installed here: its Python layer is platform-independent."""
    try:
        version = importlib.metadata.version("llama-cpp-python")
        spec = importlib.util.find_spec("llama_cpp")
    except (importlib.metadata.PackageNotFoundError, ImportError):
        spec = None
    if spec is None or spec.origin is None:
        raise BundleError("llama-cpp-python is not installed on the build host",
                          "pip install llama-cpp-python (its Python files go into the target's wheel)")
    return version, Path(spec.origin).parent


def assemble_llama_wheel(lib_dir: Path, dest: Path, platform: Platform,
                         sources: tuple[str, Path] | None = None) -> Path:
    """llama_cpp_python-<version>-py3-none-<tag>.whl: the installed llama_cpp package's Python files (no host
    libraries) with the target's cross-built libraries in llama_cpp/lib, where llama-cpp-python looks first
    (LLAMA_CPP_LIB_PATH still overrides it on the target)."""
    version, pkg = sources or llama_python_sources()
    # libllama.so (what llama-cpp-python opens) and the .so.N names DT_NEEDED asks for; not the .so.N.M.K copies
    libs = sorted(p for p in lib_dir.glob("lib*.so*") if p.is_file() and _LIB_NAME.fullmatch(p.name))
    if not any(p.name == "libllama.so" for p in libs):
        raise BundleError(f"{lib_dir} holds no libllama.so",
                          "cross-build llama.cpp first: samples/edge_target/cross_build_llama.sh")
    files: dict[str, bytes] = {}
    for p in sorted(pkg.rglob("*")):
        rel = p.relative_to(pkg)
        if p.is_file() and rel.parts[0] not in ("lib", "__pycache__") and "__pycache__" not in rel.parts \
                and p.suffix in (".py", ".typed", ".json", ".jinja"):
            files[f"llama_cpp/{rel.as_posix()}"] = p.read_bytes()
    for lib in libs:
        files[f"llama_cpp/lib/{lib.name}"] = lib.read_bytes()
    info = f"llama_cpp_python-{version}.dist-info"
    files[f"{info}/METADATA"] = (
        "Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: " + version + "\n"
        "Summary: llama-cpp-python's Python layer with a llama.cpp cross-built by edgellm for " + platform.name
        + "\nLicense: MIT\nRequires-Dist: typing-extensions>=4.5.0\nRequires-Dist: numpy>=1.20.0\n"
        "Requires-Dist: diskcache>=5.6.1\nRequires-Dist: jinja2>=2.11.3\n").encode()
    files[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: edgellm\nRoot-Is-Purelib: false\n"
                              f"Tag: py3-none-{platform.wheel_tag}\n").encode()
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join(record + [f"{info}/RECORD,,"]) + "\n").encode()
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"llama_cpp_python-{version}-py3-none-{platform.wheel_tag}.whl"
    tmp = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zi = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = (0o755 if name.endswith((".so",)) or ".so." in name else 0o644) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)
    tmp.replace(out)
    return out


# -- dependencies ----------------------------------------------------------------------------------------------------
def pip_platform_args(platform: Platform, python: str) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for tag in platform.pip_platforms:
        args += ["--platform", tag]
    return args


def download_wheels(requirements: Sequence[str], dest: Path, platform: Platform, python: str,
                    local_wheels: Sequence[Path] = ()) -> list[Path]:
    """`pip download` every requirement and its dependencies as wheels for the target. Local wheel files
    (edgellm's, the assembled llama-cpp-python) are passed by path so pip resolves their dependencies but never
    looks them up on an index."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest),
           *pip_platform_args(platform, python), *[str(p) for p in local_wheels], *requirements]
    _run(cmd, f"downloading wheels for {platform.name} / Python {python}",
         "check the network (PyPI) and that every dependency publishes a wheel for this platform; "
         "or pass a prefetched wheelhouse")
    for local in local_wheels:  # pip copies them into dest: a cache must not keep a stale build of either
        if local.parent.resolve() != dest.resolve():
            (dest / local.name).unlink(missing_ok=True)
    return sorted(dest.glob("*.whl"))


def verify_wheelhouse(wheelhouse: Path, requirements: Sequence[str], platform: Platform, python: str) -> None:
    """Resolve the install exactly as the target will, with no index (`pip install --dry-run --no-index`): a
    wheel missing for this platform fails here, on the build host, not on the device."""
    with tempfile.TemporaryDirectory(prefix="edgellm-verify-") as tmp:
        _run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-index", "--ignore-installed",
              "--find-links", str(wheelhouse), "--target", tmp, *pip_platform_args(platform, python),
              *requirements],
             "resolving the wheelhouse offline", "a dependency's wheel is missing for the target; rebuild the image")
