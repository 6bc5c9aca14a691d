"""Run llama.cpp's quantizer in-process (through llama-cpp-python) and collect what it reports.

llama.cpp writes its notes through its log callback; we install ours for the duration of the call,
keep the text, parse the fallback lines, and restore llama-cpp-python's callback afterwards.
"""
from __future__ import annotations

import ctypes
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BackendUnavailableError, QuantizationError
from ..native_lock import LLAMA_LOCK

log = logging.getLogger(__name__)

# e.g. "warning: blk.0.attn_k.weight - ncols 576 not divisible by 256 (required for type q4_K) -> falling back to q5_0"
_FALLBACK = re.compile(r"(?P<tensor>[\w.]+)\s+-\s+ncols\s+(?P<cols>\d+)\s+not divisible by\s+(?P<block>\d+)\s+"
                       r"\(required for type\s+(?P<wanted>\w+)\)\s*->\s*falling back to\s+(?P<got>\w+)")
_IMATRIX_USED = re.compile(r"have importance matrix data with (\d+) entries")
_IMATRIX_MISSING = re.compile(r"did not find weights for ([\w.]+)")
_LOCK = LLAMA_LOCK   # the loader's lock too: both swap llama.cpp process globals (sdk/native_lock.py)


@dataclass
class QuantizeReport:
    log_text: str
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    imatrix_entries: int = 0                               # importance-matrix entries llama.cpp received
    imatrix_missing: list[str] = field(default_factory=list)   # quantized tensors it found no entry for
    grid_blocks: int = 0              # K-quant super-blocks re-encoded to the exact values of the source grid


def _imatrix_array(imatrix: Mapping[str, np.ndarray], keep: list[object]) -> Any:
    """llama.cpp's `llama_model_imatrix_data[]`: {name, float*, size} per tensor, ended by a NULL name."""
    import llama_cpp

    entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
    for e, (name, values) in zip(entries, sorted(imatrix.items())):
        v = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        if not np.isfinite(v).all():
            raise QuantizationError(f"the importance matrix of {name} holds NaN or Inf values")
        keep.append(v)
        e.name, e.size = name.encode(), v.size
        e.data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    keep.append(entries)
    return entries


def _overrides_array(overrides: Sequence[tuple[str, str]], keep: list[object]) -> Any:
    """llama.cpp's `llama_model_tensor_override[]`: {regex, ggml_type} pairs, ended by a NULL pattern; the first
    pattern that matches a tensor name (std::regex_search) decides its type."""
    import gguf
    import llama_cpp

    entries = (llama_cpp.llama_model_tensor_override * (len(overrides) + 1))()
    for e, (pattern, type_name) in zip(entries, overrides):
        try:
            e.type = int(gguf.GGMLQuantizationType[type_name.upper()])
        except KeyError:
            raise QuantizationError(f"tensor type override {pattern!r}: unknown GGML type {type_name!r}") from None
        e.pattern = pattern.encode()
    keep.append(entries)
    return entries


