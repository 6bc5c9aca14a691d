"""Run llama.cpp's quantizer in-process (through llama-cpp-python) and collect what it reports.

llama.cpp writes its notes through its log callback; we install ours for the duration of the call,
keep the text, parse the fallback lines, and restore llama-cpp-python's callback afterwards.
"""
from __future__ import annotations

import ctypes
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import BackendUnavailableError, QuantizationError

log = logging.getLogger(__name__)

# e.g. "warning: blk.0.attn_k.weight - ncols 576 not divisible by 256 (required for type q4_K) -> falling back to q5_0"
_FALLBACK = re.compile(r"(?P<tensor>[\w.]+)\s+-\s+ncols\s+(?P<cols>\d+)\s+not divisible by\s+(?P<block>\d+)\s+"
                       r"\(required for type\s+(?P<wanted>\w+)\)\s*->\s*falling back to\s+(?P<got>\w+)")
_LOCK = threading.Lock()


@dataclass
class QuantizeReport:
    log_text: str
    fallbacks: list[dict[str, str]] = field(default_factory=list)


def quantize_gguf(src: Path, dst: Path, file_type: int, threads: int | None = None, *, pure: bool = False,
                  only_copy: bool = False, prune_layers: Sequence[int] = ()) -> QuantizeReport:
    """Quantize `src` into `dst` with llama.cpp's quantizer (the only place edgellm calls it).

    pure: every weight matrix gets `file_type`'s main type (no mixes, no Q6_K output); only_copy: keep each
    tensor's type (with prune_layers: drop those blocks)."""
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
    params.nthread = int(threads or os.cpu_count() or 1)
    params.pure = bool(pure)
    params.only_copy = bool(only_copy)
    dropped = (ctypes.c_int * (len(prune_layers) + 1))(*sorted(set(prune_layers)), -1)
    if prune_layers:
        params.prune_layers = ctypes.cast(dropped, ctypes.POINTER(ctypes.c_int))
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
    return QuantizeReport(text, fallbacks)
