"""The one door to llama.cpp: every place that opens a llama.cpp model goes through `open_llama`.

llama.cpp picks its CPU kernels for the host it runs on, and some of them crash on some CPUs (its AMX
matmul segfaults on Intel Xeon with AMX). A native crash takes the embedding app down, so before a model is
opened this module decides a `KernelPolicy` from two sources of data:

- `KNOWN_DEFECTS`: kernel paths known to be bad, matched against the CPU's flags and llama.cpp's own
  system info (what the loaded build was compiled with);
- the kernel probe's verdicts (edgellm.kernel_probe), cached per machine and llama.cpp build: for each
  quant family, whether the default configuration crashed or computed garbage in a child process.

The only switch llama.cpp exposes between its default CPU path and the plain one is the model parameter
`use_extra_bufts` (extra buffer types: AMX, KleidiAI and the repacked AVX2/AVX-512/NEON layouts). It is
turned off only for a model holding a tensor of an affected family, so a host without a defect runs
exactly llama.cpp's defaults. A family bad under both configurations is refused with a typed error.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Iterator

from ..errors import BackendUnavailableError, ModelFormatError
from ..native_lock import LLAMA_LOCK

log = logging.getLogger(__name__)

PROBE_CACHE_NAME = "kernel-probe.json"
SAFE_SWITCH = "extra buffer types off (use_extra_bufts=False)"


@dataclass(frozen=True)
class KnownDefect:
    name: str
    cpu_flags: tuple[str, ...]        # all must be in the host's ISA (devices.cpu names)
    build_features: tuple[str, ...]   # all must read "1" in llama_print_system_info()
    types: tuple[str, ...]            # GGML tensor types whose kernels are affected
    reason: str


# Rows are data; each names where the defect was seen.
KNOWN_DEFECTS: tuple[KnownDefect, ...] = (
    # Intel Xeon Sapphire Rapids and later, llama.cpp built with native flags (GGML_NATIVE): the AMX extra
    # buffer type takes every tensor with an AMX kernel and ggml_backend_amx_mul_mat segfaults (upstream
    # "segfault in ggml_backend_amx_mul_mat", closed without a fix). Types from amx/common.h's
    # qtype_has_amx_kernels; F16 and F32 run.
    KnownDefect("amx-mul-mat-segfault", ("amx_int8",), ("AMX_INT8",),
                ("Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"),
                "llama.cpp's AMX matmul (ggml_backend_amx_mul_mat) segfaults on CPUs with AMX"),
)


@dataclass(frozen=True)
class BuildInfo:
    version: str
    features: dict[str, str]   # llama_print_system_info(), e.g. {"AVX2": "1", "AMX_INT8": "1", "REPACK": "1"}
    key: str                   # identifies the native libraries (names, sizes, mtimes)


@dataclass(frozen=True)
class KernelPolicy:
    """How a model is opened: llama.cpp's defaults, or the safe switch with the reasons for it."""
    use_extra_bufts: bool = True
    reasons: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()     # families bad under both configurations

    @property
    def safe(self) -> bool:
        return not self.use_extra_bufts

    def describe(self) -> str:
        if self.use_extra_bufts:
            return "default CPU kernels"
        return f"safe CPU kernels: {SAFE_SWITCH} ({'; '.join(self.reasons)})"


# Outcomes that would take the host process down or mislead it. "ok", "error:..." (llama.cpp refused the
# model with an exception: a typed error for the user, no danger) and "unjudged" are not bad.
BAD_OUTCOMES = ("crash", "hang", "wrong")


@dataclass(frozen=True)
class Verdict:
    """One quant family under the default and the safe configuration: "ok", "crash:SIGSEGV", "wrong:0.93"."""
    family: str
    default: str
    safe: str
    rel_error: dict[str, float] = field(default_factory=dict)

    @property
    def default_bad(self) -> bool:
        return self.default.startswith(BAD_OUTCOMES)

    @property
    def safe_bad(self) -> bool:
        return self.safe.startswith(BAD_OUTCOMES)