def default_threads() -> int:
    """The cores this process may run on (affinity / cpuset), not the host's count: in a container limited to
    2 of 64 CPUs, 64 quantizer threads would only take turns."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):   # not on Linux
        return os.cpu_count() or 1


def quantize_gguf(src: Path, dst: Path, file_type: int, threads: int | None = None, *, pure: bool = False,
                  only_copy: bool = False, prune_layers: Sequence[int] = (),
                  imatrix: Mapping[str, np.ndarray] | None = None,
                  tensor_types: Sequence[tuple[str, str]] = (), restore_grid: bool = True) -> QuantizeReport:
    """Quantize `src` into `dst` with llama.cpp's quantizer (the only place edgellm calls it).

    pure: every weight matrix gets `file_type`'s main type (no mixes, no Q6_K output); only_copy: keep each
    tensor's type (with prune_layers: drop those blocks). imatrix: GGUF tensor name -> mean squared activation
    per input column (converters/imatrix.py), which llama.cpp weighs each column's rounding error by (every
    K-quant and IQ type uses it; IQ1/IQ2/IQ3_XXS and Q2_K_S need it). tensor_types: (regex, GGML type name)
    overrides of the recipe's per-tensor choice, first match wins (llama-quantize's --tensor-type).
    restore_grid: where `src` holds F32 values already on a Q4_K/Q6_K grid, keep them exactly
    (restore_grid_values)."""
    try:
        import llama_cpp
        from llama_cpp import _logger as lcp_logger
    except ImportError as exc:  # pragma: no cover - core dependency
        raise BackendUnavailableError(f"llama-cpp-python cannot be imported ({exc})",
                                      "pip install llama-cpp-python (it builds llama.cpp from source)") from None
    chunks: list[str] = []

    @llama_cpp.llama_log_callback
    def _collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        chunks.append(text.decode("utf-8", errors="replace"))

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type
    params.nthread = int(threads or default_threads())
    params.pure = bool(pure)
    params.only_copy = bool(only_copy)
    dropped = (ctypes.c_int * (len(prune_layers) + 1))(*sorted(set(prune_layers)), -1)
    if prune_layers:
        params.prune_layers = ctypes.cast(dropped, ctypes.POINTER(ctypes.c_int))
    keep: list[object] = []                     # the arrays llama.cpp reads must outlive the call
    if imatrix:
        params.imatrix = ctypes.cast(_imatrix_array(imatrix, keep), ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    if tensor_types:
        params.tt_overrides = ctypes.cast(_overrides_array(tensor_types, keep),
                                          ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    with _LOCK:
        llama_cpp.llama_log_set(_collect, ctypes.c_void_p(0))
        try:
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
        finally:
            llama_cpp.llama_log_set(lcp_logger.llama_log_callback, ctypes.c_void_p(0))
    text = "".join(chunks)
    log.debug("llama.cpp quantizer:\n%s", text)
    if rc != 0:
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise QuantizationError(f"llama.cpp's quantizer failed (code {rc}):\n{tail}")
    fallbacks = [{"tensor": m["tensor"], "wanted": m["wanted"].upper(), "type": m["got"].upper(),
                  "reason": f"{m['cols']} columns not divisible by {m['block']}"}
                 for m in _FALLBACK.finditer(text)]
    used = _IMATRIX_USED.search(text)
    report = QuantizeReport(text, fallbacks, int(used.group(1)) if used else 0, _IMATRIX_MISSING.findall(text))
    if restore_grid and not only_copy and not prune_layers:   # pruning renumbers blocks
        report.grid_blocks = restore_grid_values(src, dst)
    return report


_GRID_TYPES = ("Q4_K", "Q6_K")
_GRID_PROBE = 64          # super-blocks sampled per tensor to tell a grid source from ordinary float weights


def restore_grid_values(src: Path, dst: Path) -> int:
    """When `src`'s F32 weights already lie on a K-quant grid (a folder unpacked from a quantized GGUF),
    llama.cpp's scale search still lands on another grid in a few super-blocks; re-encode those so `dst`
    holds exactly the source's values (the original file's blocks, up to the sign of a scale). Tensors whose
    first super-blocks do not mostly match exactly are ordinary weights and left alone. Returns the number
    of super-blocks rewritten (in place)."""
    import gguf

    from .gguf_reading import open_gguf
    from .gguf_types import QK_K, restore_grid_blocks

    # headers first with the fast reader (0.2 s at 1B; gguf-py's reader walks the 128k-token vocabulary of both
    # files element by element, ~9 CPU s): nothing to do unless a K-quant tensor of `dst` has an F32 source
    with open_gguf(src) as s, open_gguf(dst) as d:
        f32 = {t.name: t.n_elements for t in s.tensors if t.tensor_type.name == "F32"}
        if not any(t.tensor_type.name in _GRID_TYPES and f32.get(t.name) == t.n_elements for t in d.tensors):
            return 0
    source = {t.name: t for t in gguf.GGUFReader(src).tensors if t.tensor_type == gguf.GGMLQuantizationType.F32}
    out = gguf.GGUFReader(dst, "r+")
    fixed = 0
    for t in out.tensors:
        if t.tensor_type.name not in _GRID_TYPES or t.name not in source or \
                int(source[t.name].n_elements) != int(t.n_elements):
            continue
        target = np.asarray(source[t.name].data, np.float32).reshape(-1, QK_K)   # [super-blocks, 256]
        blocks = t.data.reshape(target.shape[0], -1)                              # [super-blocks, bytes] memmap
        probe = min(_GRID_PROBE, target.shape[0])
        got = gguf.quants.dequantize(np.asarray(blocks[:probe]), t.tensor_type).reshape(probe, QK_K)
        if (got == target[:probe]).all(axis=1).mean() < 0.5:
            continue
        new, n = restore_grid_blocks(t.tensor_type.name, target, np.asarray(blocks))
        if n:
            blocks[:] = new
            fixed += n
    out.data.flush()
    if fixed:
        log.info("re-encoded %d K-quant super-blocks to the source's exact grid values", fixed)
    return fixed