# -- the native library ---------------------------------------------------------------------------------------
def llama_module() -> ModuleType:
    """llama_cpp, imported on first use so a missing native library is a typed error with an install hint."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailableError(
            f"llama-cpp-python is not importable ({exc})",
            "pip install llama-cpp-python (builds llama.cpp; needs a C++ compiler and cmake), "
            "or reinstall edgellm") from None
    _load_backends(llama_cpp)
    return llama_cpp


def lib_dir_of(lc: ModuleType) -> Path:
    """Where llama-cpp-python loaded its native libraries from (LLAMA_CPP_LIB_PATH overrides the package's)."""
    return Path(getattr(lc.llama_cpp, "_base_path", None) or Path(str(lc.__file__)).parent / "lib")


@functools.lru_cache(maxsize=1)
def _load_backends(lc: ModuleType) -> None:
    """A portable build (GGML_BACKEND_DL, one CPU variant per ISA level) keeps its backends in loadable
    modules beside libllama; llama-cpp-python does not load them, so do it once, before the first model."""
    lib_dir = lib_dir_of(lc)
    ggml = _loaded_ggml() or next((p for p in sorted(lib_dir.glob("libggml.*"))
                                   if p.suffix in (".so", ".dylib", ".dll")), None)
    if ggml is None:
        return
    # the backend modules sit beside libggml, or (pip's wheel layout for CMake's runtime targets) in the
    # site-packages bin/ folder
    homes = [d for d in (lib_dir, lib_dir.parent.parent / "bin") if any(d.glob("*ggml-cpu*"))]
    try:
        lib = ctypes.CDLL(str(ggml))
        lib.ggml_backend_reg_count.restype = ctypes.c_size_t
        if lib.ggml_backend_reg_count() == 0 and homes and hasattr(lib, "ggml_backend_load_all_from_path"):
            lib.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
            lib.ggml_backend_load_all_from_path(str(homes[0]).encode())
            log.info("llama.cpp: loaded %d dynamic backends from %s", lib.ggml_backend_reg_count(), homes[0])
    except (OSError, AttributeError) as exc:  # not a DL build, or symbols absent: nothing to load
        log.debug("llama.cpp backend loading skipped: %s", exc)


def _loaded_ggml() -> Path | None:
    """The libggml file libllama was linked against, as mapped in this process (Linux). A wheel cannot hold
    symlinks, so libggml.so and libggml.so.0 are separate copies: registering backends in the wrong one would
    leave llama.cpp with none."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if Path(path).name.startswith("libggml.so"):
            return Path(path)
    return None


def parse_system_info(text: str) -> dict[str, str]:
    """'CPU : SSE3 = 1 | AVX2 = 1 | AMX_INT8 = 1 | ...' -> {"SSE3": "1", ...} (last value wins)."""
    out: dict[str, str] = {}
    for part in text.replace("\n", "|").split("|"):
        key, sep, value = part.rpartition("=")
        if sep:
            out[key.split(":")[-1].strip()] = value.strip()
    return out


@functools.lru_cache(maxsize=1)
def build_info() -> BuildInfo:
    lc = llama_module()
    # system info reflects the CPU backend actually loaded (for a portable build: the variant picked here)
    features = parse_system_info(bytes(lc.llama_print_system_info()).decode("utf-8", "replace"))
    digest = hashlib.sha256(getattr(lc, "__version__", "?").encode())
    for lib in sorted(lib_dir_of(lc).glob("lib*")):  # a rebuild or reinstall changes size or mtime: probe anew
        if lib.is_file():
            st = lib.stat()
            digest.update(f"{lib.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return BuildInfo(getattr(lc, "__version__", "?"), features, digest.hexdigest()[:16])


@functools.lru_cache(maxsize=1)
def host_isa() -> frozenset[str]:
    from ..devices.cpu import detect_cpu

    return frozenset(detect_cpu().isa)


def matching_defects(isa: Iterable[str], features: dict[str, str],
                     table: tuple[KnownDefect, ...] = KNOWN_DEFECTS) -> list[KnownDefect]:
    """The known defects this CPU + build combination has."""
    flags = set(isa)
    return [d for d in table if set(d.cpu_flags) <= flags and all(features.get(f) == "1" for f in d.build_features)]


# -- probe verdicts (written by edgellm.kernel_probe, read here) -------------------------------------------------
def probe_cache_path() -> Path:
    from ..devices.bandwidth import cache_dir

    return cache_dir() / PROBE_CACHE_NAME


def probe_key() -> str:
    """Library build x CPU x machine: a new llama.cpp build or another CPU is probed anew."""
    from ..devices.bandwidth import machine_key

    return machine_key(f"llama.cpp:{build_info().key}:{','.join(sorted(host_isa()))}")


def read_verdicts(path: Path | None = None) -> dict[str, Verdict] | None:
    """The cached verdicts for this build and CPU, or None when this combination was never probed."""
    try:
        data = json.loads((path or probe_cache_path()).read_text())
        entry = data[probe_key()]
        return {fam: Verdict(fam, str(v["default"]), str(v["safe"]), dict(v.get("rel_error", {})))
                for fam, v in entry["families"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_verdicts(verdicts: Iterable[Verdict], path: Path | None = None) -> Path:
    target = path or probe_cache_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(target.read_text())
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    info = build_info()
    data[probe_key()] = {"llama_cpp": info.version, "build": info.key, "isa": sorted(host_isa()),
                         "families": {v.family: {"default": v.default, "safe": v.safe, "rel_error": v.rel_error}
                                      for v in verdicts}}
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


# -- the policy --------------------------------------------------------------------------------------------------
def gguf_tensor_types(path: Path) -> frozenset[str]:
    """GGML type names of a GGUF's tensors, from edgellm's own validated header reader (lazy strings: gguf-py's
    reader made a numpy array per vocabulary entry, 23 MB resident for a 49k vocabulary, before every load on a
    host with a known kernel defect)."""
    from ..converters.gguf_reading import open_gguf

    try:
        with open_gguf(path) as reader:
            return frozenset(t.tensor_type.name for t in reader.tensors)
    except ModelFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged header fails in many ways
        raise ModelFormatError(f"cannot read the tensor types of {path}: {exc}") from None


def decide_policy(types: Iterable[str], defects: Iterable[KnownDefect],
                  verdicts: dict[str, Verdict] | None) -> KernelPolicy:
    """Pure decision: the safe switch when a tensor type meets a known defect or a bad probe verdict."""
    present = set(types)
    reasons: list[str] = []
    refused: list[str] = []
    for d in defects:
        hit = sorted(present & set(d.types))
        if hit:
            reasons.append(f"known defect {d.name} for {', '.join(hit)}: {d.reason}")
    for fam, v in sorted((verdicts or {}).items()):
        if fam in present and v.default_bad:
            if v.safe_bad:
                refused.append(f"{fam} ({v.default} by default, {v.safe} with {SAFE_SWITCH})")
            else:
                reasons.append(f"kernel probe: {fam} {v.default} with default kernels on this CPU and build")
    return KernelPolicy(use_extra_bufts=not reasons and not refused, reasons=tuple(reasons), refused=tuple(refused))


def kernel_policy(path: Path) -> KernelPolicy:
    """The policy for opening `path` on this host: known defects plus cached probe verdicts."""
    defects = matching_defects(host_isa(), build_info().features)
    verdicts = read_verdicts()
    bad = {f for f, v in (verdicts or {}).items() if v.default_bad}
    if not defects and not bad:
        return KernelPolicy()  # nothing known to be bad here: llama.cpp's defaults, no need to read the file
    return decide_policy(gguf_tensor_types(path), defects, verdicts)


def host_policy_summary() -> str:
    """One line for `edgellm devices` and plans: what this host's llama.cpp build gets."""
    defects = matching_defects(host_isa(), build_info().features)
    verdicts = read_verdicts()
    parts = [f"known defect {d.name} ({', '.join(d.types)}): {SAFE_SWITCH} for models with these types"
             for d in defects]
    if verdicts is None:
        parts.append("kernel probe not run yet (runs on the first GGUF load; `edgellm devices --probe`)")
    else:
        bad = [f"{v.family}: {v.default}" for v in verdicts.values() if v.default_bad]
        parts.append(f"kernel probe: {len(verdicts) - len(bad)}/{len(verdicts)} families ok by default"
                     + (f"; safe switch for {', '.join(bad)}" if bad else ""))
    return "; ".join(parts)


# -- opening a model -------------------------------------------------------------------------------------------
_OPEN_LOCK = LLAMA_LOCK   # one lock with the quantizer (sdk/native_lock.py says why)


@contextlib.contextmanager
def _model_params(lc: ModuleType, policy: KernelPolicy) -> Iterator[None]:
    """llama-cpp-python builds its llama_model_params from llama_model_default_params() inside Llama(); it has
    no keyword for use_extra_bufts. While the lock is held, that function returns params with the policy
    applied; the original is restored before the lock is released."""
    if policy.use_extra_bufts:
        yield
        return
    low = lc.llama_cpp
    original = low.llama_model_default_params

    def patched() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = patched
    try:
        yield
    finally:
        low.llama_model_default_params = original


def open_llama(path: str | Path, *, policy: KernelPolicy | None = None, verbose: bool = False,
               **kwargs: Any) -> Any:
    """Open a GGUF with llama-cpp-python's `Llama`, under this host's kernel policy.

    kwargs go to `Llama` (n_ctx, n_threads, n_gpu_layers, logits_all, vocab_only, ...). Raises
    ModelFormatError when llama.cpp refuses the file and BackendUnavailableError when the model needs a
    kernel family this host cannot run safely."""
    lc = llama_module()
    p = Path(path)
    if policy is None:
        policy = KernelPolicy() if kwargs.get("vocab_only") else kernel_policy(p)
    if policy.refused:
        raise BackendUnavailableError(
            f"{p.name} needs llama.cpp kernels that crash or compute wrong results on this CPU: "
            + "; ".join(policy.refused),
            "convert to another quant type (edgellm convert --quant ...), or rebuild llama-cpp-python "
            "(make portable) and rerun `edgellm devices --probe`")
    # Safe opens hold the lock while the params function is replaced; a default open concurrent with one may get
    # the safe params too, which is harmless.
    with _OPEN_LOCK if policy.safe else contextlib.nullcontext(), _model_params(lc, policy):
        try:
            llm = lc.Llama(model_path=str(p), verbose=verbose, **kwargs)
        except ValueError as exc:  # llama-cpp-python raises ValueError when llama.cpp refuses the file
            raise ModelFormatError(f"llama.cpp could not load {p}: {exc}",
                                   "check the file with `edgellm info`; it may be truncated") from None
    applied = bool(getattr(getattr(llm, "model_params", None), "use_extra_bufts", True))
    if policy.safe and applied:  # llama-cpp-python changed how it builds params: never run unsafe
        llm.close()
        raise BackendUnavailableError(
            f"could not apply {SAFE_SWITCH} with this llama-cpp-python ({build_info().version})",
            "pin llama-cpp-python to a version edgellm supports (see pyproject.toml)")
    if policy.safe:
        _warn_once(policy)
    return llm


_WARNED: set[tuple[str, ...]] = set()


def _warn_once(policy: KernelPolicy) -> None:
    """Say once per process and reason why this host runs the safe kernels."""
    if policy.reasons not in _WARNED:
        _WARNED.add(policy.reasons)
        log.warning("llama.cpp: %s", policy.describe())


def set_threads(llm: Any, threads: int, threads_batch: int | None = None) -> None:
    """Change an open model's decode (and batch) thread counts in place: llama.cpp's llama_set_n_threads, the one
    ctypes call the thread sweep (sdk/planning.tune_threads) needs, kept here with the other native calls."""
    llama_module().llama_set_n_threads(llm.ctx, int(threads), int(threads_batch or threads))
